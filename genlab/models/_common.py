"""Small helpers shared by the models (no base class: each model stays readable on its own;
the label API of the class-conditional models is one mixin, :class:`ClassConditional`)."""

from __future__ import annotations

import contextlib

import torch


class EpochMeans:
    """Record-weighted epoch means accumulated as tensors, logged once per epoch.

    Avoids a ``self.log`` call and a host sync per step (Lightning's per-step logging costs more
    than a small model's step). Separate accumulators per stage because validation runs inside
    the training epoch.
    """

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def reset(self, stage: str) -> None:
        self._sums[stage], self._counts[stage] = {}, {}

    def add(self, stage: str, n: int, **terms: torch.Tensor) -> None:
        sums = self._sums.setdefault(stage, {})
        counts = self._counts.setdefault(stage, {})
        for k, v in terms.items():
            v = v.detach() * n
            sums[k] = sums[k] + v if k in sums else v
            counts[k] = counts.get(k, 0) + n

    def log(self, module, stage: str, logged=()) -> None:
        """Publish the epoch means of ``stage`` and reset.

        Every mean goes to ``module.epoch_metrics[f"{stage}_{name}"]`` (a dict of 0-d tensors that
        the training history reads); only the names in ``logged`` also reach
        ``trainer.callback_metrics`` (EarlyStopping and `trainer.validate` need only
        ``val_loss``). Within a single-process ``fit`` they are put there directly: a
        ``self.log`` call costs Lightning ~1-2 ms (a result object per key, moved and reduced each
        epoch), a measurable share of a small model's epoch. `trainer.validate` (which returns
        logged metrics) and multi-process runs (whose means must be reduced over ranks) still go
        through ``module.log``.
        """
        trainer = module.trainer
        sync = trainer.world_size > 1
        direct = not sync and trainer.state.fn == "fit"
        for k, v in self._sums.get(stage, {}).items():
            name, mean = f"{stage}_{k}", v / self._counts[stage][k]
            module.epoch_metrics[name] = mean
            if name in logged and direct:
                trainer.callback_metrics[name] = mean
            elif name in logged:
                module.log(name, mean, on_step=False, on_epoch=True, sync_dist=sync)
        self.reset(stage)


def randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU (same numbers on every device), moved to ``device``."""
    eps = torch.randn(shape, generator=generator)
    return eps if eps.device == device else eps.to(device)


def seeded(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def eval_no_grad(module: torch.nn.Module):
    """Eval mode and no gradients inside; the previous mode is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def is_conditional(model) -> bool:
    """Whether ``model`` generates by class (``n_classes > 0``); any object, so stubs work too."""
    return getattr(model, "n_classes", 0) > 0


