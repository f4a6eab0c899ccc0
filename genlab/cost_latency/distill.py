"""Distilled students: fewer sampling steps for a DDPM, a narrower network for a VAE/GAN.

**Progressive distillation** (Salimans & Ho 2022). A student initialised with the teacher's
weights learns to do in one deterministic DDIM step what the teacher does in two: from
``z_s = α_s x + σ_s ε`` (x a training record) the teacher takes two DDIM steps ``s → s' → s''``;
the student's target is the clean record that one DDIM step ``s → s''`` would need to land on
the same point, ``x̃ = (z_s'' − (σ_s''/σ_s) z_s) / (α_s'' − (σ_s''/σ_s) α_s)`` (``x̃ = z_s''``
when ``s''`` is the clean end). Loss: ``max(SNR_s, 1) · ‖x̂_s − x̃‖²`` ("truncated SNR"
weighting, the paper's choice for ε-predicting students), with ``x̂_s`` the student's clean
estimate from its ε. The student's N levels are every other level of its teacher's 2N, starting
at the same top level, so both start from the same noise. Stages halve the steps: the model's
fp32 denoiser in DDIM at ``start_steps`` teaches a student at half as many, which teaches the
next, down to 4. A class-conditional teacher is distilled *with* its classifier-free guidance
(Meng et al. 2023): the student sees the label and reproduces the guided sampler in one pass.

**Decoder students** (VAE/GAN): a decoder of the same architecture at ``width_ratio`` × the
width, trained on fresh latents z ~ N(0, I) (labels drawn uniformly when conditional) to match
the teacher's outputs on the same latents: cross-entropy against the teacher's pixel
probabilities for image models (sigmoid outputs), squared error otherwise.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genlab.cost_latency.backends import DecoderHead
from genlab.models._common import with_code
from genlab.models.backbones import build_decoder
from genlab.models.diffusion import ddim_step


# ------------------------------------------------------------------------------ decoders
def distill_decoder(teacher: DecoderHead, latent_dim: int, n_classes: int, spec: dict, data_shape, *,
                    width_ratio: float, iters: int, batch: int = 256, lr: float = 2e-3,
                    seed: int = 0) -> tuple[DecoderHead, dict]:
    """A narrower ``DecoderHead`` trained to reproduce ``teacher`` on the same latents; returns it
    and its network spec (for variant.json)."""
    width = max(8, int(round(spec["width"] * width_ratio)))
    student_spec = {**spec, "width": width}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    student = DecoderHead(build_decoder(spec["arch"], latent_dim + n_classes, data_shape, width, spec["depth"]),
                          sigmoid=teacher.sigmoid)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))
    teacher.eval()
    for _ in range(int(iters)):
        z = torch.randn(batch, latent_dim, generator=gen)
        code = (F.one_hot(torch.randint(0, n_classes, (batch,), generator=gen), n_classes).float()
                if n_classes else None)
        zc = with_code(z, code)
        with torch.no_grad():
            target = teacher(zc)
        out = student.decoder(zc)
        loss = (F.binary_cross_entropy_with_logits(out, target) if student.sigmoid
                else F.mse_loss(out, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return student.eval(), student_spec


def decoder_gap(a: nn.Module, b: nn.Module, latent_dim: int, n_classes: int, n: int = 512,
                seed: int = 1) -> float:
    """Mean squared difference of two decoder heads' outputs on the same ``n`` latents."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_dim, generator=gen)
    code = F.one_hot(torch.randint(0, n_classes, (n,), generator=gen), n_classes).float() if n_classes else None
    with torch.no_grad():
        return float((a(with_code(z, code)) - b(with_code(z, code))).pow(2).mean())


# ------------------------------------------------------------------------------ diffusion
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def guided(net: nn.Module, n_classes: int, w: float | None) -> EpsFn:
    """ε of ``net`` with classifier-free guidance weight ``w`` (the DDPM's sampler's ε)."""
    def eps(x, t, labels):
        if labels is None:
            return net(x, t)
        null = torch.full_like(labels, n_classes)
        if w == 0:
            return net(x, t, null)
        if w == 1:
            return net(x, t, labels)
        eps_c, eps_u = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return eps_u + w * (eps_c - eps_u)
    return eps


def direct(net: nn.Module) -> EpsFn:
    """ε of a distilled student: one pass, with the label when it has one."""
    return lambda x, t, labels: net(x, t) if labels is None else net(x, t, labels)


def _level(ab_all: torch.Tensor, levels: list[int], j: torch.Tensor) -> torch.Tensor:
    """ᾱ at level index ``j`` of ``levels`` (index ``len(levels)``: the clean end, ᾱ = 1)."""
    padded = torch.cat([ab_all[torch.tensor(levels)], torch.ones(1)])
    return padded[j]


