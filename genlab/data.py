"""Data sets, the seeded split into pools, fingerprints, and the one reload of a run's data.

Every later stage (training, evaluation, privacy audit, drift study) reads the same `DataSpec`, so
the pools written here decide which records count as members and which as non-members. Quality
checks are in `data_quality.py`, the Lightning data module in `datamodule.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

BUILTIN_DATASETS = ("digits", "toy")
POOLS = ("members", "val", "holdout_a", "holdout_b")
MAX_IMAGE_SIDE = 64
_ALL_POOLS = POOLS + ("excluded",)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MIN_RECORDS = 10


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class DataError(ValueError):
    """Bad input; the message names the file or parameter, what was expected and what was given."""


class DataQualityError(DataError):
    """Raised by `assert_quality` when a quality check has status "error"."""


@dataclass
class Dataset:
    """An in-memory data set: images N×C×H×W in [0,1], or tabular N×D (the toy data)."""

    name: str
    source: str
    x: np.ndarray
    y: np.ndarray | None = None
    class_names: list[str] | None = None

    def __post_init__(self):
        # Hashes and tensors depend on dtype and memory layout: fix both once, here.
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        if self.x.ndim == 0:
            raise DataError(f"{self.name}: x must have one row per record, got a scalar")
        if self.y is not None:
            self.y = np.ascontiguousarray(self.y, dtype=np.int64)
            if self.y.shape != (len(self.x),):
                raise DataError(f"{self.name}: y must have shape ({len(self.x)},) like x, "
                                f"got {self.y.shape}")

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @property
    def n_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return None if self.y is None or len(self.y) == 0 else int(self.y.max()) + 1


# ----------------------------------------------------------------------------- loading

def load_dataset(name_or_path: str | os.PathLike) -> Dataset:
    """A built-in data set by name, or a `.npz` file, or a folder of PNG/JPEG images."""
    if str(name_or_path) in BUILTIN_DATASETS:
        return _load_digits() if str(name_or_path) == "digits" else _load_toy()
    path = Path(name_or_path)
    accepted = (f"expected one of the built-in data sets {list(BUILTIN_DATASETS)}, a .npz file "
                f"(array 'x', optional 'y') or a folder of PNG/JPEG images")
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise DataError(f"data file {str(name_or_path)!r} does not exist")
        return _load_npz(path, str(name_or_path))
    if path.is_dir():
        return _load_folder(path, str(name_or_path))
    what = "is not a supported file" if path.exists() else "is neither a built-in data set nor an existing path"
    raise DataError(f"data set {str(name_or_path)!r} {what}: {accepted}")


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # embedded in scikit-learn: no download

    d = load_digits()
    return Dataset("digits", "sklearn.datasets.load_digits", (d.data / 16.0).reshape(-1, 1, 8, 8),
                   d.target, [str(k) for k in range(10)])


def _load_toy() -> Dataset:
    """8 Gaussians on a ring of radius 2 (σ=0.1), 250 points each; rng fixed so the data never vary."""
    rng = np.random.default_rng(0)
    k, per = 8, 250
    y = rng.permutation(np.repeat(np.arange(k), per))
    angle = 2 * np.pi * y / k
    x = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.1 * rng.standard_normal((k * per, 2))
    return Dataset("toy", f"8 Gaussians on a ring, n={k * per}, rng seed 0", x, y, [str(c) for c in range(k)])


def _check_images(x: np.ndarray, where: str) -> None:
    """Structure only (shape, size); value problems such as NaN are for `quality_checks`."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{where}: expected images N×H×W or N×C×H×W with C in (1, 3), got shape {x.shape}")
    if max(x.shape[2:]) > MAX_IMAGE_SIDE:
        raise DataError(f"{where}: image sides must be at most {MAX_IMAGE_SIDE}, got {x.shape[2]}×{x.shape[3]}; "
                        f"resize the images first")
    if len(x) < _MIN_RECORDS:
        raise DataError(f"{where}: expected at least {_MIN_RECORDS} records, got {len(x)}")


