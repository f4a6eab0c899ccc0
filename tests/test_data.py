"""Tests for genlab.data: loaders, pools, fingerprints, data spec, quality checks, sampler, data module."""
import json

import lightning
import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import (
    BUILTIN_DATASETS,
    POOLS,
    DataError,
    DataQualityError,
    DataSpec,
    Dataset,
    data_sha256,
    fingerprint,
    load_dataset,
    make_pools,
)
from genlab.data_quality import assert_quality, quality_checks, quality_table
from genlab.datamodule import EpochSeededSampler, GenDataModule

ALL = POOLS + ("excluded",)


def small_images(n=40, labels=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = np.arange(n) % 4 if labels else None
    return Dataset("small", "test", x, y, [str(k) for k in range(4)] if labels else None)


def check(checks, name):
    return next(c for c in checks if c.name == name)


# ----------------------------------------------------------------------------- pools

def test_pools_deterministic_and_seed_dependent():
    a, b, c = make_pools(500, seed=1), make_pools(500, seed=1), make_pools(500, seed=2)
    assert all(np.array_equal(a[p], b[p]) for p in ALL)
    assert not np.array_equal(a["members"], c["members"])


@pytest.mark.parametrize("n_train", [None, 50])
@pytest.mark.parametrize("stratified", [False, True])
def test_pools_disjoint_sorted_and_cover_range(n_train, stratified):
    y = np.arange(300) % 7 if stratified else None
    pools = make_pools(300, seed=3, n_train=n_train, y=y)
    assert set(pools) == set(ALL)
    joined = np.concatenate([pools[p] for p in ALL])
    assert len(joined) == 300 and np.array_equal(np.sort(joined), np.arange(300))
    for p in ALL:
        assert pools[p].dtype == np.int64 and np.all(np.diff(pools[p]) > 0)
    assert all(len(pools[p]) > 0 for p in POOLS)


def test_pool_sizes_follow_fractions():
    pools = make_pools(1000, seed=0, val_frac=0.1, holdout_a_frac=0.2, holdout_b_frac=0.25)
    assert {p: len(v) for p, v in pools.items()} == {
        "members": 450, "val": 100, "holdout_a": 200, "holdout_b": 250, "excluded": 0}


def test_n_train_caps_members_and_keeps_other_pools():
    full = make_pools(400, seed=5)
    capped = make_pools(400, seed=5, n_train=30)
    assert len(capped["members"]) == 30
    assert set(capped["members"]) <= set(full["members"])
    assert np.array_equal(np.sort(np.concatenate([capped["members"], capped["excluded"]])), full["members"])
    for p in ("val", "holdout_a", "holdout_b"):
        assert np.array_equal(capped[p], full[p])


def test_stratification_keeps_class_shares():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat(np.arange(5), [13, 50, 101, 7, 200]))
    fracs = {"val": 0.1, "holdout_a": 0.2, "holdout_b": 0.15}
    pools = make_pools(len(y), seed=4, val_frac=0.1, holdout_a_frac=0.2, holdout_b_frac=0.15, y=y)
    fracs["members"] = 1 - sum(fracs.values())
    for c in range(5):
        n_c = (y == c).sum()
        for p, f in fracs.items():
            assert abs((y[pools[p]] == c).sum() - n_c * f) <= 1, (c, p)


# ----------------------------------------------------------------------------- fingerprints and spec

def test_fingerprint_stable_and_sensitive(digits):
    pools = make_pools(len(digits.x), seed=0, y=digits.y)
    fp = fingerprint(digits, pools)
    assert fp == fingerprint(digits, pools) == fingerprint(load_dataset("digits"), pools)
    x = digits.x.copy()
    x[5, 0, 3, 3] += 1 / 16
    assert fingerprint(Dataset("digits", "t", x, digits.y), pools) != fp
    moved = dict(pools, members=pools["members"][1:], val=np.sort(np.r_[pools["val"], pools["members"][0]]))
    assert fingerprint(digits, moved) != fp
    assert data_sha256(Dataset("d", "t", digits.x, None)) != data_sha256(digits)


