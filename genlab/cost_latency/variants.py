"""Cheaper variants of a run's model, written under ``<run>/artifacts/variants/<name>/``, and the
one loader every consumer uses: ``load_variant(run_dir, name)``.

A loaded variant has ``.sample(n, labels=None, seed=0, steps=None) -> (n, C, H, W)`` float32
tensor (in [0, 1] for images) and the attributes ``kind`` (``vae``/``gan``/``ddpm``),
``variant`` (its name), ``conditional`` and ``num_classes`` (0 when unconditional). Sampling
draws labels and noise exactly as the model's own ``sample`` does (labels from the class prior
with a generator seeded by ``seed``, noise from another one), so the ``fp32`` variant returns
the model's samples bit for bit and every variant is compared on the same latents.

Variants (``VARIANT_NAMES``; a model kind builds those that apply to it):

- ``fp32``: the reference, eager PyTorch in float32 with the model's own sampler (DDPM: its
  ``sampler``/``sampling_steps``, DDIM in 50 steps by default). Servers load this one.
- ``int8``, ``bf16``, ``onnx``, ``onnx-int8``: the same network in another backend
  (:mod:`.backends`); ``bf16`` only where the CPU has native bf16 instructions.
- DDPM: ``ddim-20``, ``ddim-10``, ``ddim-5`` (the fp32 denoiser in fewer deterministic DDIM
  steps; DDIM-50 is the reference itself) and ``student-8``, ``student-4``: progressive
  distillation (Salimans & Ho 2022), see :mod:`.distill`.
- VAE/GAN: ``student``: a narrower decoder/generator trained to reproduce the teacher's outputs
  on the same latents.

Each folder holds ``variant.json`` (what to rebuild, the sampler's settings) and the network's
weights (``weights.pt`` read with ``weights_only=True``, or ``model.onnx``); it is written to a
temporary folder beside it and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from genlab.cost_latency import backends as B
from genlab.models._common import randn, seeded, with_code
from genlab.models.backbones import build_decoder
from genlab.models.denoisers import MLPDenoiser, UNet
from genlab.models.diffusion import alpha_bar_schedule, ddim_step
from genlab.ops.runs import RunFolder, atomic_write_text

FORMAT = 1
BACKEND_VARIANTS = ("fp32", "int8", "bf16", "onnx", "onnx-int8")
DDIM_VARIANTS = {"ddim-20": 20, "ddim-10": 10, "ddim-5": 5}
STUDENT_STEPS = (8, 4)
VARIANT_NAMES = (*BACKEND_VARIANTS, *DDIM_VARIANTS, *(f"student-{s}" for s in STUDENT_STEPS), "student")


class VariantError(ValueError):
    """A variant is missing or unusable; the message names it and the variants available."""


def variants_dir(run_dir) -> Path:
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir, create=False)
    return run.artifacts / "variants"


def available_variants(run_dir) -> list[str]:
    folder = variants_dir(run_dir)
    found = [p.name for p in folder.iterdir() if (p / "variant.json").is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda n: (VARIANT_NAMES.index(n) if n in VARIANT_NAMES else 99, n))


# ------------------------------------------------------------------------------ networks
def network_spec(model) -> dict[str, Any]:
    """What rebuilds the network a model samples with (plain types, for variant.json)."""
    hp = model.hparams
    if model.model_kind == "ddpm":
        return {"type": hp.arch, "width": hp.width}
    return {"type": "decoder", "arch": hp.arch, "width": hp.width, "depth": hp.depth}


def build_network(spec: dict[str, Any], data_shape, n_classes: int, latent_dim: int | None) -> nn.Module:
    if spec["type"] == "decoder":
        decoder = build_decoder(spec["arch"], latent_dim + n_classes, data_shape, spec["width"], spec["depth"])
        return B.DecoderHead(decoder, sigmoid=spec["sigmoid"])
    return (UNet if spec["type"] == "unet" else MLPDenoiser)(data_shape, spec["width"], n_classes)


def teacher_network(model) -> nn.Module:
    """The fp32 network the model samples with: the DDPM's EMA denoiser, or decoder (the GAN's
    EMA generator) + activation."""
    if model.model_kind == "ddpm":
        return model.ema
    if model.model_kind == "vae":
        return B.DecoderHead(model.decoder, sigmoid=model.likelihood == "bernoulli")
    ema = getattr(model, "generator_ema", None)  # a GAN samples from its EMA copy when it keeps one
    return B.DecoderHead(model.generator if ema is None else ema, sigmoid=model.is_image)


def base_config(model) -> dict[str, Any]:
    """The variant.json fields every variant of ``model`` shares."""
    k = int(model.n_classes)
    spec = network_spec(model)
    cfg: dict[str, Any] = {"format": FORMAT, "kind": model.model_kind, "data_shape": list(model.data_shape),
                           "num_classes": k, "network": spec,
                           "class_prior": model.class_prior.tolist() if k else None}
    if model.model_kind == "ddpm":
        hp = model.hparams
        ts = model.sample_timesteps(hp.sampler, hp.sampling_steps)
        cfg.update(timesteps_total=hp.timesteps, schedule=hp.schedule, sampler_timesteps=ts,
                   eta=1.0 if hp.sampler == "ddpm" else 0.0, flexible_steps=True,
                   sampler=hp.sampler, guidance_scale=float(model.guidance_scale) if k else None,
                   is_image=bool(model.is_image))
    else:
        spec["sigmoid"] = teacher_network(model).sigmoid
        cfg["latent_dim"] = int(model.latent_dim)
    return cfg


def in_dim(cfg: dict[str, Any]) -> int:
    return (cfg.get("latent_dim") or 0) + cfg["num_classes"]


def write_variant(run_dir, name: str, cfg: dict[str, Any], network: nn.Module) -> Path:
    """Store ``network`` (fp32 weights) in backend ``cfg['backend']`` as variant ``name``:
    written to a temporary folder, then renamed over any earlier one."""
    folder = variants_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, final = folder / f".{name}.tmp", folder / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        B.save_network(tmp, cfg["backend"], network, kind="decoder" if cfg["kind"] != "ddpm" else "denoiser",
                       data_shape=cfg["data_shape"], in_dim=in_dim(cfg), conditional=cfg["num_classes"] > 0)
        atomic_write_text(tmp / "variant.json", json.dumps({**cfg, "variant": name}, indent=1, sort_keys=True) + "\n")
        aside = folder / f".{name}.old"
        shutil.rmtree(aside, ignore_errors=True)
        if final.exists():
            final.rename(aside)
        tmp.rename(final)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ------------------------------------------------------------------------------ samplers
class VariantSampler:
    """A loaded variant (see the module docstring for the interface)."""

    def __init__(self, cfg: dict[str, Any], net: Callable[..., torch.Tensor], folder: Path):
        self.cfg, self.net, self.folder = cfg, net, folder
        self.kind, self.variant, self.backend = cfg["kind"], cfg["variant"], cfg["backend"]
        self.num_classes = int(cfg["num_classes"])
        self.conditional = self.num_classes > 0
        self.data_shape = tuple(cfg["data_shape"])
        if self.kind == "ddpm":
            self.alphas_cumprod = alpha_bar_schedule(cfg["schedule"], cfg["timesteps_total"]).float()

    def __repr__(self) -> str:
        return f"<variant {self.variant!r} of a {self.kind} ({self.backend})>"

    @property
    def evaluations_per_sample(self) -> int:
        """Network evaluations per sample (classifier-free guidance with w ∉ {0, 1} runs two)."""
        if self.kind != "ddpm":
            return 1
        w = self.cfg.get("guidance_scale")
        return len(self.cfg["sampler_timesteps"]) * (2 if self.conditional and w not in (0.0, 1.0) else 1)

    def labels(self, n: int, seed: int | None, labels) -> torch.Tensor | None:
        """Checked labels, or ``n`` drawn from the class prior as the model draws them."""
        if not self.conditional:
            if labels is not None:
                raise ValueError(f"labels given, but variant {self.variant!r} is of an unconditional "
                                 f"{self.kind}")
            return None
        if labels is None:
            prior = torch.tensor(self.cfg["class_prior"], dtype=torch.float32)
            return torch.multinomial(prior, n, replacement=True, generator=seeded(seed))
        t = torch.as_tensor(labels)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.shape != (n,) or (
                n and (t.min() < 0 or t.max() >= self.num_classes)):
            raise ValueError(f"labels: expected integers of shape ({n},) in [0, {self.num_classes}), given "
                             f"dtype {t.dtype} shape {tuple(t.shape)}")
        return t.long()

    def timesteps(self, steps: int | None) -> list[int]:
        cfg = self.cfg
        if steps is None or steps == len(cfg["sampler_timesteps"]):
            return list(cfg["sampler_timesteps"])
        T = cfg["timesteps_total"]
        if not cfg["flexible_steps"]:
            raise ValueError(f"steps: variant {self.variant!r} was distilled for exactly "
                             f"{len(cfg['sampler_timesteps'])} steps, got {steps!r}")
        if int(steps) != steps or not 1 <= steps <= T:
            raise ValueError(f"steps must be None or an int in [1, {T}], got {steps!r}")
        ts = (torch.arange(int(steps), dtype=torch.float64) * T / int(steps)).floor().long()
        return ts.flip(0).tolist()

    def sample(self, n: int, labels=None, seed: int | None = 0, steps: int | None = None) -> torch.Tensor:
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        labels = self.labels(n, seed, labels)
        gen = seeded(seed)
        if self.kind != "ddpm":
            if steps is not None:
                raise ValueError(f"steps: a {self.kind} samples in one network evaluation; "
                                 f"variant {self.variant!r} takes steps=None, got {steps!r}")
            z = randn((n, self.cfg["latent_dim"]), gen, torch.device("cpu"))
            code = None if labels is None else nn.functional.one_hot(labels, self.num_classes).float()
            return self.net(with_code(z, code))
        return self.denoise(n, labels, gen, self.timesteps(steps))

    def eps(self, x, t, labels) -> torch.Tensor:
        """Classifier-free guided ε as ``DDPM.guided_eps`` computes it."""
        if labels is None:
            return self.net(x, t)
        w, null = float(self.cfg["guidance_scale"]), torch.full_like(labels, self.num_classes)
        if w == 0:
            return self.net(x, t, null)
        if w == 1 or not self.cfg.get("guided", True):
            return self.net(x, t, labels)
        eps_c, eps_u = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return eps_u + w * (eps_c - eps_u)

    def denoise(self, n: int, labels, gen, ts: list[int]) -> torch.Tensor:
        """The generalised DDIM loop of ``DDPM.sample`` over the timesteps ``ts``."""
        shape, ab_all, eta = (n, *self.data_shape), self.alphas_cumprod, float(self.cfg["eta"])
        clamp = bool(self.cfg["is_image"])
        x = randn(shape, gen, torch.device("cpu"))
        for i, t in enumerate(ts):
            ab = ab_all[t]
            ab_prev = ab_all[ts[i + 1]] if i + 1 < len(ts) else torch.ones(())
            eps = self.eps(x, torch.full((n,), t, dtype=torch.long), labels)
            x, sigma = ddim_step(x, eps, ab, ab_prev, eta=eta, clamp=clamp)
            if eta > 0 and i + 1 < len(ts):
                x = x + sigma * randn(shape, gen, torch.device("cpu"))
        return ((x + 1) / 2).clamp(0, 1) if clamp else x


def reference_variant(model) -> VariantSampler:
    """The ``fp32`` variant of an in-memory model, without writing anything: the same sampler
    ``load_variant(run, "fp32")`` returns after ``build_variants`` (a server can serve a run
    that has no variants yet through it)."""
    cfg = {**base_config(model.eval()), "backend": "fp32", "variant": "fp32"}
    return VariantSampler(cfg, B.no_grad_callable(teacher_network(model)), None)


def load_variant(run_dir, name: str) -> VariantSampler:
    """Variant ``name`` of the run ``run_dir`` (a run folder path or :class:`RunFolder`)."""
    folder = variants_dir(run_dir) / str(name)
    cfg_path = folder / "variant.json"
    if not cfg_path.is_file():
        have = available_variants(run_dir)
        raise VariantError(
            f"variant {name!r} not found in {variants_dir(run_dir)}; available: "
            + (", ".join(have) if have else "none (run the cost_latency notebook: genlab run --only "
                                             "cost_latency --name <run>)"))
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT:
        raise VariantError(f"variant {name!r} in {folder} was written by another genlab version "
                           f"(format {cfg.get('format')!r}, expected {FORMAT}); rebuild the variants")
    skeleton = build_network(cfg["network"], cfg["data_shape"], cfg["num_classes"], cfg.get("latent_dim"))
    return VariantSampler(cfg, B.load_network(folder, cfg["backend"], skeleton), folder)


# ------------------------------------------------------------------------------ building
def build_variants(run_dir, model, x_train: torch.Tensor | None = None, y_train: torch.Tensor | None = None, *,
                   names=None, seed: int = 0, distill_iters: int = 150, start_steps: int = 16,
                   decoder_iters: int = 600, student_width_ratio: float = 0.25) -> dict[str, str]:
    """Write every variant of ``model`` that applies (or those in ``names``) under
    ``<run>/artifacts/variants/``; return ``{name: "built" | reason it was not}``.

    ``x_train`` (``y_train``): the records distillation trains on (the run's members, in data
    space; labels needed by a conditional DDPM); only the DDPM students need them. ``distill_iters``: iterations per halving stage
    of progressive distillation, from DDIM at ``start_steps`` down to 4 steps; ``decoder_iters``:
    iterations of a VAE/GAN student decoder at ``student_width_ratio`` × the width."""
    from genlab.cost_latency import distill as Dst

    model = model.eval()
    base, teacher = base_config(model), teacher_network(model)
    wanted = list(VARIANT_NAMES if names is None else names)
    unknown = [n for n in wanted if n not in VARIANT_NAMES]
    if unknown:
        raise VariantError(f"unknown variant(s) {unknown}; expected names from {list(VARIANT_NAMES)}")
    status: dict[str, str] = {}
    is_ddpm = model.model_kind == "ddpm"
    for name in wanted:
        if name in BACKEND_VARIANTS:
            if name == "bf16" and not B.cpu_has_bf16():
                status[name] = "this CPU has no native bf16 instructions (avx512_bf16/amx_bf16)"
                continue
            write_variant(run_dir, name, {**base, "backend": name}, teacher)
        elif name in DDIM_VARIANTS or name.startswith("student-"):
            if not is_ddpm:
                status[name] = f"diffusion only (this run's model is a {model.model_kind})"
                continue
            if name in DDIM_VARIANTS:
                steps = DDIM_VARIANTS[name]
                if steps >= len(base["sampler_timesteps"]) or steps > model.timesteps:
                    status[name] = (f"not cheaper than the reference's {len(base['sampler_timesteps'])} "
                                    "sampling steps")
                    continue
                write_variant(run_dir, name, {**base, "backend": "fp32", "eta": 0.0, "flexible_steps": False,
                                              "sampler_timesteps": model.sample_timesteps("ddim", steps)}, teacher)
                status[name] = "built"
            continue  # students: all of them below, in one chain of halving stages
        elif name == "student" and is_ddpm:
            status[name] = "VAE/GAN only (the DDPM's students are student-8 and student-4)"
            continue
        else:  # the VAE/GAN student decoder
            student, spec = Dst.distill_decoder(teacher, base["latent_dim"], base["num_classes"], base["network"],
                                                base["data_shape"], width_ratio=student_width_ratio,
                                                iters=decoder_iters, seed=seed)
            write_variant(run_dir, name, {**base, "backend": "fp32", "network": spec}, student)
        status.setdefault(name, "built")
    wanted_students = tuple(int(n.split("-")[1]) for n in wanted if n.startswith("student-") and n not in status)
    if wanted_students:
        if start_steps > model.timesteps or start_steps < 2 * max(wanted_students):
            for s in wanted_students:
                status[f"student-{s}"] = (f"start_steps={start_steps} must be in [2 x {max(wanted_students)}, "
                                          f"timesteps={model.timesteps}]")
        elif x_train is None or (base["num_classes"] and y_train is None):
            for s in wanted_students:
                status[f"student-{s}"] = ("distillation needs training records" +
                                          (" and their labels" if base["num_classes"] else "") + " (x_train, y_train)")
        else:
            x0 = model.to_model_space(torch.as_tensor(x_train, dtype=torch.float32))
            y = torch.as_tensor(y_train).long() if base["num_classes"] else None
            students = Dst.progressive_distillation(
                teacher, base["num_classes"], base.get("guidance_scale"), model.sample_timesteps("ddim", start_steps),
                model.alphas_cumprod.float(), x0, y, keep=wanted_students, iters=distill_iters,
                clamp=model.is_image, seed=seed)
            for s, (net, levels) in students.items():
                write_variant(run_dir, f"student-{s}", {**base, "backend": "fp32", "eta": 0.0, "flexible_steps": False,
                                                        "guided": False, "sampler_timesteps": levels,
                                                        "distilled_from_steps": start_steps}, net)
                status[f"student-{s}"] = "built"
    return {n: status[n] for n in wanted}
