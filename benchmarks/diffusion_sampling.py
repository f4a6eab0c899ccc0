"""DDPM sampling throughput: 1000-step ancestral sampling vs deterministic DDIM in 50 and 20 steps.

    python benchmarks/diffusion_sampling.py [--ckpt path/to/ddpm.ckpt] [--n 100] [--threads 2]

Without ``--ckpt`` a fresh default DDPM for digits (1×8×8) is built (throughput does not depend on
the weights). Prints one JSON object: samples/s per method and the speed-up of each DDIM setting
over ancestral sampling. Each setting runs once after a short warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from genlab.models import build_model, load_model

SETTINGS = (("ddpm", None), ("ddim", 50), ("ddim", 20))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="a DDPM checkpoint (default: a fresh digits-shaped DDPM)")
    ap.add_argument("--n", type=int, default=100, help="samples per setting (one batch)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ckpt:
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
        model.sample(args.n, seed=0, method=method, steps=steps)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        rows.append({"method": method, "steps": n_steps, "seconds": round(dt, 3),
                     "samples_per_s": round(args.n / dt, 2)})
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup_vs_ancestral"] = round(r["samples_per_s"] / base, 1)
    out = {
        "model": {k: v for k, v in dict(model.hparams).items() if k != "model_kind"},
        "params": sum(p.numel() for p in model.net.parameters()),
        "ckpt": args.ckpt,
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