class ClassConditional:
    """The label API shared by the class-conditional models (a mixin for the LightningModules).

    ``n_classes == 0``: unconditional; nothing is registered, so such a model keeps exactly the
    parameters, buffers and RNG draws it had before conditioning existed. ``n_classes >= 2``: a
    ``class_prior`` buffer (saved in checkpoints) from which unlabelled sampling draws its labels.
    """

    n_classes: int = 0

    def init_classes(self, n_classes: int) -> int:
        """Validate ``n_classes``, set ``self.n_classes`` and (conditional only) the prior buffer."""
        if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 0 or n_classes == 1:
            raise ValueError(f"n_classes must be 0 (unconditional) or an int >= 2, got {n_classes!r}")
        self.n_classes = int(n_classes)
        if self.n_classes:
            self.register_buffer("class_prior", torch.full((self.n_classes,), 1.0 / self.n_classes))
        return self.n_classes

    def _require_conditional(self, what: str) -> None:
        if not self.n_classes:
            raise ValueError(f"{what}: this {self.model_kind} is unconditional (n_classes=0) and has no labels")

    def set_class_prior(self, counts) -> None:
        """Set the label distribution of unlabelled sampling from per-class counts or shares."""
        self._require_conditional("set_class_prior")
        c = torch.as_tensor(counts, dtype=torch.float64).flatten()
        if c.shape != (self.n_classes,) or not torch.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
            raise ValueError(f"set_class_prior: expected {self.n_classes} finite non-negative counts, not all "
                             f"zero; got {torch.as_tensor(counts).tolist()!r}")
        self.class_prior.copy_((c / c.sum()).to(self.class_prior))

    def sample_labels(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` labels ``(n,)`` (int64, CPU) drawn from ``class_prior``.

        Own generator seeded with ``seed`` (``None``: the global RNG), separate from the sampling
        noise, so ``sample(n, seed=s) == sample(n, seed=s, labels=sample_labels(n, s))``.
        """
        self._require_conditional("sample_labels")
        return torch.multinomial(self.class_prior.cpu(), int(n), replacement=True, generator=seeded(seed))

    def check_labels(self, labels, n: int, *, required: bool = True) -> torch.Tensor | None:
        """``labels`` as an int64 ``(n,)`` tensor on the model's device, or ``None``.

        Unconditional models refuse labels; conditional ones need them when ``required``.
        """
        if not self.n_classes:
            if labels is not None:
                raise ValueError(f"labels given, but this {self.model_kind} is unconditional (n_classes=0): "
                                 "build it with n_classes >= 2 to condition on labels")
            return None
        if labels is None:
            if required:
                raise ValueError(f"labels: this {self.model_kind} is class-conditional "
                                 f"(n_classes={self.n_classes}) and needs labels of shape ({n},)")
            return None
        t = torch.as_tensor(labels)
        expected = f"expected integers of shape ({n},) in [0, {self.n_classes})"
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.shape != (n,):
            raise ValueError(f"labels: {expected}, given dtype {t.dtype} shape {tuple(t.shape)}")
        if n and (t.min() < 0 or t.max() >= self.n_classes):
            raise ValueError(f"labels: {expected}, given values in [{int(t.min())}, {int(t.max())}]")
        return t.to(device=self.device, dtype=torch.long)

    def batch_labels(self, batch) -> torch.Tensor | None:
        """The labels ``batch[1]`` of an ``(x, y)`` training batch (``None`` when unconditional)."""
        if not self.n_classes:
            return None
        y = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if y is None or (y.numel() and (y.min() < 0 or y.max() >= self.n_classes)):
            found = "no labels" if y is None else f"labels in [{int(y.min())}, {int(y.max())}]"
            raise ValueError(f"this {self.model_kind} is class-conditional (n_classes={self.n_classes}) and "
                             f"needs labelled data: batch labels in [0, {self.n_classes}), got {found} "
                             "(-1 marks unlabelled records)")
        return y.to(dtype=torch.long)

    def one_hot(self, labels: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """One-hot codes ``(N, n_classes)`` of checked labels (``None`` passes through)."""
        return None if labels is None else torch.nn.functional.one_hot(labels, self.n_classes).to(dtype)

    def sample_latent(self, n: int, seed: int | None, labels, decode) -> torch.Tensor:
        """``decode(z, labels)`` at ``n`` draws of z ~ N(0, I) (``latent_dim``) in eval mode without
        gradients (the mode is restored): the VAE's and the GAN's ``sample``. ``seed`` draws z
        from a private generator (same seed → same samples, global RNG untouched); ``None`` uses
        the global torch RNG. Conditional: ``labels`` ``(n,)``, or drawn with
        ``sample_labels(n, seed)`` when ``None``."""
        labels = self.labels_for_sampling(int(n), seed, labels)
        z = randn((int(n), self.latent_dim), seeded(seed), self.device)
        with eval_no_grad(self):
            return decode(z, labels)

    def labels_for_sampling(self, n: int, seed: int | None, labels) -> torch.Tensor | None:
        """``labels`` checked, or drawn with :meth:`sample_labels` (same ``seed``) when ``None``."""
        if self.n_classes and labels is None:
            labels = self.sample_labels(n, seed)
        return self.check_labels(labels, n)


def with_code(v: torch.Tensor, code: torch.Tensor | None, *, as_channels: bool = False) -> torch.Tensor:
    """``v`` with a per-record code ``(N, K)`` appended: as constant channels for a conv network's
    images ``(N, C, H, W)`` (``as_channels``), else as columns after flattening ``v``.
    ``code=None`` returns ``v`` unchanged (unconditional models)."""
    if code is None:
        return v
    if as_channels:
        return torch.cat([v, code[:, :, None, None].expand(-1, -1, *v.shape[-2:])], dim=1)
    return torch.cat([v.flatten(1), code], dim=1)
