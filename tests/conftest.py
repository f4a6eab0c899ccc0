"""Fixtures every test folder shares: the digits data and its pools, typed parameters, one
thread, and tiny trained models and runs built once per session.

Before any test touches torch, `reproducibility.configure()` pins the intra-op threads
(GENLAB_THREADS, default 1) and sets the portable-kernel switches, unless the environment already
chose others (`make test-other-machine` sets ATEN_CPU_CAPABILITY, MKL_CBWR and GENLAB_THREADS on
purpose)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from genlab import data, reproducibility
from genlab.models import build_model
from genlab.numerics import single_threaded
from genlab.ops.runs import RunFolder
from genlab.train import training

reproducibility.configure()
training.quiet_lightning()


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    """The embedded digits data set (1797 records, 1×8×8 in [0, 1], 10 classes)."""
    return data.load_dataset("digits")


@pytest.fixture(scope="session")
def digits_spec(digits) -> data.DataSpec:
    """The default pools of digits (seed 0)."""
    return data.DataSpec.build(digits, seed=0)


class Pools32:
    """digits with 32 members (``n_train=32``): few enough for a tiny model to overfit."""

    def __init__(self, ds: data.Dataset):
        self.ds = ds
        self.spec = data.DataSpec.build(ds, seed=0, n_train=32)

    def x(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.ds.x[self.spec.pool(name)])

    def y(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.ds.y[self.spec.pool(name)]).long()


@pytest.fixture(scope="session")
def d32(digits) -> Pools32:
    return Pools32(digits)


def _train_ddpm(x: torch.Tensor, steps: int, *, y: torch.Tensor | None = None, seed: int = 0,
                timesteps: int = 100, **hp):
    """A tiny U-Net DDPM trained full-batch on ``x`` (labels ``y`` for a conditional one) by its
    own ``training_step`` in a plain loop (no Lightning per-epoch cost): with 32 records, ~100
    steps overfit it enough for the attack to see."""
    training.seed_everything(seed)
    model = build_model("ddpm", list(x.shape[1:]), width=16, timesteps=timesteps, ema_decay=0.99, **hp)
    opt = torch.optim.Adam(model.net.parameters(), lr=2e-3)
    batch = (x, torch.full((len(x),), -1) if y is None else y)
    for _ in range(steps):
        loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_ema()
    return model.eval()


@pytest.fixture(scope="session")
def train_ddpm():
    """The tiny-DDPM trainer (a function: tests choose the records, steps and labels)."""
    return _train_ddpm


def _perturbed_model(kind: str, hp: dict, seed: int = 0):
    """A tiny untrained model of ``kind`` with every weight jittered (the DDPM's zero-initialised
    output layer included, its EMA set to the jittered weights): non-trivial outputs in seconds."""
    training.seed_everything(seed)
    model = build_model(kind, [1, 8, 8], **hp).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        if kind == "ddpm":
            model.ema.load_state_dict(model.net.state_dict())
    return model


@pytest.fixture(scope="session")
def perturbed_model():
    """The jittered-tiny-model builder (a function: tests choose kind and hyper-parameters)."""
    return _perturbed_model


@pytest.fixture
def one_thread():
    """One BLAS and one torch thread: tiny networks run 5-10× slower with two threads on a
    loaded 2-core machine."""
    with single_threaded():
        yield


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, digits_spec) -> RunFolder:
    """A run folder holding only the digits data spec (what 01_train writes first): for
    evaluations of stub generators and external samples (no model.ckpt)."""
    run = RunFolder(tmp_path_factory.mktemp("digits-run"))
    digits_spec.save(run.data_spec)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, digits, digits_spec) -> RunFolder:
    """A run folder as 01_train leaves it (data spec, model.ckpt) for the tests that need a real
    checkpoint: a small VAE trained 1 epoch on 128 members (seconds). Tests may add artifacts
    (the drift study's fine-tuning folder) but never change its data spec or model.ckpt."""
    run = RunFolder(tmp_path_factory.mktemp("tiny-run"))
    digits_spec.save(run.data_spec)
    training.seed_everything(0)
    model = build_model("vae", list(digits.data_shape), latent_dim=4, arch="mlp", width=16, depth=1)
    x = torch.from_numpy(digits.x[digits_spec.pool("members")][:128])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64)
    res = training.fit(model, train_dataloaders=loader, ckpt_dir=run.checkpoints,
                       cfg=training.TrainConfig(max_epochs=1, batch_size=64, seed=0))
    shutil.copyfile(res.last_ckpt, run.model_ckpt)
    return run


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory, digits, digits_spec) -> RunFolder:
    """A run folder with the default VAE architecture trained 30 epochs on all members (a few
    seconds): a model that has learnt enough to sit between the real-vs-real floor and the noise
    baseline, for the sanity-row gate. Never changed by tests."""
    run = RunFolder(tmp_path_factory.mktemp("vae-run"))
    digits_spec.save(run.data_spec)
    training.seed_everything(0)
    model = build_model("vae", list(digits.data_shape), latent_dim=16, depth=2)
    x = torch.from_numpy(digits.x[digits_spec.pool("members")])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64,
                                         shuffle=True)
    res = training.fit(model, train_dataloaders=loader, ckpt_dir=run.checkpoints,
                       cfg=training.TrainConfig(max_epochs=30, batch_size=64, seed=0))
    shutil.copyfile(res.last_ckpt, run.model_ckpt)
    return run