def _load_npz(path: Path, source: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zip, pickle or format errors: all mean "not a readable .npz"
        raise DataError(f"{source}: cannot read as .npz ({type(e).__name__}: {e})") from e
    if "x" not in arrays:
        raise DataError(f"{source}: expected an array named 'x', found keys {sorted(arrays)}")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{source}: 'x' must be N×H×W or N×C×H×W, got {x.ndim} dimensions {x.shape}")
    _check_images(x, f"{source}: 'x'")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        if lo < 0 or hi > 1:
            raise DataError(f"{source}: float 'x' must lie in [0, 1], got min {lo:g} and max {hi:g}")
    else:
        raise DataError(f"{source}: 'x' must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")
    y, class_names = None, None
    if "y" in arrays:
        raw = arrays["y"]
        if raw.ndim != 1 or len(raw) != len(x):
            raise DataError(f"{source}: 'y' must be 1-D with one label per record ({len(x)}), got shape {raw.shape}")
        if not np.issubdtype(raw.dtype, np.integer):
            raise DataError(f"{source}: 'y' must hold integer labels, got dtype {raw.dtype}")
        originals, y = np.unique(raw, return_inverse=True)  # sorted: label order is stable
        class_names = [str(v) for v in originals]
    return Dataset(path.stem, source, x, y, class_names)


def _load_folder(path: Path, source: str) -> Dataset:
    """Sub-folders (sorted) are the classes; a flat folder has no labels. Other files are ignored."""
    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith("."))

    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    top = images_in(path)
    if subdirs and top:
        raise DataError(f"{source}: expected either images only or class sub-folders only, got both "
                        f"(e.g. {top[0].name} and {subdirs[0].name}/)")
    if subdirs:
        files, labels = [], []
        for k, d in enumerate(subdirs):
            found = images_in(d)
            if not found:
                raise DataError(f"{source}: class folder {d.name!r} holds no PNG/JPEG images")
            files += found
            labels += [k] * len(found)
        y, class_names = np.array(labels), [d.name for d in subdirs]
    else:
        files, y, class_names = top, None, None
    if not files:
        raise DataError(f"{source}: expected PNG/JPEG images ({', '.join(_IMAGE_SUFFIXES)}), found none")

    from PIL import Image

    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                mode, a = im.mode, np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DataError(f"{f}: cannot read as an image ({type(e).__name__}: {e})") from e
        if mode in ("I", "I;16", "I;16B", "F"):  # convert("RGB") would clip these silently
            raise DataError(f"{f}: expected 8-bit images, got Pillow mode {mode!r}; convert to 8 bits first")
        if arrays and a.shape != arrays[0].shape:
            raise DataError(f"{f}: all images must have the same size; {files[0].name} is "
                            f"{arrays[0].shape[1]}×{arrays[0].shape[0]}, this one is {a.shape[1]}×{a.shape[0]} (W×H)")
        arrays.append(a)
    rgb = np.stack(arrays)  # N×H×W×3 uint8
    # Grayscale ("L", "1", colourless "P", or RGB with R=G=B) is stored as one channel.
    gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    x = (rgb[..., :1] if gray else rgb).transpose(0, 3, 1, 2)
    _check_images(x, source)
    return Dataset(path.resolve().name, source, x.astype(np.float32) / 255.0, y, class_names)  # "." has no .name


# ----------------------------------------------------------------------------- pools

