"""Variants of every model kind: built, loaded by name, sampling the right shape and range on the
model's own latents; backends close to fp32; DDIM checked by hand; students learn from teachers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.cost_latency import distill as Dst
from genlab.cost_latency.variants import (VariantError, VariantSampler, available_variants, build_variants,
                                          load_variant, reference_variant, teacher_network)
from genlab.models import load_model
from genlab.ops.runs import RunFolder

KINDS = {  # tiny models of every kind, conditional or not, MLP and conv backbones
    "vae": ("vae", dict(latent_dim=4, width=16, depth=1)),
    "cvae-conv": ("vae", dict(latent_dim=4, arch="conv", width=8, depth=1, n_classes=10)),
    "cgan": ("gan", dict(latent_dim=4, width=16, depth=1, n_classes=10)),
    "ddpm": ("ddpm", dict(width=8, timesteps=40)),
    "cddpm": ("ddpm", dict(width=8, timesteps=40, n_classes=10)),
}
# tolerances on one network's outputs against fp32 on the same inputs (images in [0, 1])
ONNX_ATOL = 1e-4          # same arithmetic, other kernels: float32 rounding only
INT8_ATOL = 0.05          # int8 weights and activations: about 1% of the output range per layer


class Built(dict):
    """Every variant of a tiny model kind, built on first use (short distillation)."""

    def __init__(self, factory, x, y, make):
        super().__init__()
        self.factory, self.x, self.y, self.make = factory, x, y, make

    def __missing__(self, name):
        kind, hp = KINDS[name]
        run = RunFolder(self.factory.mktemp(name))
        model = self.make(kind, hp)
        status = build_variants(run, model, self.x, self.y, distill_iters=2, start_steps=16, decoder_iters=5)
        self[name] = (run, model, status)
        return self[name]


@pytest.fixture(scope="module")
def built(tmp_path_factory, digits, digits_spec, perturbed_model):
    mem = digits_spec.pool("members")
    return Built(tmp_path_factory, torch.from_numpy(digits.x[mem][:128]), torch.from_numpy(digits.y[mem][:128]),
                 perturbed_model)


# the conv CVAE and the unconditional DDPM build in the slow lane (each export takes seconds)
ALL_KINDS = [k if k in ("vae", "cgan", "cddpm") else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]


@pytest.mark.parametrize("name", ALL_KINDS)
def test_every_variant_builds_loads_and_samples(built, name):
    run, model, status = built[name]
    expected = {"vae": {"student"}, "gan": {"student"}, "ddpm": {"ddim-20", "ddim-10", "ddim-5", "student-8",
                                                                   "student-4"}}[model.model_kind]
    assert {n for n, s in status.items() if s == "built"} >= {"fp32", "int8", "onnx", "onnx-int8"} | expected
    assert set(available_variants(run)) == {n for n, s in status.items() if s == "built"}
    labels = torch.tensor([3, 1, 4, 1, 5]) if model.n_classes else None
    for vname in available_variants(run):
        v = load_variant(run.path, vname)
        assert (v.kind, v.variant, v.conditional, v.num_classes) == (
            model.model_kind, vname, bool(model.n_classes), model.n_classes)
        out = v.sample(5, labels=labels, seed=7)
        assert out.shape == (5, 1, 8, 8) and out.dtype == torch.float32
        assert 0 <= float(out.min()) and float(out.max()) <= 1
        assert torch.equal(out, v.sample(5, labels=labels, seed=7))  # seeded


@pytest.mark.parametrize("name", ALL_KINDS)
def test_fp32_variant_is_the_model_sampler_bit_for_bit(built, name):
    run, model, _ = built[name]
    v, in_memory = load_variant(run, "fp32"), reference_variant(model)
    for labels in ([None, torch.tensor([2, 0, 9])] if model.n_classes else [None]):
        expected = model.sample(3, seed=11, labels=labels)
        assert torch.equal(v.sample(3, labels=labels, seed=11), expected)
        assert torch.equal(in_memory.sample(3, labels=labels, seed=11), expected)
    assert (in_memory.variant, in_memory.kind, in_memory.num_classes) == ("fp32", v.kind, v.num_classes)


@pytest.mark.parametrize("name", ["vae", "cgan", "cddpm"])
def test_onnx_and_int8_networks_close_to_fp32_on_the_same_inputs(built, name):
    run, model, _ = built[name]
    fp32 = load_variant(run, "fp32").net
    gen = torch.Generator().manual_seed(0)
    if model.model_kind == "ddpm":
        args = (torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 40, (16,), generator=gen),
                torch.randint(0, 11, (16,), generator=gen))
    else:
        z = torch.randn(16, model.latent_dim, generator=gen)
        code = torch.nn.functional.one_hot(torch.arange(16) % 10, 10).float() if model.n_classes else None
        args = (z if code is None else torch.cat([z, code], 1),)
    ref = fp32(*args)
    assert (load_variant(run, "onnx").net(*args) - ref).abs().max() < ONNX_ATOL
    for backend in ("int8", "onnx-int8"):
        diff = (load_variant(run, backend).net(*args) - ref).abs().max()
        assert 0 < diff < INT8_ATOL, backend  # quantized (not the fp32 graph), and close


def test_onnx_samples_match_fp32_samples_on_the_same_latents(built):
    run, _, _ = built["vae"]
    a, b = load_variant(run, "fp32").sample(64, seed=3), load_variant(run, "onnx").sample(64, seed=3)
    assert (a - b).abs().max() < ONNX_ATOL


def test_ddim_lands_on_the_data_point_with_the_exact_denoiser(built):
    """Hand check of the DDIM update: for data concentrated on one record x*, the exact noise
    prediction is ε(x_t) = (x_t − √ᾱ x*) / √(1 − ᾱ); deterministic DDIM then reaches x* from any
    start in any number of steps (here x* has pixels in the open interval, so clamping is idle)."""
    run, model, _ = built["cddpm"]
    v = load_variant(run, "fp32")
    target = torch.linspace(-0.8, 0.8, 64).view(1, 1, 8, 8)
    ab = v.alphas_cumprod

    def exact_eps(x, t, labels=None):  # the same for every label: guidance leaves it unchanged
        a = ab[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * target) / (1 - a).sqrt()

    oracle = VariantSampler(v.cfg, exact_eps, v.folder)
    for steps in (1, 3, 10, 40):
        out = oracle.sample(4, seed=0, steps=steps)
        assert torch.allclose(out, ((target + 1) / 2).expand(4, -1, -1, -1), atol=1e-5), steps


def test_two_guided_ddim_steps_by_hand(built):
    """The last two steps of DDIM-20 (levels 2 and 0 of T = 40) with classifier-free guidance,
    written out: ε = ε∅ + w (ε_y − ε∅), x̂₀ = clamp((x − √(1−ᾱ) ε) / √ᾱ), ε recomputed from x̂₀,
    x' = √ᾱ' x̂₀ + √(1−ᾱ') ε."""
    run, model, _ = built["cddpm"]
    v = load_variant(run, "ddim-20")
    ts = v.cfg["sampler_timesteps"]
    assert ts == list(range(38, -1, -2))  # 40 steps spaced by 2 ("leading" spacing), descending
    short = VariantSampler({**v.cfg, "sampler_timesteps": ts[-2:]}, v.net, v.folder)
    labels, null, w = torch.tensor([3, 7]), torch.tensor([10, 10]), model.guidance_scale
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    ab = v.alphas_cumprod
    with torch.no_grad():
        for t, ab_t, ab_next in ((2, ab[2], ab[0]), (0, ab[0], torch.tensor(1.0))):
            tt = torch.full((2,), t)
            eps = model.ema(x, tt, null) + w * (model.ema(x, tt, labels) - model.ema(x, tt, null))
            x0 = ((x - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)
            eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    assert torch.allclose(short.sample(2, labels=labels, seed=5), (x + 1) / 2, atol=1e-5)


def test_decoder_student_is_closer_to_the_teacher_than_an_untrained_one(vae_run):
    model = load_model(vae_run.model_ckpt)
    teacher = teacher_network(model)
    spec = {"arch": "mlp", "width": 256, "depth": 2}
    trained, _ = Dst.distill_decoder(teacher, 16, 0, spec, [1, 8, 8], width_ratio=0.25, iters=300, seed=0)
    untrained, _ = Dst.distill_decoder(teacher, 16, 0, spec, [1, 8, 8], width_ratio=0.25, iters=0, seed=0)
    gap, base = Dst.decoder_gap(trained, teacher, 16, 0), Dst.decoder_gap(untrained, teacher, 16, 0)
    assert gap < 0.75 * base, (gap, base)  # measured: 0.53 x


def test_diffusion_student_is_closer_to_its_teacher_than_the_weights_it_started_from(tmp_path, d32, train_ddpm):
    """student-4 distilled from DDIM-8: its single steps land nearer the teacher's double steps
    than those of the untrained student (the teacher's weights on the student's levels), on
    fresh noise; and the built variant samples on every other level of DDIM-8."""
    model = train_ddpm(d32.x("members"), 150, timesteps=40)
    run = RunFolder(tmp_path)
    build_variants(run, model, d32.x("members"), names=["fp32", "student-4"], start_steps=8, distill_iters=100)
    student = load_variant(run, "student-4")
    levels = model.sample_timesteps("ddim", 8)
    assert student.cfg["sampler_timesteps"] == levels[::2]
    x0, ab = model.to_model_space(d32.x("members")), model.alphas_cumprod
    teacher = Dst.guided(model.ema, 0, None)
    gap = Dst.distillation_gap(teacher, student.net, levels, ab, x0, None, clamp=True)
    base = Dst.distillation_gap(teacher, model.ema, levels, ab, x0, None, clamp=True)
    assert gap < 0.75 * base, (gap, base)  # measured: 0.53 x


def test_missing_variant_names_it_and_lists_the_available(built, tmp_path):
    run, _, _ = built["vae"]
    with pytest.raises(VariantError, match=r"variant 'ddim-5' not found in .*available: fp32, int8"):
        load_variant(run.path, "ddim-5")
    with pytest.raises(VariantError, match=r"available: none \(run the cost_latency notebook"):
        load_variant(tmp_path, "fp32")


def test_bad_requests_are_refused_with_the_reason(built, digits):
    vae_run, _, _ = built["vae"]
    with pytest.raises(ValueError, match="unconditional"):
        load_variant(vae_run, "fp32").sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one network evaluation"):
        load_variant(vae_run, "fp32").sample(2, steps=10)
    crun, _, _ = built["cddpm"]
    with pytest.raises(ValueError, match=r"labels: expected integers of shape \(2,\) in \[0, 10\)"):
        load_variant(crun, "fp32").sample(2, labels=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="distilled for exactly 4 steps"):
        load_variant(crun, "student-4").sample(2, steps=8)
    assert load_variant(crun, "fp32").sample(2, steps=5).shape == (2, 1, 8, 8)  # fp32: any step count
    status = build_variants(crun, built["cddpm"][1], names=["fp32", "student-4"])  # no training records
    assert status["student-4"] == "distillation needs training records and their labels (x_train, y_train)"
    with pytest.raises(VariantError, match=r"unknown variant\(s\) \['fp16'\]"):
        build_variants(vae_run, built["vae"][1], torch.zeros(4, 1, 8, 8), names=["fp16"])


def test_variant_folders_are_replaced_whole(built):
    run, model, _ = built["vae"]
    folder = run.artifacts / "variants"
    before = (folder / "int8" / "variant.json").read_text()
    build_variants(run, model, torch.zeros(4, 1, 8, 8), names=["int8"])
    assert (folder / "int8" / "variant.json").read_text() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert np.isfinite(load_variant(run, "int8").sample(2).numpy()).all()