def test_spec_save_load_roundtrip_and_bytes(digits, tmp_path):
    spec = DataSpec.build(digits, seed=7, n_train=300)
    spec.save(tmp_path / "a" / "spec.json")
    DataSpec.build(digits, seed=7, n_train=300).save(tmp_path / "b.json")
    raw = (tmp_path / "a" / "spec.json").read_bytes()
    assert raw == (tmp_path / "b.json").read_bytes() and raw.endswith(b"}\n")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["spec.json"]  # no temp file left
    loaded = DataSpec.load(tmp_path / "a" / "spec.json")
    assert loaded == spec
    assert np.array_equal(loaded.pool("members"), spec.pool("members")) and len(loaded.pool("members")) == 300
    assert spec.summary() == {"n_members": 300, "n_val": len(spec.pools["val"]),
                              "n_holdout_a": len(spec.pools["holdout_a"]),
                              "n_holdout_b": len(spec.pools["holdout_b"]),
                              "n_excluded": len(spec.pools["excluded"]),
                              "data_fingerprint": spec.fingerprint, "dataset": "digits"}
    assert sum(v for k, v in spec.summary().items() if k.startswith("n_")) == len(digits.x)


def test_spec_check_matches(digits):
    spec = DataSpec.build(digits, seed=0)
    spec.check_matches(load_dataset("digits"))
    x = digits.x.copy()
    x[0, 0, 0, 0] = 0.5
    with pytest.raises(DataError, match=spec.data_sha256):
        spec.check_matches(Dataset("digits", "t", x, digits.y))


@pytest.mark.parametrize("content", [None, "{not json", '{"dataset": "x"}', "[]", "tamper"])
def test_spec_load_errors(digits, tmp_path, content):
    path = tmp_path / "spec.json"
    if content == "tamper":
        DataSpec.build(digits, seed=0).save(path)
        content = path.read_text().replace('"val": [\n  ', '"val": [\n  1,\n  ', 1)
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match="spec.json"):
        DataSpec.load(path)


def test_spec_pool_unknown_name(digits):
    with pytest.raises(DataError, match="'train'"):
        DataSpec.build(digits, seed=0).pool("train")


# ----------------------------------------------------------------------------- loaders

def test_digits(digits):
    assert digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == np.float32 and digits.x.flags.c_contiguous
    assert digits.x.min() == 0 and digits.x.max() == 1
    assert digits.y.dtype == np.int64 and set(digits.y) == set(range(10))
    assert digits.class_names == [str(k) for k in range(10)] and digits.n_classes == 10
    assert digits.is_image and digits.data_shape == (1, 8, 8)


def test_toy_identical_across_loads():
    a, b = load_dataset("toy"), load_dataset("toy")
    np.random.seed(123)  # the global RNG must not matter
    c = load_dataset("toy")
    assert a.x.shape == (2000, 2) and a.x.dtype == np.float32 and not a.is_image
    assert np.array_equal(a.x, b.x) and np.array_equal(a.x, c.x) and np.array_equal(a.y, c.y)
    assert a.n_classes == 8 and np.all(np.bincount(a.y) == 250)


def test_npz_uint8_nhw(tmp_path):
    x = np.arange(12 * 5 * 6).reshape(12, 5, 6) % 256
    np.savez(tmp_path / "faces.npz", x=x.astype(np.uint8))
    ds = load_dataset(str(tmp_path / "faces.npz"))
    assert ds.name == "faces" and ds.source == str(tmp_path / "faces.npz")
    assert ds.x.shape == (12, 1, 5, 6) and ds.x.dtype == np.float32 and ds.y is None
    assert np.allclose(ds.x[:, 0], x / 255)


