"""What the server samples from: a run's model (``fp32``) or one of its variants, behind one API.

``resolve_source(source)`` turns what the user typed into a run folder: a path to
``reports/<name>`` now; ``models:/NAME@alias`` once a model registry registers a resolver with
:func:`register_resolver` (until then such a source is refused with a message saying so).

``load_sampler(run_dir, variant)`` returns a :class:`Sampler`:
``.sample(n, labels, seed, steps) -> (n, C, H, W)`` in [0, 1] plus ``.kind``, ``.conditional``,
``.num_classes``, ``.variant``. ``fp32`` is the run's own checkpoint; any other name is delegated
to ``genlab.cost_latency.variants.load_variant(run_dir, name)`` (imported only then).

Dynamic batching needs one model call for several requests whose outputs must not depend on
what they were batched with. :meth:`Sampler.sample_many` therefore draws every request's noise
from its own generator seeded with that request's seed, in the order the model's own ``sample``
draws it, concatenates the noise and runs the network once. A request answered in a batch gets
the samples ``model.sample(n, seed=seed, labels=labels, steps=steps)`` gives alone (up to float
rounding of the batched matrix products; tests/serve checks both).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genlab.models import load_model
from genlab.models._common import eval_no_grad, randn, seeded
from genlab.models.checkpoint import read_checkpoint

__all__ = ["Draw", "Sampler", "SourceError", "register_resolver", "resolve_source", "load_sampler"]

VARIANTS_MODULE = "genlab.cost_latency.variants"
_RESOLVERS: dict[str, Callable[[str], Path]] = {}


class SourceError(ValueError):
    """A source, run folder or variant cannot be served; the message says which and why."""


def register_resolver(prefix: str, resolve: Callable[[str], Path]) -> None:
    """Let sources starting with ``prefix`` (``"models:/"``) resolve through ``resolve`` to a run folder."""
    _RESOLVERS[prefix] = resolve


def resolve_source(source: str | Path) -> Path:
    """The run folder behind ``source``: a folder holding ``artifacts/model.ckpt``, or what a
    registered resolver returns for a ``scheme:/...`` source."""
    text = str(source)
    for prefix, resolve in _RESOLVERS.items():
        if text.startswith(prefix):
            return resolve_source(resolve(text))
    if text.startswith("models:/"):
        raise SourceError(f"source {text!r}: no model registry resolver is registered for "
                          "'models:/' sources; serve a run folder (reports/<name>) instead")
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise SourceError(f"source {text!r}: no such run folder")
    if not (path / "artifacts" / "model.ckpt").is_file():
        raise SourceError(f"source {text!r}: {path / 'artifacts' / 'model.ckpt'} not found; "
                          "train the run first (genlab run --only train)")
    return path


@dataclass(frozen=True)
class Draw:
    """One request's share of a model call: ``n`` records for ``labels`` (None: unconditional, or
    drawn from the class prior with ``seed``), noise from a generator seeded with ``seed``."""

    n: int
    seed: int
    labels: torch.Tensor | None = None
    steps: int | None = None


class Sampler:
    """A run's checkpoint as a sampler (variant ``fp32``)."""

    variant = "fp32"
    batches = True  # sample_many runs one network pass for all draws

    def __init__(self, run_dir: Path, model):
        self.run_dir = Path(run_dir)
        self.model = model
        self.kind: str = model.model_kind
        self.num_classes: int = int(model.n_classes)
        self.conditional: bool = self.num_classes > 0
        self.data_shape = tuple(int(s) for s in model.data_shape)
        self.timesteps: int | None = int(model.timesteps) if self.kind == "ddpm" else None

    def sample(self, n: int, labels: torch.Tensor | None = None, seed: int = 0,
               steps: int | None = None) -> torch.Tensor:
        return self.sample_many([Draw(int(n), int(seed), labels, steps)])[0]

    def prior_labels(self, n: int, seed: int) -> torch.Tensor:
        """The labels ``sample(n, None, seed)`` of a conditional model generates for."""
        return self.model.sample_labels(n, seed)

    def sample_many(self, draws: list[Draw]) -> list[torch.Tensor]:
        """Each draw's samples ``(n, *data_shape)`` in [0, 1], from one network pass per step.
        DDPM draws must share ``steps`` (the batcher groups them so)."""
        m = self.model
        labels = [m.labels_for_sampling(d.n, d.seed, d.labels) for d in draws]
        label_batch = torch.cat(labels) if self.conditional else None
        gens = [seeded(d.seed) for d in draws]
        sizes = [d.n for d in draws]
        if self.kind == "ddpm":
            out = self._ddpm(draws, gens, label_batch)
        else:
            z = torch.cat([randn((d.n, m.latent_dim), g, m.device) for d, g in zip(draws, gens)])
            decode = m.decode if self.kind == "vae" else m._generate_for_sampling  # GAN: EMA copy
            with eval_no_grad(m):
                out = decode(z, label_batch)
        return list(out.clamp(0, 1).split(sizes))

    def _ddpm(self, draws: list[Draw], gens, labels: torch.Tensor | None) -> torch.Tensor:
        """``DDPM.sample`` with the model's sampler and guidance, each draw's noise (start and
        per-step) from its own generator in the order ``DDPM.sample`` draws it."""
        from genlab.models.diffusion import ddim_step

        m = self.model
        steps = {d.steps for d in draws}
        if len(steps) != 1:
            raise ValueError(f"one model call needs one steps value, got {sorted(steps, key=str)}")
        steps = steps.pop()
        method = m.hparams.sampler
        ts = m.sample_timesteps(method, m.hparams.sampling_steps if steps is None else steps)
        eta = 1.0 if method == "ddpm" else 0.0
        shapes = [(d.n, *m.data_shape) for d in draws]
        n = sum(d.n for d in draws)
        ab_all = m.alphas_cumprod
        with eval_no_grad(m):
            x = torch.cat([randn(s, g, m.device) for s, g in zip(shapes, gens)])
            for i, t in enumerate(ts):
                ab = ab_all[t]
                ab_prev = ab_all[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=ab.device)
                eps = m.guided_eps(x, torch.full((n,), t, dtype=torch.long, device=m.device),
                                   labels, m.guidance_scale)
                x, sigma = ddim_step(x, eps, ab, ab_prev, eta=eta, clamp=m.is_image)
                if eta > 0 and i + 1 < len(ts):
                    x = x + sigma * torch.cat([randn(s, g, m.device) for s, g in zip(shapes, gens)])
            return m.to_data_space(x)


