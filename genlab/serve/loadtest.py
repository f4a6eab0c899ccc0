"""Open-loop load test of a genlab server: Poisson arrivals at offered rates, latency percentiles.

Open loop: each request is sent at its arrival time whether or not earlier ones have answered
(a closed loop — send, wait, send — slows down with the server and hides queueing). Arrival
times are seeded exponential gaps; each rate sends at most ``requests`` requests within at most
``duration`` seconds, and waits at most ``timeout`` seconds for each answer (a request that
times out counts as failed). At most ``connections`` (256) requests are in flight; past that a
request waits for a connection, and the wait counts in its latency. Latency is measured from a request's send time to its full answer.

Per rate: offered rate, requests sent, ok / failed, achieved throughput (ok answers over the time
from the first send to the last answer), p50/p95/p99 latency and the mean ``batch_size`` the
server reported. Saturation throughput is the highest achieved throughput over the rates.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LoadTestError", "run_rate", "run_rates", "saturation", "plot_latency", "main"]


class LoadTestError(ValueError):
    """Bad load-test arguments; the message names the argument."""


def arrival_times(rate: float, requests: int, duration: float, seed: int) -> np.ndarray:
    """Seeded Poisson arrival times in [0, duration), at most ``requests`` of them."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=requests)
    times = np.cumsum(gaps) - gaps[0]  # the first request at t = 0
    return times[times < duration]


async def _one(client, url: str, body: dict, headers: dict, at: float, start: float,
               timeout: float) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    sent = time.perf_counter()
    try:
        r = await client.post(url, json=body, headers=headers, timeout=timeout)
        ok = r.status_code == 200
        batch = r.json().get("batch_size") if ok else None
        status = r.status_code
    except Exception as exc:  # noqa: BLE001 - a timeout or refused connection is a failed request
        ok, batch, status = False, None, type(exc).__name__
    return {"sent": sent, "done": time.perf_counter(), "ok": ok, "status": status,
            "batch_size": batch}


async def _rate(url: str, rate: float, requests: int, duration: float, n: int, seed: int,
                token: str | None, timeout: float, connections: int) -> dict[str, Any]:
    import httpx

    times = arrival_times(rate, requests, duration, seed)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    # open loop up to `connections` requests in flight; beyond that a request waits for a
    # connection (its latency includes the wait): thousands of sockets would make this one
    # Python client, not the server, the bottleneck
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter() + 0.05
        rows = await asyncio.gather(*[
            _one(client, url.rstrip("/") + "/sample", {"n": n, "seed": seed * 1_000_003 + i},
                 headers, float(t), start, timeout) for i, t in enumerate(times)])
    ok = [r for r in rows if r["ok"]]
    lat = np.array([1000 * (r["done"] - r["sent"]) for r in ok])
    span = (max(r["done"] for r in ok) - min(r["sent"] for r in rows)) if ok else float("nan")
    pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if len(lat) else (lambda q: None)
    return {"offered_rate": rate, "sent": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
            "throughput": round(len(ok) / span, 2) if ok else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_batch_size": round(float(np.mean([r["batch_size"] for r in ok])), 2)
            if ok else None,
            "failure_statuses": sorted({str(r["status"]) for r in rows if not r["ok"]})}


def run_rate(url: str, rate: float, *, requests: int = 200, duration: float = 30.0, n: int = 1,
             seed: int = 0, token: str | None = None, timeout: float = 60.0,
             connections: int = 256) -> dict[str, Any]:
    """One offered rate (requests/s): see the module docstring for what the row holds."""
    if rate <= 0:
        raise LoadTestError(f"rates: each offered rate must be > 0 requests/s, got {rate}")
    if requests < 1 or duration <= 0 or n < 1:
        raise LoadTestError(f"requests, duration and n must be positive, got {requests}, "
                            f"{duration}, {n}")
    return asyncio.run(_rate(url, rate, requests, duration, n, seed, token, timeout, connections))


def run_rates(url: str, rates: list[float], **kw) -> list[dict[str, Any]]:
    return [run_rate(url, r, **kw) for r in rates]


def saturation(rows: list[dict[str, Any]]) -> float:
    """The highest achieved throughput over the rates (requests/s)."""
    return max((r["throughput"] for r in rows), default=0.0)


def plot_latency(results: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> None:
    """p50 and p99 latency against offered rate, one line pair per server (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, rows), color in zip(results.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = [r for r in rows if r["p50_ms"] is not None]
        x = [r["offered_rate"] for r in rows]
        ax.plot(x, [r["p50_ms"] for r in rows], "o-", color=color, label=f"{label} p50")
        ax.plot(x, [r["p99_ms"] for r in rows], "s--", color=color, label=f"{label} p99")
    ax.set(xscale="log", yscale="log", xlabel="offered load (requests/s)",
           ylabel="latency (ms)", title=title)
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 2×10^0
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LoadTestError(f"--rates: expected comma-separated numbers, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise LoadTestError(f"--rates: expected positive requests/s, got {text!r}")
    return rates


def main(args) -> int:
    """``genlab loadtest``: a table per rate, optionally JSON and a plot."""
    from genlab.ops.reports import Table

    rates = parse_rates(args.rates)
    token = None if args.token_file is None else args.token_file.read_text().strip()
    rows = run_rates(args.url, rates, requests=args.requests, duration=args.duration, n=args.n,
                     seed=args.seed, token=token)
    print(repr(Table([{k: v for k, v in r.items() if k != "failure_statuses"} for r in rows],
                     title=f"load test: {args.url}", digits=4)))
    print(f"saturation throughput: {saturation(rows)} requests/s")
    if args.json:
        from genlab.ops.runs import atomic_write_text

        atomic_write_text(args.json, json.dumps({"url": args.url, "rows": rows}, indent=1) + "\n")
    if args.plot:
        plot_latency({args.url: rows}, args.plot)
    return 1 if any(r["failed"] for r in rows) else 0
