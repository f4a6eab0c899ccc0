"""Dataset shifts applied to "production" samples, after the Failing Loudly protocol.

Rabanser, Günnemann & Lipton (2019) shift only the test side, and only a fraction δ of it, at a
few named intensities; we follow that so our detection rates read like their Table 1. On top of
their shifts there are pixel dropout / occlusion, class-prior imbalance and contamination with
the run's own generated samples: a generative model whose output leaks back into its data is
the feedback loop of generative ML-ops, and no public drift library simulates it.

Each `Shift` draws a production sample of size n from a `Pool` (records, labels, generated
records) with a caller's `np.random.Generator`, so every trial is seeded and reproducible.
Values stay in [0, 1] for images; noise on tabular data is not clipped.

Digits border artefact: clipping after adding noise makes the always-zero border
pixels non-constant, so per-pixel KS "detects" even σ = 1/255 noise. The shift itself is what it
is; the KS test handles the artefact (`drift.ks_test(drop_constant=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Failing Loudly's intensities. Transform: (rotation degrees, translation fraction, shear
# radians, zoom fraction, horizontal flip, vertical flip).
NOISE_SIGMA = {"small": 1 / 255, "medium": 10 / 255, "large": 100 / 255}
TRANSFORM = {
    "small": (10.0, 0.05, 0.1, 0.1, False, False),
    "medium": (40.0, 0.2, 0.2, 0.2, True, False),
    "large": (90.0, 0.4, 0.3, 0.4, True, True),
}
DROPOUT_P = {"small": 0.1, "medium": 0.3, "large": 0.6}  # share of pixels set to 0
OCCLUSION_SIDE = {"small": 0.25, "medium": 0.4, "large": 0.6}  # square side / image side
KINDS = ("none", "gaussian_noise", "transform", "dropout", "occlusion", "knockout", "imbalance",
         "contamination")
_INTENSITIES = {"gaussian_noise": NOISE_SIGMA, "transform": TRANSFORM, "dropout": DROPOUT_P,
                "occlusion": OCCLUSION_SIDE}
IMAGE_ONLY = ("transform", "dropout", "occlusion")
CLASS_SHIFTS = ("knockout", "imbalance")
KNOCKOUT_CLASS = 0
IMBALANCE_CLASS = 1


@dataclass
class Pool:
    """Where production samples come from: records `x`, labels `y` (or None), and the model's
    generated records (or None) for the contamination shift."""

    x: np.ndarray
    y: np.ndarray | None = None
    generated: np.ndarray | None = None

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"Pool: y must have {len(self.x)} labels like x, got {len(self.y)}")


@dataclass(frozen=True)
class Shift:
    """A shift `kind` at `intensity` ("small"/"medium"/"large", or "-" where there is none)
    applied to a fraction `delta` of each production sample."""

    kind: str
    intensity: str = "-"
    delta: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"shift kind: expected one of {list(KINDS)}, got {self.kind!r}")
        levels = _INTENSITIES.get(self.kind)
        if levels is not None and self.intensity not in levels:
            raise ValueError(f"shift intensity for {self.kind}: expected one of "
                             f"{list(levels)}, got {self.intensity!r}")
        if levels is None and self.intensity != "-":
            raise ValueError(f"shift {self.kind} has no intensities: expected '-', "
                             f"got {self.intensity!r}")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"shift delta: expected a fraction in [0, 1], got {self.delta!r}")

    @property
    def name(self) -> str:
        return self.kind if self.intensity == "-" else f"{self.kind}:{self.intensity}"

    def applicable(self, pool: Pool) -> str | None:
        """None if this shift can be drawn from `pool`, else the reason it cannot."""
        if self.kind in IMAGE_ONLY and pool.x.ndim != 4:
            return "image shift on non-image data"
        if self.kind in CLASS_SHIFTS and pool.y is None:
            return "needs labels"
        if self.kind == "contamination" and pool.generated is None:
            return "needs generated samples"
        return None

    def draw(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        """A production sample of `n` records (without replacement) with this shift applied."""
        reason = self.applicable(pool)
        if reason:
            raise ValueError(f"shift {self.name} cannot be drawn: {reason}")
        if not 1 <= n <= len(pool.x):
            raise ValueError(f"sample size n: expected 1..{len(pool.x)} (pool size), got {n}")
        if self.kind in CLASS_SHIFTS:
            idx = rng.choice(len(pool.x), size=n, replace=False, p=self._weights(pool, n, rng))
            return pool.x[idx].copy()
        x = pool.x[rng.choice(len(pool.x), size=n, replace=False)].copy()
        hit = rng.choice(n, size=int(round(self.delta * n)), replace=False)
        if self.kind == "none" or len(hit) == 0:
            return x
        x[hit] = self.apply(x[hit], rng, pool)
        return x

    def draw_all(self, pool: Pool, rng: np.random.Generator) -> np.ndarray:
        """The largest production sample this shift draws: the whole pool, shifted; for a class
        shift (knock-out, imbalance) every record its class weights leave drawable."""
        n = len(pool.x)
        if self.kind in CLASS_SHIFTS:
            n = int(np.count_nonzero(self._weights(pool, 1, rng)))
        return self.draw(pool, n, rng)

    def _weights(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        y = pool.y
        w = np.ones(len(y))
        if self.kind == "knockout":
            # Failing Loudly: remove a fraction δ of the class's records
            members = np.flatnonzero(y == KNOCKOUT_CLASS)
            w[rng.choice(members, size=int(round(self.delta * len(members))), replace=False)] = 0
            if np.count_nonzero(w) < n:
                raise ValueError(f"knockout leaves {np.count_nonzero(w)} records, fewer than n={n}")
        else:
            # tweak-one prior shift: class IMBALANCE_CLASS gets target share 1/K + δ(1/2 - 1/K)
            # (numpy's weighted draw without replacement caps it where the pool runs short)
            k = int(y.max()) + 1
            target = 1 / k + self.delta * (0.5 - 1 / k)
            own = y == IMBALANCE_CLASS
            if own.any() and (~own).any():
                w[own] = target / own.mean()
                w[~own] = (1 - target) / (~own).mean()
        return w / w.sum()

    def apply(self, x: np.ndarray, rng: np.random.Generator, pool: Pool) -> np.ndarray:
        """Shift every record of `x` (the caller picks the δ fraction)."""
        if self.kind == "gaussian_noise":
            out = x + rng.normal(0.0, NOISE_SIGMA[self.intensity], size=x.shape).astype(np.float32)
            return np.clip(out, 0.0, 1.0) if x.ndim == 4 else out
        if self.kind == "transform":
            return random_affine(x, rng, *TRANSFORM[self.intensity])
        if self.kind == "dropout":
            keep = rng.random(x.shape[:1] + x.shape[2:]) >= DROPOUT_P[self.intensity]
            return x * keep[:, None].astype(np.float32)
        if self.kind == "occlusion":
            return occlude(x, rng, OCCLUSION_SIDE[self.intensity])
        if self.kind == "contamination":
            return pool.generated[rng.choice(len(pool.generated), size=len(x), replace=False)]
        raise ValueError(f"shift {self.name} is not a per-record transform")


def random_affine(x: np.ndarray, rng: np.random.Generator, rotation: float, translation: float,
                  shear: float, zoom: float, hflip: bool, vflip: bool) -> np.ndarray:
    """Per-image random affine maps (Keras ImageDataGenerator ranges, as Failing Loudly used):
    angle ~ U(±rotation°), shift ~ U(±translation) of the side, shear ~ U(±shear), zoom per axis
    ~ U(1 ± zoom), flips with probability 1/2. One batched `grid_sample` (bilinear, zero fill)."""
    n = len(x)
    ang = np.deg2rad(rng.uniform(-rotation, rotation, n))
    sh = rng.uniform(-shear, shear, n)
    zx, zy = rng.uniform(1 - zoom, 1 + zoom, (2, n))
    tx, ty = rng.uniform(-translation, translation, (2, n)) * 2  # grid coordinates span 2
    fx = np.where(hflip & (rng.random(n) < 0.5), -1.0, 1.0)
    fy = np.where(vflip & (rng.random(n) < 0.5), -1.0, 1.0)
    c, s = np.cos(ang), np.sin(ang)
    # theta maps output grid coordinates to input coordinates: R(ang) · Shear · Zoom · Flip
    a11 = c * zx * fx
    a12 = (c * sh * zy - s * zy) * fy
    a21 = (s * zx) * fx
    a22 = (s * sh * zy + c * zy) * fy
    theta = np.stack([np.stack([a11, a12, tx], 1), np.stack([a21, a22, ty], 1)], 1)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(xt.shape),
                         align_corners=False)
    out = F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp(0.0, 1.0).numpy()


def occlude(x: np.ndarray, rng: np.random.Generator, side: float) -> np.ndarray:
    """Set a square of `side` × the image side, at a random position per image, to 0."""
    out = x.copy()
    h, w = x.shape[2:]
    sh, sw = max(1, int(round(side * h))), max(1, int(round(side * w)))
    top = rng.integers(0, h - sh + 1, len(x))
    left = rng.integers(0, w - sw + 1, len(x))
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    mask = ((rows >= top[:, None, None]) & (rows < (top + sh)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + sw)[:, None, None]))
    out[np.broadcast_to(mask[:, None], out.shape)] = 0.0
    return out


def catalogue(full: bool) -> list[tuple[str, str]]:
    """(kind, intensity) pairs of the study: all intensities in the full setting; by default
    the small and large ends of the image shifts and the class and feedback shifts."""
    levels = ("small", "medium", "large") if full else ("small", "large")
    out = [("none", "-")]
    for kind in ("gaussian_noise", "transform"):
        out += [(kind, lv) for lv in levels]
    for kind in ("dropout", "occlusion"):
        out += [(kind, lv) for lv in (levels if full else ("medium",))]
    out += [("knockout", "-"), ("imbalance", "-"), ("contamination", "-")]
    return out


def parse_shift(name: str, parameter: str) -> Shift:
    """`kind[:intensity]` as a parameter gives it (e.g. 'transform:medium') → the shift at δ = 1;
    a bad name raises naming `parameter`."""
    kind, _, intensity = name.partition(":")
    try:
        return Shift(kind, intensity or "-", 1.0)
    except ValueError as exc:
        raise ValueError(f"{parameter}: {exc} (given {name!r})") from None
