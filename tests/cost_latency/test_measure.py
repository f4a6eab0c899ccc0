"""Cost proxy, quality through the evaluation's own scoring, the recommendation rule, timings."""

from __future__ import annotations

import pytest
import torch

from genlab import params as P
from genlab.cost_latency import measure as M
from genlab.cost_latency.variants import build_variants, load_variant
from genlab.evaluate import evaluation as E
from genlab.ops.runs import RunFolder


@pytest.fixture(scope="module")
def ddpm_variants(tmp_path_factory, perturbed_model):
    run = RunFolder(tmp_path_factory.mktemp("cost"))
    model = perturbed_model("ddpm", dict(width=8, timesteps=40, n_classes=10))
    build_variants(run, model, torch.zeros(4, 1, 8, 8), torch.zeros(4), names=["fp32", "int8", "ddim-5"])
    return run


def test_cost_proxy_counts_steps_guidance_and_bytes(ddpm_variants):
    costs = {n: M.cost(load_variant(ddpm_variants, n)) for n in ("fp32", "int8", "ddim-5")}
    ref = costs["fp32"]
    assert ref["steps"] == 40 and ref["evaluations_per_sample"] == 80  # 40 DDIM steps x 2 (guidance w=2)
    assert costs["ddim-5"]["flops_per_sample"] * 8 == ref["flops_per_sample"] > 0
    assert costs["int8"]["flops_per_sample"] == ref["flops_per_sample"]  # same operations, other precision
    assert costs["int8"]["weight_bytes"] < ref["weight_bytes"]


def test_recommend_takes_the_cheapest_variant_inside_the_reference_interval():
    rows = {"fp32": {"fd": 10, "fd_ci_low": 8, "fd_ci_high": 12},
            "a": {"fd": 11, "fd_ci_low": 9, "fd_ci_high": 13},
            "b": {"fd": 30, "fd_ci_low": 25, "fd_ci_high": 35},  # cheapest, but outside
            "c": {"fd": 9, "fd_ci_low": 7, "fd_ci_high": 12, "conditional_accuracy": 0.5,
                  "conditional_accuracy_ci_low": 0.4, "conditional_accuracy_ci_high": 0.6}}
    rows["fp32"].update(conditional_accuracy=0.9, conditional_accuracy_ci_low=0.85, conditional_accuracy_ci_high=0.95)
    costs = {"fp32": {"flops_per_sample": 100, "weight_bytes": 40}, "a": {"flops_per_sample": 100, "weight_bytes": 10},
             "b": {"flops_per_sample": 1, "weight_bytes": 10}, "c": {"flops_per_sample": 5, "weight_bytes": 10}}
    assert M.recommend(rows, costs) == "a"  # c is cheaper but its class fidelity left the interval
    assert [rows[n]["within_reference_ci"] for n in "abc"] == [True, False, False]
    rows["a"].update(fd_ci_low=13, fd_ci_high=14)
    assert M.recommend(rows, costs) == "fp32"  # nothing else qualifies: the reference itself


def test_quality_is_the_evaluations_own_model_row(vae_run):
    """The fp32 variant scored here gives the very numbers 02_evaluate's model row gives."""
    ep = P.typed("evaluate", run_dir=str(vae_run.path), n_draws=4)
    ctx = E.load_context(ep)
    build_variants(vae_run, ctx.model, torch.zeros(4, 1, 8, 8), names=["fp32"])
    scorer = M.QualityScorer(ctx, ep)
    ours = scorer.score_variant(load_variant(vae_run, "fp32"), ep.seed)
    rows, ref = E.candidates(ctx, scorer.ext, ep)
    theirs, _ = E.row_metrics(rows[0], ref, scorer.members_f, (ref.x, ref.labels), scorer.n_classes, ep)
    for key in ("fd", "fd_ci_low", "fd_ci_high", "precision", "recall", "m", "n"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key
    floor = scorer.floor()
    assert floor["fd"] < ours["fd"]  # the real-vs-real floor sits below a 30-epoch VAE


def test_timings_have_every_variant_and_sane_values(ddpm_variants):
    vs = [load_variant(ddpm_variants, n) for n in ("fp32", "ddim-5")]
    lat = M.latencies(vs, 1, reps=3, budget_s=0.0)
    assert set(lat) == {"fp32", "ddim-5"} and all(r["reps"] == 3 for r in lat.values())
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in lat.values())
    tp, memory = M.throughput(vs[1], [1, 4, 1024], 1, budget_s=1e-9)
    assert tp["1"] > 0 and tp["4"] is None and tp["1024"] is None  # skipped: over budget at the last rate
    tp, memory = M.throughput(vs[1], [1, 2], 1, budget_s=60)
    assert all(r > 0 for r in tp.values()) and memory >= 0
    with M.peak_rss_increase() as grown:
        block = torch.ones(50_000_000, dtype=torch.uint8)  # 50 MB touched
        del block
    assert grown[0] > 40
    assert torch.get_num_threads() == 1  # thread limit restored
