"""Online LiRA with replica shadows against the plain loss attack, over seeds.

For each target setting and seed s: the data pools of seed s, a VAE trained through 01_train's
own path (``genlab.train.notebook.train``) with seed s, then the audit (``run_audit``, seed s)
with ``--shadows`` replica shadows (the target's recipe: its data size, batch size and epochs).
Prints, per setting, the evaluation-half AUC of LiRA and of the loss (ELBO) attack, mean ± sd
over the seeds, the per-seed values and LiRA's DeLong CI at seed 0's sample size, and the
seconds per seed (the shadows dominate). Settings:

- ``default``: the default VAE (2×256 MLP, 100 epochs, batch 64) on all 896 members;
- ``overfit``: a high-capacity VAE (2×512) on 128 members, batch 128 (one step an epoch),
  lr 3e-3, ``--overfit-epochs`` epochs: a model that memorises its few records.

    PYTHONPATH=. .venv/bin/python benchmarks/lira_vs_loss.py [--seeds 5] [--shadows 4]
        [--settings default,overfit] [--overfit-epochs 300]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from genlab import data, params, reproducibility
from genlab.ops.runs import RunFolder
from genlab.privacy_audit.audit import run_audit
from genlab.privacy_audit.lira import ShadowRecipe
from genlab.train import notebook as experiment
from genlab.train import training


def settings(overfit_epochs: int) -> dict[str, dict]:
    return {"default": {},
            "overfit": {"n_train": 128, "width": 512, "lr": 3e-3, "batch_size": 128,
                        "max_epochs": overfit_epochs}}


def one_seed(ds, train_kw: dict, seed: int, shadows: int, n_generated: int) -> dict:
    spec = data.DataSpec.build(ds, seed=seed, n_train=train_kw.get("n_train"))
    p = params.typed("train", {**train_kw, "seed": seed})
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(Path(tmp) / "run")
        training.seed_everything(seed)
        model = experiment.model_from_params(p, ds.data_shape)
        t0 = time.perf_counter()
        experiment.train(model, experiment.datamodule(ds, spec, run, p), run, p)
        t1 = time.perf_counter()
        audit = run_audit(model.eval(), ds, spec, run.artifacts,
                          params.PrivacyAuditParams(seed=seed, n_generated=n_generated,
                                                    lira_shadows=shadows),
                          recipe=ShadowRecipe(epochs=p.max_epochs, batch_size=p.batch_size))
        t2 = time.perf_counter()
    n = audit.numbers
    return {"seed": seed, "lira": n["mia_auc_lira"], "lira_ci": [n["mia_auc_lira_ci_low"],
                                                                 n["mia_auc_lira_ci_high"]],
            "loss": n["mia_auc_elbo"], "loss_ci": [n["mia_auc_elbo_ci_low"], n["mia_auc_elbo_ci_high"]],
            "n_eval": n["n_eval_members"], "train_s": round(t1 - t0, 1), "audit_s": round(t2 - t1, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--settings", default="default,overfit")
    ap.add_argument("--overfit-epochs", type=int, default=300)
    ap.add_argument("--n-generated", type=int, default=500)
    args = ap.parse_args()
    reproducibility.configure()
    training.quiet_lightning()
    ds = data.load_dataset("digits")
    table = settings(args.overfit_epochs)
    for name in args.settings.split(","):
        runs = [one_seed(ds, table[name], s, args.shadows, args.n_generated) for s in range(args.seeds)]
        for r in runs:
            print(json.dumps({"setting": name, **r}), flush=True)
        summary = {"setting": name, "train": table[name], "seeds": args.seeds, "shadows": args.shadows}
        for k in ("lira", "loss"):
            v = [r[k] for r in runs]
            summary[f"{k}_auc_mean"] = round(statistics.mean(v), 4)
            summary[f"{k}_auc_sd"] = round(statistics.stdev(v), 4) if len(v) > 1 else None
            summary[f"{k}_auc_min"] = round(min(v), 4)
        summary["lira_minus_loss_mean"] = round(statistics.mean(r["lira"] - r["loss"] for r in runs), 4)
        summary["seconds_per_seed"] = round(statistics.mean(r["train_s"] + r["audit_s"] for r in runs), 1)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
