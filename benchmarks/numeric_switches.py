"""Which numeric switches make two CPU instruction sets (or thread counts) give the same numbers?

Each setting runs in a fresh process (the switches are read when torch loads) and computes:
  forward  - 64 samples of an untrained default VAE (one forward pass, MLP: BLAS matmuls)
  conv     - one forward pass of an untrained DDPM U-Net (convolutions: oneDNN)
  train    - the default VAE trained 10 epochs on the digits members (Lightning, deterministic)
and prints, per setting, the largest absolute difference from a reference setting and the wall
time. Settings compared: ATEN_CPU_CAPABILITY (default / avx2 / avx512 where the CPU has it),
MKL_CBWR=COMPATIBLE (MKL's conditional numerical reproducibility), ONEDNN_MAX_CPU_ISA, and the
intra-op thread count.

    python benchmarks/numeric_switches.py            # prints one JSON object
    python benchmarks/numeric_switches.py --epochs 3 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SWITCHES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _compute(epochs: int, threads: int) -> dict:
    import numpy as np
    import torch

    from genlab import data
    from genlab.models import build_model
    from genlab.training import TrainConfig, fit, quiet_lightning, seed_everything

    torch.set_num_threads(threads)
    quiet_lightning()
    started = time.perf_counter()
    seed_everything(0)
    vae = build_model("vae", [1, 8, 8])
    forward = vae.sample(64, seed=0).double().numpy()
    seed_everything(0)
    unet = build_model("ddpm", [1, 8, 8])
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv = unet.net(x, torch.full((16,), 500)).double().numpy()

    ds = data.load_dataset("digits")
    spec = data.DataSpec.build(ds, seed=0)
    seed_everything(0)
    model = build_model("vae", [1, 8, 8])
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, data.GenDataModule(ds, spec), ckpt_dir=tmp,
                     cfg=TrainConfig(max_epochs=epochs, seed=0))
    weights = np.concatenate([p.detach().double().numpy().ravel() for p in model.parameters()])
    return {"forward": forward.ravel().tolist(), "conv": conv.ravel().tolist(),
            "train": weights.tolist(), "final_val_loss": result.final_val_loss,
            "capability": torch.backends.cpu.get_cpu_capability(),
            "seconds": time.perf_counter() - started}


def _run(env_over: dict, epochs: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(env_over)
    out = subprocess.run([sys.executable, __file__, "--child", str(epochs), str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# An AVX2-only or SSE-only CPU, simulated on this one: each library's own ISA cap.
MACHINES = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
             "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
# Switches a project can set everywhere, applied on top of each simulated machine.
PINS = {
    "none": {},
    "mkl_cbwr": {"MKL_CBWR": "COMPATIBLE"},
    "mkl_cbwr+aten_default": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"},
    "mkl_cbwr+aten_default+onednn_sse41": {"MKL_CBWR": "COMPATIBLE",
                                           "ATEN_CPU_CAPABILITY": "default",
                                           "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_compute(*args.child)))
        return
    import numpy as np

    def diff(a, b, key):
        return float(np.max(np.abs(np.asarray(a[key]) - np.asarray(b[key]))))

    keys = ("forward", "conv", "train")
    rows = []
    for pin, pin_env in PINS.items():
        runs = {m: _run({**env, **pin_env}, args.epochs, 1) for m, env in MACHINES.items()}
        ref = runs["native"]
        rows.append({"pin": pin, "threads": 1,
                     "seconds": {m: round(r["seconds"], 2) for m, r in runs.items()},
                     "capability": {m: r["capability"] for m, r in runs.items()},
                     **{f"max_abs_diff_{k}": {m: diff(r, ref, k) for m, r in runs.items()
                                              if m != "native"} for k in keys},
                     "final_val_loss": {m: r["final_val_loss"] for m, r in runs.items()}})
    two = _run(PINS["mkl_cbwr+aten_default"], args.epochs, 2)
    one = _run(PINS["mkl_cbwr+aten_default"], args.epochs, 1)
    threads = {k: diff(two, one, k) for k in keys}
    print(json.dumps({"epochs": args.epochs, "rows": rows,
                      "threads_2_vs_1_max_abs_diff": threads,
                      "seconds_threads": {"1": round(one["seconds"], 2),
                                          "2": round(two["seconds"], 2)}}, indent=1))


if __name__ == "__main__":
    main()
