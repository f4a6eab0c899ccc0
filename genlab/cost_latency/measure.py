"""What each variant costs and what it gives: deterministic cost, quality, and wall-clock timings.

- **Cost proxy** (deterministic, the same on every machine): floating-point operations of the
  matrix products and convolutions per sample (``torch.utils.flop_counter`` on one network
  evaluation at batch 1, times the evaluations per sample: sampling steps, two per step under
  classifier-free guidance), and the bytes of the stored weights.
- **Quality**: the evaluation's own scoring, :func:`genlab.evaluate.evaluation.row_metrics`, in
  the evaluation's feature space (:func:`~genlab.evaluate.evaluation.make_extractor`) against
  ``holdout_b``, every variant with the same n, the same subsample size m and the same seeds, and
  the real-vs-real floor (``holdout_a``) beside them: whatever the evaluation measures, and
  however, this report follows.
- **Timings** (wall-clock, machine- and load-dependent): latency p50/p99 at batch 1 on one
  thread and on all threads, throughput per batch size on one thread (per core: on a shared
  machine several threads mostly measure the contention), peak resident memory while sampling.
  Latencies are taken round-robin over the variants (one call of each in turn), so a change in
  the machine's load hits all of them alike and their ratios stay comparable.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from genlab.cost_latency.variants import VariantSampler, build_network, in_dim
from genlab.evaluate import evaluation as E


# ------------------------------------------------------------------------------ cost proxy
def flops_per_evaluation(v: VariantSampler) -> int:
    """FLOPs of one network evaluation at batch 1 (fp32 architecture: the count of operations,
    whatever precision executes them)."""
    cfg = v.cfg
    net = build_network(cfg["network"], cfg["data_shape"], cfg["num_classes"], cfg.get("latent_dim"))
    if v.kind == "ddpm":
        args = (torch.zeros(1, *cfg["data_shape"]), torch.tensor([1]))
        args += (torch.tensor([0]),) if v.conditional else ()
    else:
        args = (torch.zeros(1, in_dim(cfg)),)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(*args)
    return int(counter.get_total_flops())


def weight_bytes(v: VariantSampler) -> int:
    """Bytes of the stored network (every file of the variant folder but variant.json)."""
    return sum(p.stat().st_size for p in v.folder.iterdir() if p.is_file() and p.name != "variant.json")


def cost(v: VariantSampler) -> dict[str, Any]:
    per_eval = flops_per_evaluation(v)
    return {"variant": v.variant, "backend": v.backend,
            "steps": len(v.cfg["sampler_timesteps"]) if v.kind == "ddpm" else 1,
            "evaluations_per_sample": v.evaluations_per_sample, "flops_per_evaluation": per_eval,
            "flops_per_sample": per_eval * v.evaluations_per_sample, "weight_bytes": weight_bytes(v)}


# ------------------------------------------------------------------------------ quality
class QualityScorer:
    """Scores sample sets exactly as `02_evaluate` scores the model row (same extractor, reference,
    members, m and seeds)."""

    def __init__(self, ctx: E.Context, eval_params):
        self.ctx, self.p = ctx, eval_params
        self.ext = E.make_extractor(ctx, eval_params)
        spec, ds = ctx.spec, ctx.ds
        b = spec.pool("holdout_b")
        self.ref = self._candidate("reference (holdout_b)", ds.x[b], ds.y[b] if ds.y is not None else None,
                                   "true labels")
        self.members_f = self.ext.features(ds.x[spec.pool("members")])
        self.n_classes = ds.n_classes if ds.y is not None else None
        self.n = len(spec.pool("holdout_a"))

    def _candidate(self, name: str, x: np.ndarray, labels, source: str) -> E.Candidate:
        if self.ext.n_classes is not None:
            f, proba = self.ext.features_and_proba(x)
        else:
            f, proba = self.ext.features(x), None
        if labels is None and proba is not None:
            labels, source = proba.argmax(1), "extractor pseudo-labels"
        return E.Candidate(name, x, f, proba, None if labels is None else np.asarray(labels), source
                           if labels is not None else "none")

    def score(self, name: str, x: np.ndarray, labels=None, source: str = "requested labels") -> dict[str, Any]:
        """The evaluation's metric row for records ``x`` (``labels``: the classes they were asked for)."""
        c = self._candidate(name, np.asarray(x, dtype=np.float32), labels, source)
        row, _ = E.row_metrics(c, self.ref, self.members_f, (self.ref.x, self.ref.labels), self.n_classes, self.p)
        return row

    def floor(self) -> dict[str, Any]:
        a = self.ctx.spec.pool("holdout_a")
        ds = self.ctx.ds
        return self.score("real (holdout_a)", ds.x[a], ds.y[a] if ds.y is not None else None, "true labels")

    def score_variant(self, v: VariantSampler, seed: int) -> dict[str, Any]:
        """``n`` = |holdout_a| samples of ``v`` (conditional: classes drawn in the members' shares,
        the same for every variant), scored."""
        labels = v.labels(self.n, seed, None) if v.conditional else None
        x = v.sample(self.n, labels=labels, seed=seed).numpy()
        return self.score(v.variant, x, None if labels is None else labels.numpy())


