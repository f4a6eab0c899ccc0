"""Small helpers shared by the models (not a base class: each model stays readable on its own)."""

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
        the training history reads); only the names in ``logged`` also go through ``module.log``
        (each ``self.log`` call costs Lightning ~1-2 ms, and EarlyStopping/`trainer.validate`
        need only ``val_loss``).
        """
        sync = module.trainer.world_size > 1
        for k, v in self._sums.get(stage, {}).items():
            name, mean = f"{stage}_{k}", v / self._counts[stage][k]
            module.epoch_metrics[name] = mean
            if name in logged:
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
