"""Canaries for the one-run privacy audit (Steinke, Nasr & Jagielski 2023).

m crafted outlier records, each added to the training set independently with probability ½.
Crafted rather than drawn from the data set: they then change none of the data spec's pools
(``members`` stays "the data-set records trained on"), and an outlier is what a model memorises
most — the audit's bound is then as strong as m allows. Images: seeded random binary pixels
(far from every digit); other records: points drawn uniformly from a box three times the data's
range.

What was trained on = ``pools["members"]`` of the data spec **plus** the canaries whose
inclusion bit is 1. Both the records and the bits live in ``artifacts/canaries.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.data import Dataset, DataSpec
from genlab.datamodule import EpochSeededSampler, GenDataModule
from genlab.ops.runs import atomic_write_text

CANARY_FILE = "canaries.json"
_SEED_TAG = 0xCA7A


@dataclass
class Canaries:
    kind: str
    seed: int
    data_shape: list[int]
    included: list[int]  # 0/1 per canary
    records: list  # nested lists, shape (m, *data_shape)
    note: str = ("Extra training records, not part of the data set: the model was trained on "
                 "data_spec pools['members'] plus the canaries with included == 1.")

    @property
    def m(self) -> int:
        return len(self.included)

    def x(self) -> torch.Tensor:
        return torch.tensor(self.records, dtype=torch.float32).reshape(self.m, *self.data_shape)

    def included_mask(self) -> np.ndarray:
        return np.asarray(self.included, dtype=bool)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(asdict(self), sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Canaries":
        raw = json.loads(Path(path).read_text())
        return cls(**raw)


def make_canaries(ds: Dataset, m: int, seed: int) -> Canaries:
    """m seeded crafted outliers shaped like ``ds`` and their ½-probability inclusion bits."""
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"canaries: expected a positive integer, got {m!r}")
    rng = np.random.default_rng([int(seed), _SEED_TAG])
    shape = list(ds.data_shape)
    if ds.is_image:
        x = (rng.random((m, *shape)) < 0.5).astype(np.float32)
        kind = "random binary images"
    else:
        lo, hi = ds.x.min(0), ds.x.max(0)
        mid, span = (lo + hi) / 2, (hi - lo) * 1.5
        x = (mid + rng.uniform(-1, 1, (m, *shape)) * span).astype(np.float32)
        kind = "uniform points in 3x the data's box"
    included = (rng.random(m) < 0.5).astype(int)
    return Canaries(kind=kind, seed=int(seed), data_shape=shape, included=included.tolist(),
                    records=x.tolist())


class CanaryDataModule(GenDataModule):
    """GenDataModule whose training set is the members plus the included canaries."""

    def __init__(self, ds: Dataset, spec: DataSpec, canaries: Canaries, **kw):
        super().__init__(ds, spec, **kw)
        self.canaries = canaries

    def train_dataloader(self) -> DataLoader:
        idx = torch.from_numpy(self.spec.pool("members"))
        cx = self.canaries.x()[torch.from_numpy(self.canaries.included_mask())]
        x = torch.cat([self._x[idx], cx])
        y = torch.cat([self._y[idx], torch.full((len(cx),), -1, dtype=torch.int64)])
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size,
                          sampler=EpochSeededSampler(len(x), self.spec.seed), shuffle=False,
                          drop_last=False, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