def two_step_target(teacher: EpsFn, z: torch.Tensor, levels: list[int], i: torch.Tensor,
                    ab_all: torch.Tensor, labels, clamp: bool) -> torch.Tensor:
    """The clean record x̃ a single DDIM step from level ``levels[i]`` to ``levels[i+2]`` needs
    to land where two teacher steps land (per record ``i``, a tensor of level indices)."""
    shape = (-1, *([1] * (z.dim() - 1)))
    ab0, ab1, ab2 = (_level(ab_all, levels, i + k).view(shape) for k in range(3))
    t0 = torch.tensor(levels)[i]
    t1 = torch.tensor(levels)[i + 1]
    with torch.no_grad():
        z1, _ = ddim_step(z, teacher(z, t0, labels), ab0, ab1, clamp=clamp)
        z2, _ = ddim_step(z1, teacher(z1, t1, labels), ab1, ab2, clamp=clamp)
    ratio = ((1 - ab2) / (1 - ab0)).sqrt()
    return (z2 - ratio * z) / (ab2.sqrt() - ratio * ab0.sqrt())


def distillation_gap(teacher: EpsFn, student: nn.Module, levels: list[int], ab_all: torch.Tensor,
                     x0: torch.Tensor, y: torch.Tensor | None, *, clamp: bool, seed: int = 1) -> float:
    """Mean squared distance between the student's one-step clean estimate and the two-step
    target, over every record of ``x0`` at every student level (fixed noise from ``seed``): the
    distillation objective without its weighting, for checking that a student learnt."""
    gen = torch.Generator().manual_seed(seed)
    shape = (-1, *([1] * (x0.dim() - 1)))
    total = 0.0
    for i0 in range(0, len(levels), 2):
        i = torch.full((len(x0),), i0)
        ab = _level(ab_all, levels, i).view(shape)
        z = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=gen)
        target = two_step_target(teacher, z, levels, i, ab_all, y, clamp)
        with torch.no_grad():
            t = torch.tensor(levels)[i]
            eps = student(z, t) if y is None else student(z, t, y)
        total += float(((z - (1 - ab).sqrt() * eps) / ab.sqrt() - target).pow(2).mean())
    return total / (len(levels) // 2)


def distill_stage(teacher: EpsFn, student: nn.Module, levels: list[int], ab_all: torch.Tensor,
                  x0: torch.Tensor, y: torch.Tensor | None, *, iters: int, batch: int, lr: float,
                  clamp: bool, gen: torch.Generator) -> list[int]:
    """Train ``student`` (in place) to halve the teacher's ``levels`` (an even count, descending);
    returns the student's levels."""
    if len(levels) % 2:
        raise ValueError(f"progressive distillation halves an even number of steps, got {len(levels)}")
    half = len(levels) // 2
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, iters))
    student.train()
    shape = (-1, *([1] * (x0.dim() - 1)))
    for _ in range(int(iters)):
        pick = torch.randint(0, len(x0), (batch,), generator=gen)
        x, labels = x0[pick], None if y is None else y[pick]
        i = 2 * torch.randint(0, half, (batch,), generator=gen)
        ab = _level(ab_all, levels, i).view(shape)
        z = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=gen)
        target = two_step_target(teacher, z, levels, i, ab_all, labels, clamp)
        t = torch.tensor(levels)[i]
        eps = student(z, t) if labels is None else student(z, t, labels)
        x_hat = (z - (1 - ab).sqrt() * eps) / ab.sqrt()
        weight = (ab / (1 - ab)).clamp(min=1.0)
        loss = (weight * (x_hat - target).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    student.eval()
    return levels[::2]


def progressive_distillation(teacher_net: nn.Module, n_classes: int, guidance_scale: float | None,
                             start_levels: list[int], ab_all: torch.Tensor, x0: torch.Tensor,
                             y: torch.Tensor | None, *, keep: tuple[int, ...], iters: int,
                             batch: int = 64, lr: float = 3e-4, clamp: bool = True,
                             seed: int = 0) -> dict[int, tuple[nn.Module, list[int]]]:
    """Halve ``start_levels`` stage by stage down to ``min(keep)`` steps; return the students whose
    step count is in ``keep`` with their levels. ``x0``: training records in model space."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher: EpsFn = guided(teacher_net, n_classes, guidance_scale)
    net, levels, out = teacher_net, list(start_levels), {}
    while len(levels) > min(keep):
        student = copy.deepcopy(net).requires_grad_(True)
        levels = distill_stage(teacher, student, levels, ab_all, x0, y, iters=iters, batch=batch,
                               lr=lr, clamp=clamp, gen=gen)
        if len(levels) in keep:
            out[len(levels)] = (student, levels)
        net, teacher = student, direct(student)
    return out
