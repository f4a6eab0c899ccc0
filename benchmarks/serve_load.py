"""Serving throughput and latency, dynamic batching on vs off, for the default VAE and DDPM.

For each model two `genlab serve` processes run side by side on loopback: batched
(``--max-batch 64 --batch-timeout-ms 5``) and unbatched (``--max-batch 1``). Each is driven by
the open-loop Poisson load test (:mod:`genlab.serve.loadtest`, one record per request, seeded
arrivals) at offered rates doubling from ``--start-rate`` until the achieved throughput falls
below 70% of the offered rate (or ``--max-rate``); the two servers take turns at each rate, so
machine load hits them alike. Saturation throughput = the highest achieved throughput; then
each server runs three more times (taking turns) at half its own saturation: the median p99
of those is its p99 at half saturation.

Reports per model: saturation throughput of both and their ratio (batched / unbatched), p99 at
half saturation, the per-rate table (JSON) and a latency-vs-offered-load plot (PNG).

Runs ``reports/serve-vae`` and ``reports/serve-ddpm`` are trained first when missing
(``genlab run --only train``; the DDPM with ``--ddpm-epochs`` epochs: serving cost does not
depend on how well a model learnt, only on its architecture and sampler).

    python benchmarks/serve_load.py [--models vae,ddpm] [--duration 4] [--out reports/serve_load]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from genlab.ops.runs import atomic_write_text, project_root
from genlab.serve.loadtest import plot_latency, run_rate, saturation

ROOT = project_root()
START = {"vae": 20.0, "ddpm": 2.0}


def ensure_run(kind: str, ddpm_epochs: int) -> Path:
    run = ROOT / "reports" / f"serve-{kind}"
    if (run / "artifacts" / "model.ckpt").is_file():
        return run
    cmd = [sys.executable, "-m", "genlab", "run", "--only", "train", "--name", run.name,
           "--no-progress", "-p", f"model={kind}"]
    if kind == "ddpm":
        cmd += ["-p", f"max_epochs={ddpm_epochs}"]
    print("training:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "serve", str(run), "--port", str(port),
                             "--max-batch", str(max_batch), "--batch-timeout-ms", "5"],
                            stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server for {run} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_model(kind: str, run: Path, args) -> dict:
    servers = {"batched": start_server(run, 64), "unbatched": start_server(run, 1)}
    rows: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for _, url in servers.values():  # warm-up: first requests pay lazy initialisation
            run_rate(url, 5.0, requests=5, duration=2.0, seed=99)
        rate, active = START[kind], set(servers)
        while active and rate <= args.max_rate:
            for name in sorted(active):
                row = run_rate(servers[name][1], rate, requests=int(rate * args.duration) + 1,
                               duration=args.duration, seed=len(rows[name]))
                rows[name].append(row)
                print(f"{kind} {name:9} offered {rate:7.1f}/s -> {row['throughput']:7.1f}/s "
                      f"p50 {row['p50_ms']} p99 {row['p99_ms']} ms, batch {row['mean_batch_size']}",
                      flush=True)
                if row["throughput"] < 0.7 * rate or row["failed"]:
                    active.discard(name)
            rate *= 2
        result = {"run": run.name}
        halves: dict[str, list[dict]] = {name: [] for name in servers}
        for rep in range(3):  # taking turns again; the median of 3 damps a load burst
            for name, (_, url) in servers.items():
                sat = saturation(rows[name])
                halves[name].append(run_rate(url, sat / 2, requests=int(sat / 2 * args.duration)
                                             + 1, duration=args.duration, seed=1000 + rep))
        for name in servers:
            result[name] = {"saturation_rps": saturation(rows[name]),
                            "p99_ms_at_half_saturation": statistics.median(
                                h["p99_ms"] for h in halves[name]),
                            "p50_ms_at_half_saturation": statistics.median(
                                h["p50_ms"] for h in halves[name]),
                            "half_saturation": halves[name], "rates": rows[name]}
        result["saturation_ratio"] = round(result["batched"]["saturation_rps"]
                                           / result["unbatched"]["saturation_rps"], 2)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    plot_latency(rows, args.out / f"latency_{kind}.png",
                 title=f"{kind}: latency vs offered load (1 record/request)")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vae,ddpm")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of arrivals per rate")
    ap.add_argument("--max-rate", type=float, default=2560.0)
    ap.add_argument("--ddpm-epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "serve_load")
    args = ap.parse_args()
    results = {}
    for kind in args.models.split(","):
        results[kind] = bench_model(kind, ensure_run(kind, args.ddpm_epochs), args)
        summary = {k: results[kind][k]["saturation_rps"] for k in ("batched", "unbatched")}
        print(f"{kind}: saturation {summary}, ratio {results[kind]['saturation_ratio']}, p99 at "
              f"half saturation: batched {results[kind]['batched']['p99_ms_at_half_saturation']} ms,"
              f" unbatched {results[kind]['unbatched']['p99_ms_at_half_saturation']} ms", flush=True)
    results["machine"] = {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    atomic_write_text(args.out / "serve_load.json", json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out / 'serve_load.json'}")


if __name__ == "__main__":
    main()
