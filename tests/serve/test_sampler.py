"""Samplers: batched sampling equals the models' own ``sample``; sources and variants."""

from __future__ import annotations

import pytest
import torch

from genlab.serve import sampler as S
from genlab.serve.sampler import Draw, SourceError, load_sampler, resolve_source


@pytest.mark.parametrize("kind", ["vae", "gan", "ddpm"])
@pytest.mark.parametrize("conditional", [False, True])
def test_sample_many_equals_the_models_sample_per_draw(serve_runs, kind, conditional):
    s = load_sampler(serve_runs[(kind, conditional)])
    if getattr(s.model, "generator_ema", None) is not None:
        with torch.no_grad():  # an untrained GAN's EMA copy equals its generator: set it apart
            for p in s.model.generator_ema.parameters():
                p.add_(0.05)
    draws = [Draw(2, 7), Draw(1, 8), Draw(3, 9)]
    if conditional:
        draws[1] = Draw(1, 8, torch.tensor([6]))
    steps = {"steps": 3} if kind == "ddpm" else {}
    if steps:
        draws = [Draw(d.n, d.seed, d.labels, 3) for d in draws]
    batched = s.sample_many(draws)
    for d, out in zip(draws, batched):
        own = s.model.sample(d.n, seed=d.seed, labels=d.labels, **steps)
        torch.testing.assert_close(out, own.clamp(0, 1), atol=1e-5, rtol=0)
        torch.testing.assert_close(out, s.sample(d.n, d.labels, d.seed, d.steps), atol=1e-5, rtol=0)
    assert s.kind == kind and s.conditional == conditional and s.variant == "fp32"
    assert s.num_classes == (10 if conditional else 0)


def test_ddpm_batch_needs_one_steps_value(serve_runs):
    s = load_sampler(serve_runs[("ddpm", False)])
    with pytest.raises(ValueError, match="steps"):
        s.sample_many([Draw(1, 0, None, 2), Draw(1, 1, None, 3)])


def test_resolve_source(serve_runs, tmp_path):
    run = serve_runs[("vae", False)]
    assert resolve_source(str(run)) == run.resolve()
    with pytest.raises(SourceError, match="no such run folder"):
        resolve_source(tmp_path / "absent")
    with pytest.raises(SourceError, match="model.ckpt"):
        resolve_source(tmp_path)
    with pytest.raises(SourceError, match="models:/"):
        resolve_source("models:/digits-vae@champion")


def test_registered_resolver_is_used(serve_runs, monkeypatch):
    run = serve_runs[("gan", False)]
    monkeypatch.setattr(S, "_RESOLVERS", {})
    S.register_resolver("models:/", lambda text: run if text.endswith("@champion") else None)
    assert resolve_source("models:/digits@champion") == run.resolve()


def test_unknown_variant_names_what_is_missing(serve_runs):
    with pytest.raises(SourceError, match="variant 'int8'"):
        load_sampler(serve_runs[("vae", False)], "int8")


def test_variant_is_delegated(serve_runs, monkeypatch):
    """A variant comes from genlab.cost_latency.variants.load_variant(run_dir, name)."""
    import sys
    import types

    run = serve_runs[("vae", True)]
    (run / "artifacts" / "variants" / "half").mkdir(parents=True, exist_ok=True)
    calls = []

    class Half:
        def sample(self, n, labels, seed, steps):
            calls.append((n, seed))
            return torch.full((n, 1, 8, 8), 0.5)

    module = types.ModuleType(S.VARIANTS_MODULE)
    module.load_variant = lambda run_dir, name: Half()
    monkeypatch.setitem(sys.modules, S.VARIANTS_MODULE, module)
    s = load_sampler(run, "half")
    assert (s.variant, s.kind, s.conditional, s.num_classes, s.batches) == ("half", "vae", True, 10, False)
    outs = s.sample_many([Draw(2, 1), Draw(1, 2)])
    assert [o.shape[0] for o in outs] == [2, 1] and calls == [(2, 1), (1, 2)]
