"""The offline feature extractor: deterministic, cached, accurate enough, clear about bad input."""

import numpy as np
import pytest
import torch

from genlab import data
from genlab.evaluate import features
from genlab.ops.runs import RunFolder


@pytest.fixture(scope="module")
def extractor(digits, digits_spec, tmp_path_factory):
    ds, spec = digits, digits_spec
    run = RunFolder(tmp_path_factory.mktemp("run"))
    return run, features.load_or_train_extractor(run, ds, spec, seed=0)


def test_api_shapes_dtypes_and_accuracy(digits, digits_spec, extractor):
    ds, spec = digits, digits_spec
    _, ext = extractor
    x = ds.x[:37]
    f, p = ext.features(x), ext.predict_proba(torch.from_numpy(x))
    assert f.shape == (37, ext.num_features) and f.dtype == np.float64
    assert p.shape == (37, ext.n_classes) == (37, 10) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    f2, p2 = ext.features_and_proba(x)
    np.testing.assert_array_equal(f, f2)
    np.testing.assert_allclose(p, p2, rtol=0, atol=1e-15)
    assert ext.accuracy > 0.93 and ext.accuracy_pools == ("holdout_a", "holdout_b")


def test_cached_by_fingerprint_and_seed_and_loaded_with_weights_only(digits, digits_spec, extractor):
    ds, spec = digits, digits_spec
    run, ext = extractor
    path = run.artifacts / f"extractor-{spec.fingerprint[:12]}-seed0.pt"
    assert path.exists()
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["fingerprint"] == spec.fingerprint
    again = features.load_or_train_extractor(run, ds, spec, seed=0)
    np.testing.assert_array_equal(again.features(ds.x[:20]), ext.features(ds.x[:20]))
    assert again.accuracy == ext.accuracy


@pytest.mark.slow
def test_training_is_deterministic_and_leaves_global_rng(digits, digits_spec, extractor):
    ds, spec = digits, digits_spec
    _, ext = extractor
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fresh = features.train_extractor(ds, spec, seed=0)
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(fresh.features(ds.x[:50]), ext.features(ds.x[:50]))
    other = features.train_extractor(ds, spec, seed=1)
    assert not np.array_equal(other.features(ds.x[:50]), ext.features(ds.x[:50]))


def test_damaged_cache_is_retrained(digits, digits_spec, tmp_path):
    ds, spec = digits, digits_spec
    run = RunFolder(tmp_path)
    features.extractor_path(run, spec, 0).write_bytes(b"not a checkpoint")
    ext = features.load_or_train_extractor(run, ds, spec, seed=0)
    assert ext.accuracy > 0.9
    assert torch.load(features.extractor_path(run, spec, 0), weights_only=True)["accuracy"] == ext.accuracy


def test_unlabelled_data_names_the_alternative(digits, digits_spec, tmp_path):
    ds = digits
    unlabelled = data.Dataset("nolabels", "test", ds.x[:100], None)
    spec = data.DataSpec.build(unlabelled, seed=0)
    with pytest.raises(features.FeatureError, match="feature_extractor='pixels'"):
        features.load_or_train_extractor(RunFolder(tmp_path), unlabelled, spec)
    pix = features.PixelFeatures(unlabelled.data_shape)
    assert pix.features(unlabelled.x[:3]).shape == (3, 64)


def test_bad_input_shape_and_nan(extractor):
    _, ext = extractor
    with pytest.raises(features.FeatureError, match=r"expected records of shape \(1, 8, 8\)"):
        ext.features(np.zeros((3, 64), np.float32))
    x = np.zeros((3, 1, 8, 8), np.float32)
    x[1, 0, 2, 2] = np.nan
    with pytest.raises(features.FeatureError, match="NaN"):
        ext.features(x)


def test_toy_gets_mlp_and_larger_images_a_cnn(tmp_path):
    toy = data.load_dataset("toy")
    spec = data.DataSpec.build(toy, seed=0)
    ext = features.load_or_train_extractor(RunFolder(tmp_path / "a"), toy, spec)
    assert ext.name == "classifier-mlp" and ext.features(toy.x[:5]).shape == (5, 64)
    assert ext.accuracy > 0.95  # 8 well separated Gaussians
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.uniform(0, 0.2, (60, 1, 16, 16)).astype(np.float32)
    x[y == 1, :, 4:12, 4:12] += 0.7  # a bright square: easy to learn
    img = data.Dataset("squares", "test", x, y, ["blank", "square"])
    ext = features.load_or_train_extractor(RunFolder(tmp_path / "b"), img, data.DataSpec.build(img, seed=0))
    assert ext.name == "classifier-cnn" and ext.num_features == 128
    assert ext.features(x[:4]).shape == (4, 128) and ext.accuracy >= 0.9


def test_inception_without_weights_names_the_offline_choice():
    ok, why = features.inception_available()
    if ok:
        pytest.skip("Inception weights are cached here")
    with pytest.raises(features.FeatureError, match="feature_extractor='classifier'"):
        features.InceptionFeatures((1, 8, 8))