def make_pools(n: int, *, seed: int, val_frac: float = 0.1, holdout_a_frac: float = 0.2,
               holdout_b_frac: float = 0.2, n_train: int | None = None,
               y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Split range(n) into disjoint, sorted int64 pools; same arguments → same pools.

    Per class (one class if `y` is None) the records are shuffled and cut at the rounded cumulative
    fractions val | holdout_a | holdout_b | members, so each pool holds every class's share to within
    one record. `n_train` then keeps a seeded random subset of the members; the rest are "excluded",
    and val/holdouts do not depend on `n_train`.
    """
    if not _is_int(n) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    fracs = {"val_frac": val_frac, "holdout_a_frac": holdout_a_frac, "holdout_b_frac": holdout_b_frac}
    for name, v in fracs.items():
        if not (_is_int(v) or isinstance(v, (float, np.floating))) or not 0 <= v < 1:
            raise DataError(f"{name} must be a number in [0, 1), got {v!r}")
    if sum(fracs.values()) >= 1:
        raise DataError(f"val_frac + holdout_a_frac + holdout_b_frac must be < 1 to leave members, "
                        f"got {val_frac} + {holdout_a_frac} + {holdout_b_frac} = {sum(fracs.values()):g}")
    if y is None:
        y = np.zeros(n, dtype=np.int64)
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"y must have shape ({n},) to match n, got {y.shape}")

    rng = np.random.default_rng(seed)
    cum = np.cumsum(list(fracs.values()))
    order = ("val", "holdout_a", "holdout_b", "members")
    parts: dict[str, list[np.ndarray]] = {p: [] for p in order}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = [0, *np.floor(len(idx) * cum + 0.5).astype(int), len(idx)]
        for p, a, b in zip(order, cuts[:-1], cuts[1:]):
            parts[p].append(idx[a:b])
    pools = {p: np.sort(np.concatenate(parts[p])).astype(np.int64) for p in order}
    for p, param in (("val", "val_frac"), ("holdout_a", "holdout_a_frac"), ("holdout_b", "holdout_b_frac")):
        if len(pools[p]) == 0:
            raise DataError(f"pool {p!r} is empty: {param} must be large enough to give at least one "
                            f"of n={n} records, got {fracs[param]!r}")
    if len(pools["members"]) == 0:
        raise DataError(f"pool 'members' is empty: lower the fractions, got sum {sum(fracs.values()):g} with n={n}")

    excluded = np.empty(0, dtype=np.int64)
    if n_train is not None:
        available = len(pools["members"])
        if not _is_int(n_train) or not 1 <= n_train <= available:
            raise DataError(f"n_train must be an integer in [1, {available}] (the members left after "
                            f"val and holdouts) or None, got {n_train!r}")
        keep = np.sort(rng.choice(pools["members"], size=int(n_train), replace=False))
        excluded = np.setdiff1d(pools["members"], keep).astype(np.int64)
        pools["members"] = keep.astype(np.int64)
    return {p: pools[p] for p in POOLS} | {"excluded": excluded}


def data_sha256(ds: Dataset) -> str:
    """Content hash of the records (shape, dtype, x, y): equal hashes mean the same data."""
    h = hashlib.sha256()
    h.update(f"x:{ds.x.shape}:{ds.x.dtype.str}:".encode())
    h.update(np.ascontiguousarray(ds.x).tobytes())
    if ds.y is None:
        h.update(b"y:none")
    else:
        h.update(f"y:{ds.y.shape}:{ds.y.dtype.str}:".encode())
        h.update(np.ascontiguousarray(ds.y).tobytes())
    return h.hexdigest()


def _fingerprint(data_hash: str, pools: dict) -> str:
    h = hashlib.sha256(data_hash.encode())
    for name in _ALL_POOLS:
        if name not in pools:
            raise DataError(f"pools must contain {list(_ALL_POOLS)}, got {sorted(pools)}")
        h.update(f"|{name}:".encode())
        h.update(np.asarray(pools[name], dtype="<i8").tobytes())
    return h.hexdigest()


def fingerprint(ds: Dataset, pools: dict[str, np.ndarray]) -> str:
    """Hash of the data and of the split: equal fingerprints mean same records in the same pools."""
    return _fingerprint(data_sha256(ds), pools)


@dataclass
class DataSpec:
    """What a run was trained and audited on: data identity, split parameters and the pools themselves."""

    dataset: str
    source: str
    n: int
    data_shape: list[int]
    n_classes: int | None
    class_names: list[str] | None
    seed: int
    val_frac: float
    holdout_a_frac: float
    holdout_b_frac: float
    n_train: int | None
    pools: dict[str, list[int]]
    data_sha256: str
    fingerprint: str

    @classmethod
    def build(cls, ds: Dataset, *, seed: int, val_frac: float = 0.1, holdout_a_frac: float = 0.2,
              holdout_b_frac: float = 0.2, n_train: int | None = None) -> DataSpec:
        """Split `ds` (stratified by its labels, if any) and record everything needed to check it later."""
        pools = make_pools(len(ds.x), seed=seed, val_frac=val_frac, holdout_a_frac=holdout_a_frac,
                           holdout_b_frac=holdout_b_frac, n_train=n_train, y=ds.y)
        data_hash = data_sha256(ds)
        return cls(dataset=ds.name, source=ds.source, n=len(ds.x), data_shape=list(ds.data_shape),
                   n_classes=ds.n_classes, class_names=ds.class_names, seed=int(seed),
                   val_frac=float(val_frac), holdout_a_frac=float(holdout_a_frac),
                   holdout_b_frac=float(holdout_b_frac), n_train=None if n_train is None else int(n_train),
                   pools={p: v.tolist() for p, v in pools.items()}, data_sha256=data_hash,
                   fingerprint=_fingerprint(data_hash, pools))

    def pool(self, name: str) -> np.ndarray:
        if name not in self.pools:
            raise DataError(f"pool must be one of {list(_ALL_POOLS)}, got {name!r}")
        return np.asarray(self.pools[name], dtype=np.int64)

    def save(self, path: str | os.PathLike) -> None:
        """Deterministic JSON (equal specs → equal bytes), written atomically via a temp file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataSpec:
        """Read a saved spec; the stored fingerprint is re-computed so edited pools are caught."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"data spec {str(path)!r} does not exist") from None
        except (OSError, ValueError) as e:
            raise DataError(f"data spec {str(path)!r} is not readable JSON ({e})") from e
        expected = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != expected:
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise DataError(f"data spec {str(path)!r}: expected keys {sorted(expected)}, got {got}")
        spec = cls(**raw)
        try:
            intact = _fingerprint(spec.data_sha256, spec.pools) == spec.fingerprint
        except (TypeError, ValueError, AttributeError):  # wrong types in an edited file
            intact = False
        if not intact:
            raise DataError(f"data spec {str(path)!r} is corrupt: its pools do not match its "
                            f"fingerprint {spec.fingerprint!r}")
        return spec

    def check_matches(self, ds: Dataset) -> None:
        """Refuse data that differ from what this spec was built on (pool indices would be meaningless)."""
        actual = data_sha256(ds)
        if actual != self.data_sha256:
            raise DataError(f"data set {ds.name!r} does not match the data spec of {self.dataset!r}: "
                            f"expected data_sha256 {self.data_sha256}, got {actual}")

    def summary(self) -> dict:
        return {**{f"n_{p}": len(self.pools[p]) for p in _ALL_POOLS},
                "data_fingerprint": self.fingerprint, "dataset": self.dataset}


def load_recorded(spec: "DataSpec") -> Dataset:
    """The data set a run was trained on (a built-in by name, else the recorded source path: an
    `.npz` or image folder of the user's), checked against the spec's hash so that pool indices
    mean what they meant in training."""
    from genlab.ops.runs import resolve_input

    recorded = spec.dataset if spec.dataset in BUILTIN_DATASETS else spec.source
    ds = load_dataset(resolve_input(recorded))
    spec.check_matches(ds)
    return ds
