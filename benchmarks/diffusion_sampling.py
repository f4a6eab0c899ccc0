"""DDPM sampling: throughput and sample quality of 1000-step ancestral sampling vs DDIM in 50 and 20 steps.

    python benchmarks/diffusion_sampling.py [--ckpt path/to/ddpm.ckpt] [--n 100] [--threads 2]
    python benchmarks/diffusion_sampling.py --run reports/ddpm     # + FD of each sampler

Without ``--ckpt``/``--run`` a fresh default DDPM for digits (1×8×8) is built (throughput does
not depend on the weights). With ``--run`` (a run folder whose model is a DDPM) the samples of
each setting are also scored: FD against ``holdout_b`` in the run's classifier feature space
(02_evaluate's extractor) at n = |holdout_a|, beside the real-vs-real floor (holdout_a vs
holdout_b). Prints one JSON object: samples/s per method, the speed-up of each DDIM setting over
ancestral sampling, and the FDs. Each setting runs once after a short warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from genlab import params
from genlab.evaluate import evaluation
from genlab.evaluate import metrics
from genlab.models import build_model, load_model

SETTINGS = (("ddpm", None), ("ddim", 50), ("ddim", 20))


class FDScorer:
    """FD of samples vs a run's holdout_b in its classifier feature space (as 02_evaluate)."""

    def __init__(self, run_dir: str):
        p = params.EvaluateParams(run_dir=run_dir)
        self.ctx = evaluation.load_context(p)
        if self.ctx.model.model_kind != "ddpm":
            raise SystemExit(f"--run must hold a DDPM, got model_kind={self.ctx.model.model_kind!r}")
        self.ext = evaluation.make_extractor(self.ctx, p)
        ds, spec = self.ctx.ds, self.ctx.spec
        self.n = len(spec.pool("holdout_a"))
        self.ref = self.ext.features(ds.x[spec.pool("holdout_b")])
        self.floor = self.fd(ds.x[spec.pool("holdout_a")])

    def fd(self, x) -> float:
        return metrics.frechet_distance(self.ext.features(x), self.ref)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="a DDPM checkpoint (default: a fresh digits-shaped DDPM)")
    ap.add_argument("--run", default=None, help="a run folder with a DDPM: also FD per sampler")
    ap.add_argument("--n", type=int, default=100, help="samples per setting (one batch)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scorer = None
    if args.run:
        scorer = FDScorer(args.run)
        model, args.n = scorer.ctx.model, scorer.n
    elif args.ckpt:
        model = load_model(args.ckpt)
    else:
        torch.manual_seed(0)
        model = build_model("ddpm", [1, 8, 8]).eval()
    if model.model_kind != "ddpm":
        raise SystemExit(f"--ckpt must be a DDPM checkpoint, got model_kind={model.model_kind!r}")
    model = model.to(args.device)
    model.sample(min(args.n, 8), seed=0, method="ddim", steps=5)  # warm-up
    rows = []
    for method, steps in SETTINGS:
        n_steps = len(model.sample_timesteps(method, steps))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = model.sample(args.n, seed=0, method=method, steps=steps)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"method": method, "steps": n_steps, "seconds": round(dt, 3),
                     "samples_per_s": round(args.n / dt, 2)})
        if scorer is not None:
            rows[-1]["fd"] = round(scorer.fd(x.cpu().numpy()), 3)
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup_vs_ancestral"] = round(r["samples_per_s"] / base, 1)
    out = {
        "model": {k: v for k, v in dict(model.hparams).items() if k != "model_kind"},
        "params": sum(p.numel() for p in model.net.parameters()),
        "ckpt": args.ckpt,
        "run": args.run,
        "fd_real_vs_real": None if scorer is None else round(scorer.floor, 3),
        "n": args.n,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": rows,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
