"""Run folders of every model kind for serving, and a real server on 127.0.0.1 in a thread.

The VAE is the session's trained ``tiny_run``; the others are small models written untrained
(seeded weights): serving does not care what the weights learnt, only that the checkpoint loads
and samples."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import torch
import uvicorn

from genlab.models import build_model
from genlab.serve.app import Arm, ServeConfig, create_app
from genlab.serve.sampler import load_sampler
from genlab.train import training

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