def test_npz_float_nchw_with_label_remap(tmp_path):
    x = np.random.default_rng(0).random((12, 3, 4, 4))
    y = np.array([7, -2, 40, 7, 7, -2, 40, 40, 7, -2, 7, 7])
    np.savez(tmp_path / "rgb.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "rgb.npz")
    assert ds.x.shape == (12, 3, 4, 4) and np.allclose(ds.x, x)
    assert ds.class_names == ["-2", "7", "40"]
    assert ds.y.tolist() == [1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 1, 1]


def _png(path, size=(4, 5), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_png_folder_with_class_subfolders(tmp_path):
    for k in range(12):
        _png(tmp_path / ("cat" if k % 3 else "ant") / f"{k:02d}.png", value=10 * k)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.x.shape == (12, 1, 5, 4)  # W×H = 4×5 → H=5, W=4
    assert ds.class_names == ["ant", "cat"] and ds.y.tolist() == [0] * 4 + [1] * 8
    assert np.allclose(ds.x[:4, 0, 0, 0] * 255, [0, 30, 60, 90])  # ant/00, 03, 06, 09 in order


def test_png_flat_folder_rgb(tmp_path):
    for k in range(10):
        _png(tmp_path / f"{k}.png", size=(3, 3), mode="RGB", value=(k, 0, 0))
    _png(tmp_path / "10.jpg", size=(3, 3), mode="RGB", value=(255, 255, 255))
    ds = load_dataset(tmp_path)
    assert ds.x.shape == (11, 3, 3, 3) and ds.y is None and ds.class_names is None
    red = np.round(ds.x[:, 0, 0, 0] * 255)  # sorted by name: 0, 1, 10.jpg, 2, ..., 9
    assert ds.name == tmp_path.name and red[[0, 1, *range(3, 11)]].tolist() == list(range(10)) and red[2] > 250


def _write(tmp_path, case):
    """Create the bad input named by `case`; return (argument for load_dataset, expected text in message)."""
    u8 = lambda *shape: np.zeros(shape, dtype=np.uint8)  # noqa: E731
    npz = tmp_path / "bad.npz"
    arrays = {
        "no_x": ({"images": u8(20, 4, 4), "labels": np.zeros(20, int)}, "images"),
        "ndim": ({"x": u8(20, 16)}, "(20, 16)"),
        "channels": ({"x": u8(20, 2, 4, 4)}, "(20, 2, 4, 4)"),
        "too_big": ({"x": u8(20, 4, 65)}, "resize"),
        "float_range": ({"x": np.full((20, 4, 4), 1.5)}, "max 1.5"),
        "int_dtype": ({"x": np.zeros((20, 4, 4), dtype=np.int64)}, "int64"),
        "y_length": ({"x": u8(20, 4, 4), "y": np.zeros(19, int)}, "(19,)"),
        "y_float": ({"x": u8(20, 4, 4), "y": np.zeros(20)}, "float64"),
        "too_few": ({"x": u8(9, 4, 4)}, "got 9"),
    }
    if case in arrays:
        content, expected = arrays[case]
        np.savez(npz, **content)
        return str(npz), expected
    if case == "missing_npz":
        return str(tmp_path / "nope.npz"), "nope.npz"
    if case == "corrupt_npz":
        npz.write_text("hello")
        return str(npz), "bad.npz"
    if case == "unknown_name":
        return "mnist", "'mnist'"
    if case == "unsupported_file":
        (tmp_path / "data.csv").write_text("1,2\n")
        return str(tmp_path / "data.csv"), "data.csv"
    folder = tmp_path / "imgs"
    if case == "size_mismatch":
        for k in range(12):
            _png(folder / f"{k:02d}.png", size=(4, 4) if k != 7 else (5, 4))
        return str(folder), "07.png"
    if case == "empty_folder":
        folder.mkdir()
        return str(folder), "imgs"
    if case == "empty_class":
        _png(folder / "a" / "0.png")
        (folder / "b").mkdir()
        return str(folder), "'b'"
    if case == "mixed_folder":
        _png(folder / "a" / "0.png")
        _png(folder / "0.png")
        return str(folder), "imgs"
    if case == "unreadable_image":
        for k in range(12):
            _png(folder / f"{k:02d}.png")
        (folder / "99.png").write_text("not an image")
        return str(folder), "99.png"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "no_x", "ndim", "channels", "too_big", "float_range", "int_dtype", "y_length", "y_float", "too_few",
    "missing_npz", "corrupt_npz", "unknown_name", "unsupported_file", "size_mismatch", "empty_folder",
    "empty_class", "mixed_folder", "unreadable_image"])
