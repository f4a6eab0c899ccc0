"""The Lightning data module of a run's pools, and the epoch-seeded sampler that makes a resumed
run see the same order as an uninterrupted one."""

from __future__ import annotations

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.data import DataError, Dataset, DataSpec, _is_int


class EpochSeededSampler(torch.utils.data.Sampler[int]):
    """Permutation seeded by (seed, epoch); Lightning calls set_epoch, so a resumed run sees the same
    order as an uninterrupted one (a sampler with its own running RNG would not)."""

    def __init__(self, n: int, seed: int):
        if n < 0 or seed < 0:
            raise DataError(f"EpochSeededSampler needs n >= 0 and seed >= 0, got n={n}, seed={seed}")
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class GenDataModule(lightning.LightningDataModule):
    """Serves the spec's pools of `ds` as (x, y) batches; y is -1 for unlabelled data."""

    def __init__(self, ds: Dataset, spec: DataSpec, *, batch_size: int = 64, num_workers: int = 0):
        super().__init__()
        spec.check_matches(ds)
        if not _is_int(batch_size) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not _is_int(num_workers) or num_workers < 0:
            raise DataError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.ds, self.spec, self.batch_size, self.num_workers = ds, spec, batch_size, num_workers
        self._x = torch.from_numpy(ds.x)
        self._y = torch.from_numpy(ds.y) if ds.y is not None else torch.full((len(ds.x),), -1, dtype=torch.int64)

    def pool_tensor(self, name: str) -> torch.Tensor:
        return self._x[torch.from_numpy(self.spec.pool(name))]

    def _loader(self, name: str, sampler=None) -> DataLoader:
        idx = torch.from_numpy(self.spec.pool(name))
        return DataLoader(TensorDataset(self._x[idx], self._y[idx]), batch_size=self.batch_size,
                          sampler=sampler, shuffle=False, drop_last=False, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("members", EpochSeededSampler(len(self.spec.pools["members"]), self.spec.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")
