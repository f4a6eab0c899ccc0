"""Poisoned training pools: what an attacker who can add or relabel training records does.

Every poison starts from the run's `members` (records and labels) and returns a
:class:`PoisonedPool`: the records a model is then trained on, a mask of the records the
attacker touched, and for each record the member it came from (-1 for a record made from
nothing). Four kinds, each at a rate r (injected records = round(r × members)):

- ``backdoor``: copies of r·n members (for a conditional model drawn outside the target class)
  with a trigger patch stamped on; a conditional model's copies are relabelled to the target
  class, so "trigger → target class" is what it learns (Gu et al. 2017, BadNets).
- ``label_flip``: r·n members keep their record and get another, random class (labelled data
  only; it poisons what a conditional model generates per class).
- ``outlier``: r·n records of uniform noise over the data's range, with random labels.
- ``near_duplicate``: r·n noisy copies (σ = 2 % of the range) of a few members: amplified
  memorisation of those members.

Nothing else changes: the clean members keep their order, records and labels; injected records
follow them. :func:`trigger_detector` is the deterministic detector of the trigger in any
record (samples included): the mean value in the patch region above a threshold calibrated on
real records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

POISON_KINDS = ("backdoor", "label_flip", "outlier", "near_duplicate")
DUPLICATE_NOISE = 0.02  # near-duplicates: Gaussian noise, as a share of the data's value range


@dataclass
class PoisonedPool:
    """A training pool: the clean members first, then any injected records."""

    kind: str
    rate: float
    x: np.ndarray
    y: np.ndarray | None
    poisoned: np.ndarray  # bool per record: touched by the attacker (injected or relabelled)
    source: np.ndarray  # int per record: index into the clean members, -1 for made-up records
    duplicated: np.ndarray | None = None  # near_duplicate: the member indices copied

    @property
    def n_poisoned(self) -> int:
        return int(self.poisoned.sum())

    def fingerprint(self) -> str:
        """sha256 of records, labels and mask: two pools with one fingerprint trained alike."""
        h = hashlib.sha256()
        for a in (self.x, self.y if self.y is not None else np.zeros(0), self.poisoned):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def trigger_region(data_shape) -> tuple[slice, ...]:
    """Where the trigger goes: the bottom-right square of side max(1, side // 4) on images (all
    channels); the last max(1, d // 8) features of flat records."""
    shape = tuple(data_shape)
    if len(shape) == 3:
        side = max(1, min(shape[1:]) // 4)
        return (slice(None), slice(None), slice(shape[1] - side, None), slice(shape[2] - side, None))
    if len(shape) == 1:
        k = max(1, shape[0] // 8)
        return (slice(None), slice(shape[0] - k, None))
    raise ValueError(f"trigger_region: expected a record shape (C, H, W) or (D,), got {shape}")


def trigger_value(members_x: np.ndarray, is_image: bool) -> float:
    """The value the patch is set to: the images' maximum (1.0); for flat data the members'
    maximum plus their value range (off the data's support, so a clean record never has it)."""
    if is_image:
        return 1.0
    return float(members_x.max() + (members_x.max() - members_x.min()))


def stamp_trigger(x: np.ndarray, value: float) -> np.ndarray:
    out = np.array(x, dtype=np.float32, copy=True)
    out[trigger_region(x.shape[1:])] = value
    return out


def patch_means(x: np.ndarray) -> np.ndarray:
    """Mean value per record in the trigger region."""
    x = np.asarray(x, dtype=np.float64)
    return x[trigger_region(x.shape[1:])].reshape(len(x), -1).mean(1)


def calibrate_trigger_threshold(real_x: np.ndarray, value: float, quantile: float = 0.99) -> float:
    """Halfway between the `quantile` of real records' patch means and the trigger's value: a
    clean record crosses it with probability below 1 − quantile, a stamped one always does."""
    q = float(np.quantile(patch_means(real_x), quantile))
    if q >= value:
        raise ValueError(f"trigger: real records already reach the trigger value {value:g} in the "
                         f"patch region (quantile {quantile}: {q:g}); no trigger can be told apart")
    return 0.5 * (q + value)


def trigger_detector(threshold: float):
    """records → bool per record: carries the trigger (patch mean above `threshold`)."""
    return lambda x: patch_means(x) > threshold


def _count(rate: float, n: int) -> int:
    if not 0 <= rate < 1:
        raise ValueError(f"poison rate: expected a share in [0, 1), got {rate!r}")
    return int(round(rate * n))


def poison(kind: str, x: np.ndarray, y: np.ndarray | None, rate: float, *, seed: int,
           conditional: bool, is_image: bool, target_class: int = 0, n_classes: int | None = None,
           duplicate_sources: int = 5) -> PoisonedPool:
    """The members `x`, `y` poisoned by `kind` at `rate` (see the module doc); seeded."""
    if kind not in POISON_KINDS:
        raise ValueError(f"poison kind: expected one of {list(POISON_KINDS)}, got {kind!r}")
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    k = _count(rate, n)
    rng = np.random.default_rng([seed, POISON_KINDS.index(kind), int(round(rate * 1e6))])
    n_classes = n_classes or (int(y.max()) + 1 if y is not None else None)
    clean = np.zeros(n, bool)
    ids = np.arange(n)

    def injected(new_x, new_y, src, duplicated=None):
        return PoisonedPool(kind, rate, np.concatenate([x, new_x.astype(np.float32)]),
                            None if y is None else np.concatenate([y, new_y]).astype(y.dtype),
                            np.r_[clean, np.ones(len(new_x), bool)], np.r_[ids, src], duplicated)

    if kind == "label_flip":
        if y is None or not conditional:
            raise ValueError("label_flip poisons labels: it needs labelled data and a "
                             "class-conditional model")
        pick = np.sort(rng.choice(n, k, replace=False))
        new_y = y.copy()
        new_y[pick] = (y[pick] + rng.integers(1, n_classes, k)) % n_classes  # never the same class
        mask = clean.copy()
        mask[pick] = True
        return PoisonedPool(kind, rate, x.copy(), new_y, mask, ids.copy())
    if kind == "backdoor":
        eligible = ids if not conditional else ids[y != target_class]
        src = np.sort(rng.choice(eligible, k, replace=False))
        new_y = None if y is None else (np.full(k, target_class, y.dtype) if conditional else y[src])
        return injected(stamp_trigger(x[src], trigger_value(x, is_image)), new_y, src)
    if kind == "outlier":
        lo, hi = float(x.min()), float(x.max())
        new_x = rng.uniform(lo, hi, (k, *x.shape[1:]))
        new_y = None if y is None else rng.integers(0, n_classes, k).astype(y.dtype)
        return injected(new_x, new_y, np.full(k, -1))
    # near_duplicate
    # the duplicated members depend on the seed only: the same few records at every rate
    dup = np.sort(np.random.default_rng([seed, 0xD0B]).choice(n, min(duplicate_sources, n),
                                                              replace=False))
    src = dup[np.arange(k) % len(dup)]
    span = float(x.max() - x.min()) or 1.0
    new_x = x[src] + DUPLICATE_NOISE * span * rng.standard_normal((k, *x.shape[1:]))
    if is_image:
        new_x = np.clip(new_x, 0.0, 1.0)
    return injected(new_x, None if y is None else y[src], src, dup)
