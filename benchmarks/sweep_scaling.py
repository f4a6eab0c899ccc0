"""Sweep scaling: 8 short runs as 2 workers × 1 thread vs 1 worker × 2 threads, on Dask.

Also reports the sweep's overhead per run beyond the notebooks' own execution time (cluster
start, scheduling, HTML export, comparison page) and the time of a second invocation of the
finished sweep (every run skipped by key).

    python benchmarks/sweep_scaling.py [--runs 8] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from genlab.ops.sweep import load_sweep, run_sweep


def timed_sweep(spec: Path, reports: Path, workers: int, threads: int) -> dict:
    started = time.perf_counter()
    sweep = load_sweep(spec, reports)
    rows = run_sweep(sweep, workers=workers, threads=threads, echo=lambda *_: None)
    wall = time.perf_counter() - started
    notebooks = 0.0
    for run in sweep.runs:
        timings = json.loads((run.plan.final_dir / "timings.json").read_text())
        notebooks += sum(v["execute_s"] for k, v in timings.items() if isinstance(v, dict))
    return {"wall_s": round(wall, 2), "ok": sum(r["status"] == "ok" for r in rows),
            "notebook_s_total": round(notebooks, 2),
            "overhead_s_per_run": round((wall * workers - notebooks) / len(rows), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "scaling.yaml"
        spec.write_text(json.dumps({
            "name": "scaling", "only": ["train"],
            "base": {"dataset": "toy", "max_epochs": args.epochs, "width": 64},
            "grid": {"seed": list(range(args.runs))}}))
        result = {
            "two_workers_one_thread": timed_sweep(spec, Path(tmp) / "a", workers=2, threads=1),
            "one_worker_two_threads": timed_sweep(spec, Path(tmp) / "b", workers=1, threads=2),
        }
        started = time.perf_counter()
        run_sweep(load_sweep(spec, Path(tmp) / "a"), workers=2, echo=lambda *_: None)
        result["resume_second_invocation_s"] = round(time.perf_counter() - started, 2)
    result["ratio_1x2_over_2x1"] = round(result["one_worker_two_threads"]["wall_s"]
                                         / result["two_workers_one_thread"]["wall_s"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