class VariantSampler:
    """A variant from ``genlab.cost_latency.variants``: its own ``.sample``, one call per request
    (``batches = False``: the batcher sends it one draw at a time)."""

    batches = False

    def __init__(self, run_dir: Path, name: str, impl: Any, info: dict[str, Any]):
        self.run_dir, self.variant, self.impl = Path(run_dir), name, impl
        self.kind = info["model_kind"]
        self.num_classes = int(info.get("n_classes", 0))
        self.conditional = self.num_classes > 0
        self.data_shape = tuple(int(s) for s in info["data_shape"])
        self.timesteps = int(info["timesteps"]) if self.kind == "ddpm" else None

    def sample(self, n: int, labels: torch.Tensor | None = None, seed: int = 0,
               steps: int | None = None) -> torch.Tensor:
        return self.impl.sample(int(n), labels, int(seed), steps)

    def prior_labels(self, n: int, seed: int) -> None:
        return None  # the variant draws them itself

    def sample_many(self, draws: list[Draw]) -> list[torch.Tensor]:
        return [self.sample(d.n, d.labels, d.seed, d.steps).clamp(0, 1) for d in draws]


def _model_info(run_dir: Path) -> dict[str, Any]:
    """The fp32 checkpoint's hyper-parameters (kind, classes, shape, timesteps) without building
    the model: what a variant of it answers for."""
    return read_checkpoint(run_dir / "artifacts" / "model.ckpt").get("hyper_parameters", {})


def load_sampler(run_dir: str | Path, variant: str = "fp32") -> Sampler | VariantSampler:
    """A sampler for the run ``run_dir``: its checkpoint (``fp32``) or the variant ``variant``."""
    run_dir = Path(run_dir)
    if variant == "fp32":
        return Sampler(run_dir, load_model(run_dir / "artifacts" / "model.ckpt"))
    files = run_dir / "artifacts" / "variants" / variant
    try:
        variants = importlib.import_module(VARIANTS_MODULE)
    except ModuleNotFoundError as exc:
        raise SourceError(f"variant {variant!r}: serving a variant other than fp32 needs "
                          f"{VARIANTS_MODULE}, which this genlab does not have ({exc})") from None
    if not files.is_dir():
        raise SourceError(f"variant {variant!r}: {files} not found; build the variant for this "
                          "run first, or serve --variant fp32")
    return VariantSampler(run_dir, variant, variants.load_variant(run_dir, variant),
                          _model_info(run_dir))
