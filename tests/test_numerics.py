"""The shared numerics: flatten, squared distances, the Fréchet distance, the thread limit."""

import numpy as np
import pytest
import torch

from genlab.numerics import flatten, frechet_distance, single_threaded, sq_dists, sq_dists_sklearn_order


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 3))
    assert frechet_distance(a, a + 2.0) == pytest.approx(12.0, rel=1e-6)


def test_flatten_takes_arrays_and_tensors_as_float64_rows():
    x = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
    a, b = flatten(x), flatten(torch.from_numpy(x))
    assert a.shape == (3, 4) and a.dtype == np.float64 and np.array_equal(a, b)


def test_both_distance_orders_agree_and_clip_at_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    direct = ((a[:, None] - b[None]) ** 2).sum(-1)
    np.testing.assert_allclose(sq_dists(a, b), direct, rtol=1e-12)
    np.testing.assert_allclose(sq_dists_sklearn_order(a, (a * a).sum(1), b, (b * b).sum(1)), direct,
                               rtol=1e-12)
    assert (sq_dists(a, a) >= 0).all()


def test_single_threaded_restores_the_torch_thread_count():
    before = torch.get_num_threads()
    with single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