def test_load_errors(tmp_path, case):
    arg, expected = _write(tmp_path, case)
    with pytest.raises(DataError) as info:
        load_dataset(arg)
    assert expected in str(info.value)
    if case == "unknown_name":
        assert all(b in str(info.value) for b in BUILTIN_DATASETS) and ".npz" in str(info.value)
    if case == "size_mismatch":
        assert "4×4" in str(info.value) and "5×4" in str(info.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"val_frac": 1.0}, "val_frac"),
    ({"holdout_a_frac": -0.1}, "holdout_a_frac"),
    ({"holdout_b_frac": "0.2"}, "holdout_b_frac"),
    ({"val_frac": 0.4, "holdout_a_frac": 0.3, "holdout_b_frac": 0.3}, "= 1"),
    ({"val_frac": 0.0}, "val_frac"),
    ({"n_train": 0}, "n_train"),
    ({"n_train": 10_000}, "n_train"),
    ({"n_train": 2.5}, "2.5"),
    ({"seed": -1}, "seed"),
    ({"n": 0}, "n must"),
    ({"y": np.zeros(5)}, "(5,)"),
])
def test_make_pools_errors(kwargs, expected):
    args = {"n": 100, "seed": 0} | kwargs
    with pytest.raises(DataError) as info:
        make_pools(**args)
    assert expected in str(info.value)


def test_make_pools_error_gives_range_and_value():
    with pytest.raises(DataError, match=r"n_train must be an integer in \[1, 50\].*got 51"):
        make_pools(100, seed=0, n_train=51)


# ----------------------------------------------------------------------------- quality

def test_quality_nan_is_error_and_assert_raises():
    ds = small_images()
    ds.x[3, 0, 1, 1] = np.nan
    ds.x[4, 0, 1, 1] = np.inf
    checks = quality_checks(ds)
    assert check(checks, "finite").status == "error" and "2 NaN/inf" in check(checks, "finite").detail
    with pytest.raises(DataQualityError, match="finite"):
        assert_quality(checks)


def test_quality_clean_data_passes(digits):
    checks = quality_checks(digits)
    assert_quality(checks)
    assert {c.name for c in checks} == {"shape", "finite", "value_range", "duplicates",
                                        "constant_features", "class_balance", "sample_size"}
    assert check(checks, "constant_features").status == "ok"  # blank digit borders are normal
    rows = quality_table(checks)
    assert rows[0] == {"check": checks[0].name, "status": checks[0].status, "detail": checks[0].detail}


def test_quality_duplicates_counted_exactly():
    x = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [1, 1], [1, 2]], dtype=float)
    c = check(quality_checks(Dataset("t", "t", x)), "duplicates")
    assert c.status == "warn" and c.detail.startswith("3 of 10")
    many = check(quality_checks(Dataset("t", "t", np.zeros((10, 2)))), "duplicates")
    assert many.status == "error" and many.detail.startswith("9 of 10")


def test_quality_constant_features_counted_exactly():
    x = np.random.default_rng(0).random((20, 5))
    x[:, 1], x[:, 3] = 0.5, -2.0
    c = check(quality_checks(Dataset("t", "t", x)), "constant_features")
    assert c.status == "warn" and c.detail.startswith("2 of 5")
    img = small_images()
    img.x[:, 0, 0, :] = 0
    c = check(quality_checks(img), "constant_features")
    assert c.status == "ok" and c.detail.startswith("4 of 16")


def test_quality_class_balance_and_sample_size():
    ds = small_images()
    assert check(quality_checks(ds), "class_balance").status == "ok"
    y = np.array([0] * 30 + [1] * 6 + [2] * 2 + [3] * 2)
    c = check(quality_checks(Dataset("t", "t", ds.x, y, list("abcd"))), "class_balance")
    assert c.status == "warn" and "'c': 2" in c.detail and "'a': 30" in c.detail
    tiny = quality_checks(Dataset("t", "t", ds.x[:9]))
    assert check(tiny, "sample_size").status == "error"
    bad = quality_checks(Dataset("t", "t", ds.x * 2))
    assert check(bad, "value_range").status == "error" and check(bad, "shape").status == "ok"
    with pytest.raises(DataQualityError, match="value_range"):
        assert_quality(bad)


# ----------------------------------------------------------------------------- sampler and data module

def test_epoch_seeded_sampler():
    s = EpochSeededSampler(50, seed=3)
    e0 = list(s)
    assert sorted(e0) == list(range(50)) and len(s) == 50 and e0 != list(range(50))
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) == list(range(50))
    resumed = EpochSeededSampler(50, seed=3)
    resumed.set_epoch(1)
    assert list(resumed) == e1 and list(resumed) == e1
    assert list(EpochSeededSampler(50, seed=4)) != e0


