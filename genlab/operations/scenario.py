"""Scripted operations against a real `genlab serve` process on loopback: the building blocks of
the operations scenario (serve, send seeded traffic, run a canary round and apply its decision
while traffic keeps flowing) and a deliberately broken candidate (damaged weights).

A canary round: the server runs champion + candidate (a `share` of request ids go to the
candidate), seeded traffic is sent, `online.online_metrics` reads the request log, the canary
rule decides (`canary.decide`), and the decision is applied through the admin endpoint while a
second client keeps sending requests, so a failed request during the switch would show in the
log. The round reports what an operations review asks: the decision and its test, requests the
candidate answered before it, and failed requests (overall and during the switch).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from genlab.models.checkpoint import read_checkpoint

SERVER_START_S = 120.0


class ScenarioError(RuntimeError):
    """The server did not start, or answered what the scenario cannot use."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(source: str | Path, request_log: Path, *, candidate: str | Path | None = None,
           share: float = 0.2, max_batch: int = 64) -> Iterator[str]:
    """`genlab serve SOURCE --log-outputs` as a child process on 127.0.0.1; yields its URL and
    stops it (SIGTERM, then kill after 20 s) on exit."""
    port = _free_port()
    cmd = [sys.executable, "-m", "genlab", "serve", str(source), "--port", str(port),
           "--request-log", str(request_log), "--log-outputs", "--max-batch", str(max_batch)]
    if candidate is not None:
        cmd += ["--candidate", str(candidate), "--candidate-share", str(share)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise ScenarioError(f"genlab serve exited with {proc.returncode}: "
                                    f"{proc.stdout.read()[-1500:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ScenarioError(f"genlab serve did not answer /health in {SERVER_START_S} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_sample(url: str, body: dict[str, Any], request_id: str, timeout: float = 60.0) -> int:
    """One POST /sample; the HTTP status (a connection error counts as status 0)."""
    req = urllib.request.Request(url + "/sample", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-Request-ID": request_id})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def traffic(url: str, n_requests: int, *, n: int = 16, n_classes: int = 0, seed: int = 0,
            prefix: str = "req") -> list[int]:
    """`n_requests` seeded requests of `n` records (labels drawn uniformly when the model is
    conditional, `n_classes` > 0); their statuses."""
    rng = np.random.default_rng([seed, 51])
    statuses = []
    for i in range(n_requests):
        body: dict[str, Any] = {"n": n, "seed": int(rng.integers(2**31)), "format": "json"}
        if n_classes:
            body["labels"] = rng.integers(0, n_classes, n).tolist()
        statuses.append(post_sample(url, body, f"{prefix}-{seed}-{i}"))
    return statuses


def damaged_copy(run_dir: Path, dest: Path, *, noise: float = 1.0, seed: int = 0) -> Path:
    """A broken candidate: a copy of the run's data spec and checkpoint whose floating-point
    weights get Gaussian noise of `noise` × each tensor's own standard deviation."""
    src = Path(run_dir)
    (dest / "artifacts").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "artifacts" / "data_spec.json", dest / "artifacts" / "data_spec.json")
    ckpt = read_checkpoint(src / "artifacts" / "model.ckpt")
    g = torch.Generator().manual_seed(seed)
    state = ckpt["state_dict"]
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
            state[key] = value + noise * value.std() * torch.randn(value.shape, generator=g,
                                                                   dtype=value.dtype)
    torch.save(ckpt, dest / "artifacts" / "model.ckpt")
    return dest


def canary_round(champion: Path, candidate: str | Path, workdir: Path, *,
                 champion_source: str | None = None, n_requests: int = 200, n: int = 16,
                 share: float = 0.2, alpha: float = 0.05, margin: float = 0.05,
                 window: int = 50, arl0_target: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Serve champion + candidate, send traffic, decide, apply the decision under traffic.
    `champion` is the approved run folder (its samples and classifier are the reference);
    `champion_source` what the server loads for it (default: the folder; or models:/NAME@alias)."""
    from genlab.operations import canary, online

    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "requests.jsonl"
    log.unlink(missing_ok=True)
    with server(champion_source or champion, log, candidate=candidate, share=share) as url:
        with urllib.request.urlopen(url + "/metadata", timeout=10) as resp:
            meta = json.loads(resp.read())
        n_classes = meta["num_classes"] if meta["conditional"] else 0
        traffic(url, n_requests, n=n, n_classes=n_classes, seed=seed)
        rows = online.read_log(log)
        metrics = online.online_metrics(rows, champion, window=window, arl0_target=arl0_target,
                                        alpha=alpha, seed=seed)
        decision = canary.decide(metrics, alpha=alpha, margin=margin)
        during: list[int] = []
        sender = threading.Thread(target=lambda: during.extend(
            traffic(url, 40, n=n, n_classes=n_classes, seed=seed + 1, prefix="switch")))
        sender.start()
        time.sleep(0.2)
        applied = canary.apply(url, decision)
        sender.join()
        with urllib.request.urlopen(url + "/metadata", timeout=10) as resp:
            after = json.loads(resp.read())
    all_rows = online.read_log(log)
    return {"decision": decision.as_dict(), "applied": applied, "metrics": metrics,
            "rows": [{k: v for k, v in r.items() if k != "outputs"} for r in all_rows],
            "candidate_requests_before_decision": metrics.get("candidate_requests", 0),
            "failed_requests": sum(r.get("status") != 200 for r in all_rows),
            "failed_requests_during_switch": sum(s != 200 for s in during),
            "requests_during_switch": len(during),
            "champion_after": after["arms"]["champion"]["source"],
            "candidate_after": (after["arms"].get("candidate") or {}).get("source")}
