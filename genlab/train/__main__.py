"""Train outside a notebook: the training of `01_train.ipynb` as a script, for Lightning
strategies a notebook kernel cannot run (`ddp` with several processes, several nodes).

    python -m genlab.train --name ddp-a --strategy ddp --devices 2 -p max_epochs=50
    torchrun / srun ... python -m genlab.train --name big --strategy ddp --devices 4 --num-nodes 2

It takes the training notebook's parameters (`-p key=value`, `-f params.yaml`; checked the same
way) and writes the same run folder — `artifacts/` (data spec, checkpoints, model.ckpt) and the
headline `01_train.json` — so `genlab run --only evaluate,... --name <name>` continues from it.
The folder is built in `reports/.staging/` and renamed into place only by rank 0 after training
succeeded: a failed run never damages an earlier good one. Every rank executes this module (the
DDP launcher starts the other ranks by re-running the command line); only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from genlab import data_quality, params as P
from genlab.ops.cli import collect_parameters
from genlab.ops.pipeline import discard_after_disk_full, is_disk_full
from genlab.ops.runs import STAGING_ENV, project_root, replace_dir


def _rank() -> int:
    # set by Lightning's launcher for the ranks it starts, and by torchrun/SLURM for all ranks
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def train(p: P.TrainParams, final: Path, num_nodes: int) -> dict:
    """The notebook's steps, in order; returns the headline numbers (rank 0) or {}."""
    from genlab import data
    from genlab.train import notebook as experiment
    from genlab.train import training
    from genlab.ops.reports import provenance, write_headline
    from genlab.ops.runs import RunFolder, resolve_input
    from genlab.reproducibility import configure

    configure()  # threads and numeric switches, before any tensor op
    training.quiet_lightning()
    run = RunFolder(final)
    ds = data.load_dataset(resolve_input(p.dataset))
    data_quality.assert_quality(data_quality.quality_checks(ds))
    experiment.check_params(p, ds)
    spec = data.DataSpec.build(ds, seed=p.seed, val_frac=p.val_frac,
                               holdout_a_frac=p.holdout_a_frac,
                               holdout_b_frac=p.holdout_b_frac, n_train=p.n_train)
    if _rank() == 0:
        spec.save(run.data_spec)
    training.seed_everything(p.seed)
    model = experiment.model_from_params(p, ds.data_shape, ds.n_classes)
    if p.init_from:
        training.init_from_checkpoint(model, resolve_input(p.init_from))
    dm = experiment.datamodule(ds, spec, run, p)
    result, dp_record = experiment.train(model, dm, run, p, num_nodes=num_nodes,
                                         resume_from=resolve_input(p.resume_from))
    if _rank() != 0:
        return {}
    experiment.publish_model(result, run, p)
    numbers = experiment.train_headline(result, spec, dp_record, dm)
    prov = provenance(p, dataset=ds.name, data_fingerprint=spec.fingerprint)
    write_headline(run, "01_train", numbers, provenance=prov)
    return numbers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genlab.train", description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="run folder name under the reports folder")
    ap.add_argument("--reports-dir", type=Path, help="default: <project>/reports")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-f", "--file", action="append", default=[], metavar="PARAMS.YAML")
    ap.add_argument("--strategy", help="Lightning strategy (ddp, ...); same as -p strategy=")
    ap.add_argument("--devices", help="devices per node; same as -p devices=")
    ap.add_argument("--num-nodes", type=int, default=1)
    args = ap.parse_args(argv)

    try:
        values = collect_parameters(args.file, args.param, ["train"])
        if args.strategy:
            values["strategy"] = args.strategy
        if args.devices:
            values["devices"] = int(args.devices) if args.devices.isdigit() else args.devices
        if "run_dir" in values:
            raise P.ParameterError("parameter 'run_dir' is set from --name (and --reports-dir)")
        if args.num_nodes < 1:
            raise P.ParameterError(f"--num-nodes: expected an int ≥ 1, got {args.num_nodes}")
        p = P.validate("train", {**values, "run_dir": "."}, partial=True)
        P.check_train(p)
    except P.ParameterError as exc:
        print(f"genlab.train: error: {exc}", file=sys.stderr)
        return 2
    reports = (args.reports_dir or project_root() / "reports").resolve()
    final = reports / args.name
    root = project_root()
    p = P.TrainParams(**{**p, "run_dir": os.path.relpath(final, root) if final.is_relative_to(root)
                         else str(final)})
    staging = reports / ".staging" / f"{args.name}.train"
    owns_staging = _rank() == 0 and STAGING_ENV not in os.environ
    if owns_staging:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        os.environ[STAGING_ENV] = json.dumps({str(final): str(staging)})  # ranks inherit it
    try:
        numbers = train(p, final, args.num_nodes)
    except Exception as exc:
        print(f"genlab.train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if owns_staging and is_disk_full(exc):  # partial checkpoints would keep the disk full
            print(f"genlab.train: {discard_after_disk_full(staging, None, args.name)}",
                  file=sys.stderr)
        return 1
    if _rank() == 0:
        replace_dir(staging, final)
        print(f"run folder: {final} (final_val_loss {numbers['final_val_loss']:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
