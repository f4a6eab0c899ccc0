"""03_privacy_audit with its defaults: wall time of the audit itself (``run_audit``, what the
notebook's one heavy cell runs) on a trained run, against its 2-minute target on 2 cores
(default VAE, four LiRA shadows).

Timings on shared machines swing with load: a fixed reference workload (numpy matmuls)
runs interleaved with the audit, repeated, and the ratio of medians is reported beside the raw
medians. ``--lira-shadows`` overrides the default number of LiRA shadows (0: the audit without
them, to measure what the shadows cost). With ``--timings`` the whole notebook's figure from a pipeline run is added (kernel start,
every cell, HTML export), e.g. after
``.venv/bin/genlab run --only train,privacy_audit --name privtime``. Prints one JSON object.

    .venv/bin/python benchmarks/privacy_audit_speed.py [--run-dir reports/interactive] [--repeats 3]
        [--timings reports/privtime/timings.json]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from genlab import data, models, params, reproducibility
from genlab.privacy_audit import audit as privacy_audit
from genlab.privacy_audit.lira import recipe_from_run
from genlab.train import training
from genlab.ops.runs import RunFolder

TARGET_S = 120.0


def reference(rng: np.random.Generator) -> float:
    a = rng.normal(size=(600, 600))
    t = time.perf_counter()
    for _ in range(20):
        a = np.tanh(a @ a / 600.0)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default="reports/interactive")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lira-shadows", type=int, default=None)
    parser.add_argument("--timings", help="a pipeline run's timings.json (03_privacy_audit entry)")
    args = parser.parse_args()
    reproducibility.configure()  # the notebook's threads and kernels (open_run does the same)
    training.quiet_lightning()
    run = RunFolder(args.run_dir, create=False)
    model = models.load_model(run.require(run.model_ckpt, "train"))
    spec = data.DataSpec.load(run.require(run.data_spec, "train"))
    ds = data.load_recorded(spec)
    canaries = privacy_audit.load_canaries(run.artifacts)
    p = params.PrivacyAuditParams(run_dir=args.run_dir)
    if args.lira_shadows is not None:
        p = p.replace(lira_shadows=args.lira_shadows)
    rng = np.random.default_rng(0)
    audit_s, ref_s, verdicts = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:  # the audit writes nothing into the run
        for _ in range(args.repeats):
            ref_s.append(reference(rng))
            t = time.perf_counter()
            a = privacy_audit.run_audit(model, ds, spec, Path(tmp), p, canaries=canaries,
                                        recipe=recipe_from_run(run.path))
            audit_s.append(time.perf_counter() - t)
            verdicts.add(a.numbers["privacy_verdict"])
    out = {"run_dir": args.run_dir, "repeats": args.repeats, "n_generated": p.n_generated,
           "lira_shadows": p.lira_shadows,
           "n_scored": a.numbers["n_scored_members"], "verdicts": sorted(verdicts),
           "run_audit_median_s": statistics.median(audit_s), "run_audit_s": audit_s,
           "reference_median_s": statistics.median(ref_s),
           "audit_over_reference": statistics.median(audit_s) / statistics.median(ref_s),
           "target_s": TARGET_S}
    if args.timings:
        nb = json.loads(Path(args.timings).read_text())["03_privacy_audit"]
        out["notebook_execute_s"] = nb["execute_s"]
        out["notebook_with_export_s"] = nb["execute_s"] + nb.get("html_export_s", 0.0)
    out["under_target"] = max(out.get("notebook_with_export_s", 0.0), out["run_audit_median_s"]) < TARGET_S
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