def test_datamodule_batches(digits):
    spec = DataSpec.build(digits, seed=0, n_train=100)
    dm = GenDataModule(digits, spec, batch_size=32)
    batches = list(dm.train_dataloader())
    assert [len(b[0]) for b in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    seen = torch.cat([b[0] for b in batches])
    order = list(EpochSeededSampler(100, spec.seed))  # epoch 0: members in the sampler's order
    assert torch.equal(seen, dm.pool_tensor("members")[order])
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(digits.y[spec.pool("members")][order]))
    val_x, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(val_x, dm.pool_tensor("val")[:32])  # in order


def test_datamodule_unlabelled_and_mismatch():
    ds = Dataset("toy", "t", np.random.default_rng(0).random((60, 2)))
    dm = GenDataModule(ds, DataSpec.build(ds, seed=1), batch_size=8)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 2) and torch.all(y == -1)
    assert dm.pool_tensor("holdout_a").shape == (12, 2)
    other = Dataset("toy", "t", ds.x + 1)
    with pytest.raises(DataError, match="data_sha256"):
        GenDataModule(other, DataSpec.build(ds, seed=1))
    with pytest.raises(DataError, match="batch_size"):
        GenDataModule(ds, DataSpec.build(ds, seed=1), batch_size=0)


class _Recorder(lightning.LightningModule):
    """Records the first feature of every training record, per epoch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, _):
        self.seen.setdefault(self.current_epoch, []).extend(batch[0][:, 0].tolist())
        return (self.w * batch[0][:, 0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:.*validation_step", "ignore:.*LeafSpec")
@pytest.mark.slow
def test_lightning_order_per_epoch_and_after_resume(tmp_path):
    """Lightning calls set_epoch: each epoch's order is the sampler's, also after resuming."""
    ds = Dataset("toy", "t", np.arange(60, dtype=np.float32)[:, None].repeat(2, 1))
    spec = DataSpec.build(ds, seed=2)
    opts = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1)

    full = _Recorder()
    lightning.Trainer(max_epochs=2, **opts).fit(full, GenDataModule(ds, spec, batch_size=7))
    members = spec.pool("members")
    for epoch in (0, 1):
        sampler = EpochSeededSampler(len(members), spec.seed)
        sampler.set_epoch(epoch)
        assert full.seen[epoch] == members[list(sampler)].tolist()

    first = lightning.Trainer(max_epochs=1, **opts)
    first.fit(_Recorder(), GenDataModule(ds, spec, batch_size=7))
    first.save_checkpoint(tmp_path / "e1.ckpt")
    resumed = _Recorder()
    lightning.Trainer(max_epochs=2, **opts).fit(resumed, GenDataModule(ds, spec, batch_size=7),
                                                 ckpt_path=tmp_path / "e1.ckpt")
    assert resumed.seen[1] == full.seen[1]


def test_sixteen_bit_images_rejected(tmp_path):
    for k in range(12):
        Image.fromarray(np.full((4, 4), 1000 * k, dtype=np.uint16)).save(tmp_path / f"{k:02d}.png")
    with pytest.raises(DataError, match="8-bit"):
        load_dataset(tmp_path)


def test_spec_load_wrong_types(digits, tmp_path):
    path = tmp_path / "spec.json"
    DataSpec.build(digits, seed=0).save(path)
    raw = json.loads(path.read_text())
    raw["pools"] = {"members": "abc"}
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="corrupt"):
        DataSpec.load(path)


@pytest.mark.parametrize("mode, channels", [("1", 1), ("L", 1), ("P-gray", 1), ("P-colour", 3), ("RGB", 3)])
def test_folder_channels_follow_colour(tmp_path, mode, channels):
    for k in range(10):
        im = Image.fromarray(np.full((3, 3), 20 * k, dtype=np.uint8))
        if mode.startswith("P"):
            im = im.convert("P")
            if mode == "P-colour":
                im.putpalette([255, 0, 0] * 256)
        elif mode == "RGB":
            im = Image.new("RGB", (3, 3), (k, 2 * k, 0))
        else:
            im = im.convert(mode)
        im.save(tmp_path / f"{k}.png")
    assert load_dataset(tmp_path).x.shape == (10, channels, 3, 3)
