"""MMD permutation test: kernel computed once + vectorised permutations vs the naive test that
recomputes the kernel for every permutation (what a textbook loop, and roughly alibi-detect's
MMDDrift at this size, costs). 100 permutations, 500 vs 500 samples of 64 dimensions.

Timings on shared machines swing with load: both arms run interleaved in one
process, repeated, and the ratio of medians is reported. Prints one JSON object.

    .venv/bin/python benchmarks/drift_speed.py [--repeats 5]
"""

import argparse
import json
import statistics
import time

import numpy as np

from genlab.drift_study import detectors as drift
from genlab.numerics import single_threaded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 64)), rng.normal(0.05, 1, size=(500, 64))
    fast, naive = [], []
    with single_threaded():
        for r in range(args.repeats):
            t = time.perf_counter()
            a = drift.mmd_test(x, y, n_permutations=100, rng=np.random.default_rng(r))
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = drift.mmd_test_naive(x, y, n_permutations=100, rng=np.random.default_rng(r))
            naive.append(time.perf_counter() - t)
            assert a.p_value == b.p_value, (a, b)
    out = {"n": 500, "m": 500, "dim": 64, "permutations": 100, "repeats": args.repeats,
           "vectorised_median_s": statistics.median(fast),
           "naive_median_s": statistics.median(naive),
           "speedup": statistics.median(naive) / statistics.median(fast),
           "same_p_value": True}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
