"""Metric speed against the reference implementations, side by side in one process.

Timings on shared machines swing 2-8× with load, so each pair runs alternately `--repeats`
times and the ratio of medians is reported (JSON on stdout). Peak memory of our PRDC is
measured with tracemalloc (numpy allocations are traced).

    python benchmarks/metrics_speed.py                 # n=10k (slow: ~1-2 min)
    python benchmarks/metrics_speed.py --n 2000 --repeats 1   # quick look
    python benchmarks/metrics_speed.py --only prdc            # PRDC at n=10k only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc

import numpy as np
import torch

from genlab.evaluate import metrics as M


class _Identity(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def fd_pair(n: int, d: int, rng) -> dict:
    from torchmetrics.image.fid import FrechetInceptionDistance

    a = rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d))
    b = a[::-1] * 1.1 + 0.1

    def ref():
        fid = FrechetInceptionDistance(feature=_Identity(d))
        fid.set_dtype(torch.float64)
        fid.update(torch.from_numpy(a), real=True)
        fid.update(torch.from_numpy(np.ascontiguousarray(b)), real=False)
        return float(fid.compute())

    t_ref, v_ref = _time(ref)
    t_our, v_our = _time(lambda: M.frechet_distance(a, b))
    return {"ref_s": t_ref, "ours_s": t_our, "rel_diff": abs(v_our - v_ref) / abs(v_ref)}


def prdc_pair(n: int, d: int, rng, k: int = 5) -> dict:
    import prdc

    real, fake = rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 1.1
    t_ref, v_ref = _time(lambda: prdc.compute_prdc(real, fake, nearest_k=k))
    t_our, v_our = _time(lambda: M.prdc(real, fake, k))
    tracemalloc.start()  # a separate call: tracing slows allocations, so it is not timed
    M.prdc(real, fake, k)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    equal = v_our == {key: float(v) for key, v in v_ref.items()}
    return {"ref_s": t_ref, "ours_s": t_our, "ours_peak_mb": peak / 2**20, "equal": equal}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("prdc", "fd"), help="run one of the two pairs")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {}
    for name, fn, d in (("prdc_d64", prdc_pair, 64), ("fd_d2048", fd_pair, 2048)):
        if args.only and not name.startswith(args.only):
            continue
        runs = [fn(args.n, d, rng) for _ in range(args.repeats)]
        ref = statistics.median(r["ref_s"] for r in runs)
        ours = statistics.median(r["ours_s"] for r in runs)
        out[name] = {"n": args.n, "d": d, "repeats": args.repeats, "ref_median_s": round(ref, 3),
                     "ours_median_s": round(ours, 3), "speedup": round(ref / ours, 2),
                     **{k: v for k, v in runs[-1].items() if k not in ("ref_s", "ours_s")}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
