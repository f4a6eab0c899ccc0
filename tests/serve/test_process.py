"""`genlab serve` as a process (start, SIGTERM), its argument checks, and the load tester."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from genlab.ops.cli import main
from genlab.serve.loadtest import (LoadTestError, arrival_times, parse_rates, plot_latency,
                                   run_rate, saturation)

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_stops_cleanly_and_frees_the_port(serve_runs, tmp_path, port):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "serve", str(serve_runs[("vae", False)]),
                             "--port", str(port), "--request-log", str(tmp_path / "log.jsonl")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - started < 60, "server did not start in 60 s"
            time.sleep(0.1)
        assert httpx.post(f"http://127.0.0.1:{port}/sample", json={"n": 2}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "genlab serve: vae" in out
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("args,text", [
    (["--max-batch", "0"], "--max-batch"),
    (["--candidate-share", "1.5"], "--candidate-share"),
    (["--token-file", "/nonexistent/token"], "--token-file"),
])
def test_serve_refuses_bad_options(serve_runs, capsys, args, text):
    assert main(["serve", str(serve_runs[("vae", False)]), *args]) == 2
    assert text in capsys.readouterr().err


def test_serve_refuses_unknown_sources(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["serve", "models:/x@champion"]) == 2
    assert "models:/" in capsys.readouterr().err


def test_arrivals_are_seeded_poisson_and_bounded():
    t = arrival_times(50.0, 5000, 1e9, seed=3)
    assert np.array_equal(t, arrival_times(50.0, 5000, 1e9, seed=3)) and t[0] == 0
    assert abs(np.mean(np.diff(t)) - 1 / 50) < 0.002  # mean gap 1/rate
    assert len(arrival_times(50.0, 5000, 2.0, seed=3)) < 150  # the duration bounds it too
    with pytest.raises(LoadTestError, match="--rates"):
        parse_rates("5,x")


def test_load_test_against_a_server(serve_runs, serve_at):
    with serve_at(serve_runs[("vae", False)]) as url:
        row = run_rate(url, 40.0, requests=30, duration=5.0, seed=1)
    assert row["sent"] == row["ok"] == 30 and row["failed"] == 0
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["throughput"] > 0


def test_saturation_and_plot(tmp_path):
    rows = [{"offered_rate": r, "throughput": t, "p50_ms": p, "p99_ms": 2 * p}
            for r, t, p in ((10, 9.8, 3.0), (40, 38.0, 5.0), (160, 60.0, 900.0))]
    assert saturation(rows) == 60.0
    plot_latency({"batched": rows, "unbatched": rows[:2]}, tmp_path / "lat.png")
    assert (tmp_path / "lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
