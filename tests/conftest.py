"""Fixtures every test folder shares: the digits data and its pools, typed parameters, one
thread, and tiny trained models and runs built once per session.

Before any test touches torch, `reproducibility.configure()` pins the intra-op threads
(GENLAB_THREADS, default 1) and sets the portable-kernel switches, unless the environment already
chose others (`make test-other-machine` sets ATEN_CPU_CAPABILITY, MKL_CBWR and GENLAB_THREADS on
purpose)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

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


def _save_checkpoint(model, path):
    """`model` written as Lightning writes a checkpoint (no training): what load_model reads."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def save_checkpoint():
    """The checkpoint writer (a function: tests choose the model and the path)."""
    return _save_checkpoint


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
def chromium():
    """Run headless Chromium on a page (`--dump-dom URL`, `--screenshot=PNG URL`); skips the
    test where Debian's chromium is not installed."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")

    def run(*args):
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}"]
        return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)

    return run


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


@pytest.fixture
def headline_run(tmp_path):
    """A run folder built from recorded headline JSON (tests/operations/data/, a default digits
    run) with stand-in reports, a stand-in checkpoint and a training notebook whose sample cell
    shows a PNG: for the front page, the model card and the registry, without training."""
    import base64
    import io
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = tmp_path / "run-a"
    (run / "artifacts").mkdir(parents=True)
    for path in sorted((Path(__file__).parent / "operations" / "data").glob("*.json")):
        shutil.copy(path, run / path.name)
        (run / f"{path.stem}.html").write_text(f"<html><body>{path.stem}</body></html>\n")
    (run / "artifacts" / "model.ckpt").write_bytes(b"stand-in checkpoint of run-a")
    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.imshow(np.arange(64).reshape(8, 8), cmap="gray")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    cell = {"cell_type": "code", "source": "report.samples()", "metadata": {},
            "outputs": [{"output_type": "display_data", "data": {"image/png": png}}]}
    (run / "01_train.ipynb").write_text(json.dumps({"cells": [cell], "metadata": {}}))
    return run


# ----------------------------------------------------------------------------- serving
# Run folders of every model kind for serving, and a real server on 127.0.0.1 in a thread. The
# VAE is the session's trained ``tiny_run``; the others are small models written untrained
# (seeded weights): serving does not care what the weights learnt, only that the checkpoint
# loads and samples.
SMALL = {
    "vae": dict(latent_dim=4, arch="mlp", width=16, depth=1),
    "gan": dict(latent_dim=4, arch="mlp", width=16, depth=1),
    "ddpm": dict(width=8, timesteps=20, sampling_steps=4),
}


def write_run(folder, kind: str, conditional: bool, data_shape=(1, 8, 8), spec=None):
    """A run folder holding ``artifacts/model.ckpt`` of a small seeded ``kind`` model."""
    training.seed_everything(0)
    model = build_model(kind, list(data_shape), n_classes=10 if conditional else 0, **SMALL[kind])
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    if spec is not None:
        spec.save(folder / "artifacts" / "data_spec.json")
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)},
               folder / "artifacts" / "model.ckpt")
    return folder


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, tiny_run, digits_spec):
    """``{(kind, conditional): run folder}`` for vae/gan/ddpm, unconditional and conditional."""
    runs = {("vae", False): tiny_run.path}
    for kind in ("vae", "gan", "ddpm"):
        for cond in (False, True):
            if (kind, cond) not in runs:
                runs[(kind, cond)] = write_run(tmp_path_factory.mktemp(f"{kind}-{cond}"), kind,
                                               cond, spec=digits_spec)
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(run_dir, *, candidate=None, share: float = 0.0, **config):
    """A genlab server for ``run_dir`` on 127.0.0.1 (a uvicorn thread), stopped on exit."""
    import uvicorn

    from genlab.serve.app import Arm, ServeConfig, create_app
    from genlab.serve.sampler import load_sampler

    champion = Arm("champion", str(run_dir), load_sampler(run_dir))
    second = None if candidate is None else Arm("candidate", str(candidate),
                                                load_sampler(candidate))
    app = create_app(champion, ServeConfig(**config), second, share)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    server.install_signal_handlers = lambda: None  # a thread cannot own signals
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()


@pytest.fixture
def serve_at():
    return running


@pytest.fixture(scope="session")
def fresh_run():
    return write_run
