"""Cheaper variants side by side: batch-1 speed on one thread and quality against fp32.

    python benchmarks/cost_latency.py --run reports/bench-vae --run reports/bench-ddpm
    python benchmarks/cost_latency.py              # fresh untrained default VAE and DDPM: speed only

For each run (trained with `genlab run --only train [-p model=ddpm] --name ...`) the variants of
`05_cost_latency` are built with its default settings (unless the run already has them;
`--rebuild` forces it), then, in this one process:

- latency at batch 1 on one thread (the edge profile), round-robin over the variants so that the
  machine's load hits all alike; speed-up = fp32's median / the variant's median;
- quality: the evaluation's metric row (FD with its 95% interval at n = |holdout_a|) per variant;
- the best variant: the fastest measured one whose FD interval overlaps fp32's;
- DDPM: the distilled students (4 and 8 steps) against DDIM-50 (the fp32 reference's sampler):
  speed-up and FD ratio.

Prints one JSON object. Goals: best variant ≥ 3× fp32 at batch 1 with quality inside fp32's
interval; a 4–8-step student ≥ 6× DDIM-50 at FD ratio ≤ 1.5.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from genlab import data, params, reproducibility
from genlab.cost_latency import measure as M
from genlab.cost_latency.variants import available_variants, build_variants, load_variant
from genlab.evaluate import evaluation as E
from genlab.models import build_model, load_model
from genlab.ops.runs import RunFolder


def fresh_run(kind: str, folder: str) -> str:
    """A run folder with the digits spec and an untrained default model (speed only)."""
    ds = data.load_dataset("digits")
    spec = data.DataSpec.build(ds, seed=0)
    run = RunFolder(f"{folder}/{kind}")
    spec.save(run.data_spec)
    torch.manual_seed(0)
    model = build_model(kind, list(ds.data_shape))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, run.model_ckpt)
    return str(run.path)


def bench_run(run_dir: str, *, rebuild: bool, reps: int, budget_s: float, quality: bool) -> dict:
    p = params.typed("cost_latency", run_dir=run_dir)
    run = RunFolder(run_dir)
    model = load_model(run.model_ckpt)
    ds = data.load_recorded(data.DataSpec.load(run.data_spec))
    spec = data.DataSpec.load(run.data_spec)
    out: dict = {"run": run_dir, "model_kind": model.model_kind}
    if rebuild or "fp32" not in available_variants(run):
        mem = spec.pool("members")
        t0 = time.perf_counter()
        y = torch.from_numpy(ds.y[mem]) if model.n_classes else None
        out["build_status"] = build_variants(run, model, torch.from_numpy(ds.x[mem]), y, seed=p.seed,
                                             distill_iters=p.distill_iters, start_steps=p.start_steps,
                                             decoder_iters=p.decoder_iters,
                                             student_width_ratio=p.student_width_ratio)
        out["build_s"] = round(time.perf_counter() - t0, 1)
    variants = [load_variant(run, n) for n in available_variants(run)]
    lat = M.latencies(variants, 1, reps=reps, budget_s=budget_s)
    ref_ms = lat["fp32"]["p50_ms"]
    rows = {v.variant: {"p50_ms_1_thread": round(lat[v.variant]["p50_ms"], 3), "reps": lat[v.variant]["reps"],
                        "speedup_at_batch1": round(ref_ms / lat[v.variant]["p50_ms"], 2)} for v in variants}
    if quality:
        ep = params.typed("evaluate", run_dir=run_dir, seed=p.seed)
        scorer = M.QualityScorer(E.Context(run, ds, spec, model, "variants"), ep)
        floor = scorer.floor()
        out["fd_real_vs_real"] = [round(floor[k], 3) for k in ("fd", "fd_ci_low", "fd_ci_high")]
        scored = {v.variant: scorer.score_variant(v, p.seed) for v in variants}
        ref = scored["fp32"]
        for name, r in scored.items():
            rows[name].update(fd=[round(r[k], 3) for k in ("fd", "fd_ci_low", "fd_ci_high")],
                              fd_ratio_to_fp32=round(r["fd"] / ref["fd"], 3),
                              within_fp32_ci=M.overlaps(r, ref, "fd"))
        eligible = [n for n in rows if rows[n]["within_fp32_ci"]]
        best = max(eligible, key=lambda n: rows[n]["speedup_at_batch1"])
        out["best_within_ci"] = {"variant": best, **rows[best]}
    out["variants"] = rows
    if model.model_kind == "ddpm":
        out["students_vs_ddim50"] = {n: {k: rows[n].get(k) for k in ("speedup_at_batch1", "fd_ratio_to_fp32")}
                                     for n in ("student-8", "student-4") if n in rows}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="a trained run folder (repeat)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the variants even if present")
    ap.add_argument("--reps", type=int, default=40, help="latency rounds at batch 1")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of latency rounds per run")
    args = ap.parse_args(argv)
    reproducibility.configure()
    torch.set_num_threads(1)
    result: dict = {"machine": platform.processor() or platform.machine(), "threads": 1, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.run or [fresh_run("vae", tmp), fresh_run("ddpm", tmp)]
        for run_dir in runs:
            result["runs"].append(bench_run(run_dir, rebuild=args.rebuild or not args.run, reps=args.reps,
                                            budget_s=args.budget, quality=bool(args.run)))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
