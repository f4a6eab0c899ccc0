"""Glue between `05_cost_latency.ipynb` and the library: :class:`CostLatencyReport` is the
notebook's sections, one method each.

Reproducibility and wall-clock. Latency, throughput and memory are the point of this report, but
they change from run to run and machine to machine, so they cannot be in the byte-reproducible
files. The design:

- the recommendation is made on numbers that reproduce: the *cheapest* variant by a deterministic
  cost proxy (FLOPs per sample, then stored bytes) among those whose FD confidence interval
  overlaps the fp32 reference's (and whose conditional accuracy interval does, for conditional
  models). `05_cost_latency.json`/`.tables.json`, the quality table, the cost table and the
  FLOPs-vs-FD Pareto figure are reproducible;
- measured timings go to `05_cost_latency.timings.json` and `05_cost_latency.timings.html`
  (tables and the latency-vs-FD Pareto figure) beside the run's `timings.json`, outside the
  reproducible set. The notebook shows them in cells tagged `wall-clock`, whose outputs
  :func:`genlab.ops.reports.normalize_notebook` replaces by a pointer to those files when the
  executed notebook is saved and exported: interactively you see them, the stored report
  stays byte-identical. The headline's `speedup_at_batch1` is therefore null with that reason,
  and the measured value is the same key in the timings file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from typing import Any

import numpy as np
import torch
from IPython.display import display

from genlab import params as P
from genlab import plots
from genlab.cost_latency import measure as M
from genlab.cost_latency.variants import build_variants, load_variant
from genlab.evaluate import evaluation as E
from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance_table, write_headline
from genlab.ops.runs import atomic_write_text
from genlab.params import CostLatencyParams

STEM = "05_cost_latency"
REFERENCE = "fp32"
TIMINGS_NOTE = (f"wall-clock measurements: {STEM}.timings.json and {STEM}.timings.html in the run "
                "folder (kept out of the byte-reproducible report)")


def variant_names(value) -> list[str] | None:
    """The ``variants`` parameter as a list (always with the fp32 reference), None = all."""
    if value is None:
        return None
    items = value.strip().strip("[]").split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().strip("'\"") for v in items if str(v).strip()]
    return [REFERENCE, *[n for n in names if n != REFERENCE]]


def _fmt(row: dict, key: str) -> Any:
    if row.get(key) is None:
        return None
    if row.get(f"{key}_ci_low") is None:
        return row[key]
    return f"{row[key]:.3g} [{row[key + '_ci_low']:.3g}, {row[key + '_ci_high']:.3g}]"


class CostLatencyReport:
    """`05_cost_latency.ipynb`, one method per section."""

    def __init__(self, p: CostLatencyParams):
        if p.full:
            p = p.replace(distill_iters=max(p.distill_iters, 1500), start_steps=max(p.start_steps, 64),
                          decoder_iters=max(p.decoder_iters, 3000), latency_reps=max(p.latency_reps, 100))
        self.p = p
        self.opened = o = open_run(p)
        self.model, self.run = o.model, o.run
        self.names = variant_names(p.variants)
        self.wall: dict[str, Any] = {}

    def provenance(self) -> Table:
        self.prov = self.opened.provenance()
        return provenance_table(self.prov)

    def build(self) -> Table:
        o, p = self.opened, self.p
        mem = o.spec.pool("members")
        y = torch.from_numpy(o.ds.y[mem]) if o.ds.y is not None and self.model.n_classes else None
        t0 = time.perf_counter()
        self.status = build_variants(self.run, self.model, torch.from_numpy(o.ds.x[mem]), y, names=self.names,
                                     seed=p.seed, distill_iters=p.distill_iters, start_steps=p.start_steps,
                                     decoder_iters=p.decoder_iters, student_width_ratio=p.student_width_ratio)
        self.wall["build_variants_s"] = time.perf_counter() - t0
        self.variants = [load_variant(self.run, n) for n, s in self.status.items() if s == "built"]
        return Table([{"variant": n, "status": s} for n, s in self.status.items()],
                     title=f"Variants of the run's {self.model.model_kind} (artifacts/variants/)")

    def costs(self) -> Table:
        self.cost = {v.variant: M.cost(v) for v in self.variants}
        ref = self.cost[REFERENCE]
        rows = [{**c, "flops_vs_reference": c["flops_per_sample"] / ref["flops_per_sample"],
                 "bytes_vs_reference": c["weight_bytes"] / ref["weight_bytes"]} for c in self.cost.values()]
        return Table(rows, title="Deterministic cost proxy (FLOPs of matrix products and convolutions "
                                 "per sample; stored bytes)", digits=3)

    def quality(self) -> Table:
        p, o = self.p, self.opened
        ep = P.typed("evaluate", run_dir=p.run_dir, seed=p.seed, feature_extractor=p.feature_extractor,
                     subsample_frac=p.subsample_frac, n_draws=p.n_draws, ci_level=p.ci_level)
        ctx = E.Context(o.run, o.ds, o.spec, self.model, f"variants of model.ckpt ({self.model.model_kind})")
        t0 = time.perf_counter()
        scorer = M.QualityScorer(ctx, ep)
        self.floor = scorer.floor()
        self.rows = {v.variant: scorer.score_variant(v, p.seed) for v in self.variants}
        self.wall["quality_s"] = time.perf_counter() - t0
        self.extractor = scorer.ext.name
        ref = self.rows[REFERENCE]
        for name, row in self.rows.items():
            row["fd_ratio_to_reference"] = row["fd"] / ref["fd"] if ref["fd"] > 0 else None
            row["fd_ratio_to_floor"] = row["fd"] / self.floor["fd"] if self.floor["fd"] > 0 else None
        self.recommended = M.recommend(self.rows, self.cost, REFERENCE)
        keys = ("fd", "fd_ratio_to_reference", "fd_ratio_to_floor", "precision", "recall",
                "conditional_accuracy", "within_reference_ci")
        table = [{"variant": n, **{k: _fmt(r, k) for k in keys}} for n, r in self.rows.items()]
        table.append({"variant": "real-vs-real floor", **{k: _fmt(self.floor, k) for k in keys[:1] + keys[3:6]}})
        return Table(table, title=f"Quality at n={ref['n']}, m={ref['m']} in the evaluation's feature space "
                                  f"({self.extractor}; reference: holdout_b)", digits=3)

    def recommend(self) -> Table:
        eligible = [n for n, r in self.rows.items() if r["within_reference_ci"]]
        rec, ref = self.rows[self.recommended], self.rows[REFERENCE]
        print(f"Recommended: {self.recommended!r}, the cheapest variant (FLOPs per sample, then bytes) "
              f"whose FD interval overlaps the fp32 reference's"
              + (" and whose conditional accuracy interval does" if self.model.n_classes else "")
              + f"; {len(eligible)} of {len(self.rows)} variants qualify.")
        return Table.from_mapping({"recommended": self.recommended, "fd": _fmt(rec, "fd"),
                                   "fd_reference": _fmt(ref, "fd"),
                                   "flops_per_sample": self.cost[self.recommended]["flops_per_sample"],
                                   "flops_reference": self.cost[REFERENCE]["flops_per_sample"],
                                   "weight_bytes": self.cost[self.recommended]["weight_bytes"]},
                                  title="Recommendation", digits=4)

    def pareto(self) -> None:
        plots.cost_pareto({n: (self.cost[n]["flops_per_sample"], r["fd_ratio_to_reference"])
                           for n, r in self.rows.items()}, self.recommended,
                          xlabel="FLOPs per sample (log scale)")

    def samples(self) -> None:
        """Eight samples of every variant on the same latents (and labels), one row each."""
        if not self.opened.ds.is_image:
            return
        labels = torch.arange(8) % self.model.n_classes if self.model.n_classes else None
        grid = np.concatenate([v.sample(8, labels=labels, seed=self.p.seed).numpy() for v in self.variants])
        plots.image_grid(grid, title="Rows: " + ", ".join(v.variant for v in self.variants), ncols=8)

    def measure_timings(self) -> None:
        """Wall-clock: latency at batch 1 (one thread: the edge profile; all threads), throughput
        per batch size on one thread with the peak memory of those calls. Shown here, stored
        outside the reproducible files."""
        p, vs = self.p, self.variants
        if not p.timings:
            print("wall-clock measurements: none (timings=False)")
            self.timing = None
            return
        print(TIMINGS_NOTE)
        cores = os.cpu_count() or 1
        sizes = [2**k for k in range(9)] if p.full else [1, 16, 256]
        budget = max(p.latency_budget_s, 60.0) if p.full else p.latency_budget_s
        lat1 = M.latencies(vs, 1, reps=p.latency_reps, budget_s=p.latency_budget_s, seed=p.seed)
        latn = M.latencies(vs, cores, reps=p.latency_reps, budget_s=p.latency_budget_s, seed=p.seed)
        rows = []
        for v in vs:
            rates, memory = M.throughput(v, sizes, 1, budget_s=budget, seed=p.seed)
            rows.append({"variant": v.variant, "p50_ms_1_thread": lat1[v.variant]["p50_ms"],
                         "p99_ms_1_thread": lat1[v.variant]["p99_ms"],
                         f"p50_ms_{cores}_threads": latn[v.variant]["p50_ms"],
                         f"p99_ms_{cores}_threads": latn[v.variant]["p99_ms"], "reps": lat1[v.variant]["reps"],
                         "speedup_at_batch1": lat1[REFERENCE]["p50_ms"] / lat1[v.variant]["p50_ms"],
                         **{f"samples_per_s_batch{b}": t for b, t in rates.items()},
                         "peak_memory_mb": memory})
        self.timing = {r["variant"]: r for r in rows}
        display(Table(rows, title=f"Wall-clock (this machine, now; {cores} cores)", digits=3))
        fig = plots.cost_pareto({r["variant"]: (r["p50_ms_1_thread"], self.rows[r["variant"]]["fd_ratio_to_reference"])
                                 for r in rows}, self.recommended, xlabel="latency p50 at batch 1, one thread (ms, log)")
        self.write_timings(fig)

    def write_timings(self, fig) -> None:
        rec = self.timing[self.recommended]
        doc = {"speedup_at_batch1": rec["speedup_at_batch1"], "recommended_variant": self.recommended,
               "variants": self.timing, "cpu_count": os.cpu_count(), **self.wall}
        atomic_write_text(self.run.path / f"{STEM}.timings.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>05_cost_latency timings</title></head>"
                f"<body><h1>Wall-clock measurements</h1><p>{html.escape(TIMINGS_NOTE)}</p>"
                + Table(list(self.timing.values()), digits=3)._repr_html_()
                + f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/></body></html>\n")
        atomic_write_text(self.run.path / f"{STEM}.timings.html", page)

    def numbers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        rec, ref, floor = self.rows[self.recommended], self.rows[REFERENCE], self.floor
        out: dict[str, Any] = {"model_kind": self.model.model_kind, "reference_variant": REFERENCE,
                               "recommended_variant": self.recommended, "extractor": self.extractor,
                               "n": ref["n"], "m": ref["m"], "n_variants": len(self.rows),
                               "n_variants_within_reference_ci": sum(r["within_reference_ci"] for r in self.rows.values())}
        for tag, row in (("reference", ref), ("recommended", rec), ("real_vs_real", floor)):
            for suffix in ("", "_ci_low", "_ci_high"):
                out[f"fd_{tag}{suffix}"] = row[f"fd{suffix}"]
        out["fd_ratio_to_reference"] = rec["fd_ratio_to_reference"]
        if out["fd_ratio_to_reference"] is None:
            out["fd_ratio_to_reference_na_reason"] = "the reference's FD is 0"
        out["fd_ratio_to_floor"] = rec["fd_ratio_to_floor"]
        if out["fd_ratio_to_floor"] is None:
            out["fd_ratio_to_floor_na_reason"] = "the real-vs-real FD is 0"
        for key in ("conditional_accuracy",):
            out[f"{key}_recommended"] = rec.get(key)
            for suffix in ("_ci_low", "_ci_high"):
                if rec.get(key + suffix) is not None:
                    out[f"{key}_recommended{suffix}"] = rec[key + suffix]
            if rec.get(key) is None:
                out[f"{key}_recommended_na_reason"] = rec.get(f"{key}_na_reason", "not computed")
        c_rec, c_ref = self.cost[self.recommended], self.cost[REFERENCE]
        out["flops_speedup"] = c_ref["flops_per_sample"] / c_rec["flops_per_sample"]
        out["size_ratio_to_reference"] = c_rec["weight_bytes"] / c_ref["weight_bytes"]
        out["speedup_at_batch1"] = None
        out["speedup_at_batch1_na_reason"] = f"wall-clock, kept out of this file: see {STEM}.timings.json"
        variants = {n: {**self.cost[n], **{k: v for k, v in r.items()}} for n, r in self.rows.items()}
        tables = {"variants": variants, "real_vs_real": floor, "build_status": self.status}
        return out, tables

    def headline(self) -> Table:
        numbers, tables = self.numbers()
        write_headline(self.run, STEM, numbers, provenance=self.prov, tables=tables)
        return Table.from_mapping(numbers, title="Headline", digits=4)