def overlaps(row: dict[str, Any], ref: dict[str, Any], key: str) -> bool | None:
    """Whether the CIs of ``key`` overlap (None when either is missing)."""
    lo, hi = f"{key}_ci_low", f"{key}_ci_high"
    if row.get(lo) is None or ref.get(lo) is None:
        return None
    return bool(row[lo] <= ref[hi] and ref[lo] <= row[hi])


def recommend(rows: dict[str, dict], costs: dict[str, dict], reference: str = "fp32") -> str:
    """The cheapest variant (FLOPs per sample, then stored bytes, then name) whose FD interval
    overlaps the reference's, and whose conditional-accuracy interval does where it has one.
    Sets ``within_reference_ci`` on every row; the reference always qualifies."""
    ref = rows[reference]
    for name, row in rows.items():
        checks = [overlaps(row, ref, "fd")]
        if row.get("conditional_accuracy") is not None:
            checks.append(overlaps(row, ref, "conditional_accuracy"))
        row["within_reference_ci"] = name == reference or all(c is True for c in checks)
    eligible = [n for n, r in rows.items() if r["within_reference_ci"]]
    return min(eligible, key=lambda n: (costs[n]["flops_per_sample"], costs[n]["weight_bytes"], n))


# ------------------------------------------------------------------------------ timings
@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(v: VariantSampler, n: int, seed: int) -> float:
    t0 = time.perf_counter()
    v.sample(n, seed=seed)
    return time.perf_counter() - t0


def latencies(variants: list[VariantSampler], threads: int, *, reps: int, budget_s: float,
              seed: int = 0) -> dict[str, dict[str, Any]]:
    """Latency p50/p99 (ms) of ``sample(1)`` per variant, round-robin, ``threads`` torch threads;
    at most ``reps`` rounds or ``budget_s`` seconds (at least 3 rounds)."""
    times: dict[str, list[float]] = {v.variant: [] for v in variants}
    with torch_threads(threads):
        for v in variants:  # warm-up: first-call allocations, ONNX Runtime session creation
            _timed(v, 1, seed)
        start = time.perf_counter()
        for r in range(int(reps)):
            for v in variants:
                times[v.variant].append(_timed(v, 1, seed + r))
            if r >= 2 and time.perf_counter() - start > budget_s:
                break
    return {k: {"p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99)),
                "reps": len(t)} for k, t in times.items()}


def throughput(v: VariantSampler, batch_sizes, threads: int, *, budget_s: float, seed: int = 0
               ) -> tuple[dict[str, Any], float]:
    """Samples per second at each batch size (ascending; one timed call each after a warm-up),
    and the peak increase of resident memory (MB) over any of those calls. A batch whose call
    would take longer than ``budget_s`` at the last measured rate is skipped (None)."""
    out: dict[str, Any] = {}
    rate, peak = None, 0.0
    with torch_threads(threads):
        _timed(v, 1, seed)
        for b in batch_sizes:
            if rate is not None and b / rate > budget_s:
                out[str(b)] = None
                continue
            with peak_rss_increase() as mem:
                seconds = _timed(v, b, seed)
            rate, peak = b / seconds, max(peak, mem[0])
            out[str(b)] = rate
    return out, peak


@contextlib.contextmanager
def peak_rss_increase():
    """Yields a one-item list that holds, on exit, the peak increase of resident memory (MB) over
    its level on entry, polled every 2 ms (Linux ``/proc/self/statm``; indicative: memory the
    allocator kept from earlier calls is reused, not counted again)."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    base, peak, done, result = rss(), [0], threading.Event(), [0.0]

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        yield result
    finally:
        done.set()
        th.join()
        result[0] = max(0, max(peak[0], rss()) - base) / 1e6
