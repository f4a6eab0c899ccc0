"""``genlab serve``: a run's model behind HTTP, with dynamic batching, a request log and canary arms.

Why FastAPI + uvicorn and not LitServe (0.2.19, measured on this project's 2-core machine with a
toy API): LitServe started in ~3 s, but SIGTERM to the server left it exiting 143 with its
uvicorn and inference worker processes still alive and holding the port; malformed JSON and a
missing field came back as 500 (not 4xx) unless every decoder maps its own errors; and the model
lives in separate worker processes, so an admin endpoint cannot swap champion and candidate
atomically in the process that serves them. FastAPI + uvicorn in one process with an asyncio
batching queue (:mod:`genlab.serve.batching`) starts in the time it takes to import torch and
load the checkpoint, exits 0 on SIGTERM with the port freed, and swaps arms with one assignment.

Endpoints (JSON unless said otherwise; with ``--token-file`` every endpoint but ``/health``
needs ``Authorization: Bearer <token>``, else 401):

- ``POST /sample`` ``{"n": int, "labels": [int] | null, "seed": int | null, "steps": int | null,
  "format": "json" | "npz" | "png"}``. ``labels`` only for a conditional model (null: drawn from
  the class prior with the seed); ``steps`` only for a DDPM; ``seed`` null: the server draws one
  and returns it. JSON answers ``{"request_id", "seed", "labels", "shape", "samples", "version",
  "source", "variant", "batch_size"}``; ``npz`` is ``np.savez`` of ``x`` (float32, n×C×H×W in
  [0, 1]), ``labels`` and ``seed``; ``png`` a grid of the samples. Both carry ``X-Request-ID``,
  ``X-Seed`` and ``X-Version`` headers. An ``X-Request-ID`` header sent by the client is used
  as the request id (and so decides the canary arm). Errors: 400 malformed JSON, 413 body over
  the limit, 422 a field (the message names it), 401 auth; the server keeps serving.
- ``GET /health`` → ``{"status": "ok"}``.
- ``GET /metadata`` → genlab version, variant, batching settings, limits and per arm (champion,
  candidate) its source, run, model kind, conditional, classes, data fingerprint, share.
- ``POST /admin/promote`` (the candidate becomes the champion), ``POST /admin/rollback`` (the
  candidate is removed): 409 without a candidate. Requests in flight finish on the arm that
  took them: an arm swap is one assignment of an immutable object.

Request log (``--request-log PATH``): JSON lines, one per request to ``/sample`` (errors
included), appended and flushed per line. Keys, stable:

- ``time``: UTC ISO-8601 with milliseconds, when the answer was ready
- ``request_id``: str; ``status``: HTTP status code (int); ``error``: message, only when status ≠ 200
- ``n``, ``seed``, ``steps``, ``format``: as served (null when the request did not get that far)
- ``labels``: the labels the samples were generated for (drawn ones included), null for an
  unconditional model
- ``latency_ms``: float, request received → answer ready
- ``batch_size``: records in the model call the request joined
- ``variant``: e.g. ``fp32``; ``version``: ``"champion"`` or ``"candidate"``; ``source``: the
  SOURCE the arm was started from
- ``outputs``: only with ``--log-outputs``: base64 of the ``npz`` answer (``x``, ``labels``, ``seed``)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import genlab
from genlab.serve.batching import Batcher
from genlab.serve.sampler import Draw, load_sampler, resolve_source

__all__ = ["Arm", "ServeConfig", "create_app", "serve"]

MAX_BODY_BYTES = 64 * 1024
FIELDS = ("n", "labels", "seed", "steps", "format")
FORMATS = ("json", "npz", "png")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Arm:
    name: str  # "champion" | "candidate"
    source: str
    sampler: Any

    def describe(self) -> dict[str, Any]:
        s = self.sampler
        info = {"source": self.source, "run": s.run_dir.name, "model_kind": s.kind,
                "conditional": s.conditional, "num_classes": s.num_classes, "variant": s.variant,
                "data_shape": list(s.data_shape), "data_fingerprint": _fingerprint(s.run_dir)}
        if s.timesteps is not None:
            info["timesteps"] = s.timesteps
        return info


@dataclass(frozen=True)
class Arms:
    """Champion and optional candidate; replaced as a whole (never mutated) on promote/rollback."""

    champion: Arm
    candidate: Arm | None = None
    share: float = 0.0

    def route(self, request_id: str) -> Arm:
        """The candidate for a ``share`` of request ids (by hash: the same id, the same arm)."""
        if self.candidate is None:
            return self.champion
        h = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2.0 ** 64
        return self.candidate if h < self.share else self.champion


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 64
    batch_timeout_ms: float = 5.0
    max_n: int = 1024
    token: str | None = None
    request_log: Path | None = None
    log_outputs: bool = False


def _fingerprint(run_dir: Path) -> str | None:
    path = run_dir / "artifacts" / "data_spec.json"
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_request(body: bytes, sampler, max_n: int) -> dict[str, Any]:
    """The checked fields of a ``/sample`` body for ``sampler``; RequestError names the field."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RequestError(422, f"body: expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise RequestError(422, f"{unknown[0]}: unknown field; expected fields {list(FIELDS)}")
    n = doc.get("n")
    if not _is_int(n) or not 1 <= n <= max_n:
        raise RequestError(422, f"n: expected an int in [1, {max_n}], got {n!r}")
    fmt = doc.get("format", "json")
    if fmt not in FORMATS:
        raise RequestError(422, f"format: expected one of {list(FORMATS)}, got {fmt!r}")
    seed = doc.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2 ** 63):
        raise RequestError(422, f"seed: expected null or an int in [0, 2^63), got {seed!r}")
    steps = doc.get("steps")
    if steps is not None:
        if sampler.kind != "ddpm":
            raise RequestError(422, f"steps: only a ddpm samples in steps; this model is a "
                                    f"{sampler.kind}, send steps=null")
        if not _is_int(steps) or not 1 <= steps <= sampler.timesteps:
            raise RequestError(422, f"steps: expected null or an int in [1, {sampler.timesteps}], "
                                    f"got {steps!r}")
    labels = doc.get("labels")
    if labels is not None:
        if not sampler.conditional:
            raise RequestError(422, f"labels: this {sampler.kind} is unconditional; send "
                                    "labels=null")
        k = sampler.num_classes
        if (not isinstance(labels, list) or len(labels) != n
                or not all(_is_int(v) and 0 <= v < k for v in labels)):
            raise RequestError(422, f"labels: expected null or a list of {n} ints in [0, {k}), "
                                    f"got {json.dumps(labels)[:200]}")
        labels = torch.tensor(labels, dtype=torch.long)
    return {"n": n, "labels": labels, "seed": secrets.randbits(31) if seed is None else seed,
            "steps": steps, "format": fmt}


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"body: {declared} bytes, over the limit of {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"body: over the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _npz(x: np.ndarray, labels: list[int] | None, seed: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, labels=np.asarray([] if labels is None else labels, dtype=np.int64),
             seed=np.int64(seed))
    return buf.getvalue()


def _png(x: np.ndarray, scale: int = 4) -> bytes:
    """The samples as one grid image (ceil(sqrt(n)) columns, 1 px gaps, ``scale``× pixels)."""
    from PIL import Image

    n, c, h, w = x.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            x[i].transpose(1, 2, 0)
    img = (grid * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if c == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


class RequestLog:
    """Append-only JSON lines (see the module docstring); None path: nothing is written."""

    def __init__(self, path: Path | None):
        self._fh = None if path is None else open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def create_app(champion: Arm, config: ServeConfig, candidate: Arm | None = None,
               share: float = 0.0) -> FastAPI:
    """The FastAPI app serving ``champion`` (and ``candidate`` for a ``share`` of requests)."""
    if candidate is not None and not 0.0 <= share <= 1.0:
        raise ValueError(f"candidate share must be in [0, 1], got {share}")
    state = {"arms": Arms(champion, candidate, share if candidate else 0.0)}
    batcher = Batcher(config.max_batch, config.batch_timeout_ms / 1000)
    log = RequestLog(config.request_log)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            log.close()

    app = FastAPI(title="genlab serve", version=genlab.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> bool:
        if config.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode())

    def unauthorised() -> JSONResponse:
        return JSONResponse({"detail": "authorization: missing or wrong bearer token"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata(request: Request):
        if not authorised(request):
            return unauthorised()
        arms = state["arms"]
        out = {"genlab_version": genlab.__version__, **arms.champion.describe(),
               "max_batch": config.max_batch, "batch_timeout_ms": config.batch_timeout_ms,
               "max_n": config.max_n, "max_body_bytes": MAX_BODY_BYTES,
               "arms": {"champion": {**arms.champion.describe(), "share": 1.0 - arms.share}}}
        if arms.candidate is not None:
            out["arms"]["candidate"] = {**arms.candidate.describe(), "share": arms.share}
        return out

    @app.post("/admin/{action}")
    async def admin(action: str, request: Request):
        if not authorised(request):
            return unauthorised()
        arms = state["arms"]
        if action not in ("promote", "rollback"):
            return JSONResponse({"detail": f"action: expected promote or rollback, got {action!r}"},
                                404)
        if arms.candidate is None:
            return JSONResponse({"detail": f"{action}: there is no candidate arm"}, 409)
        if action == "promote":
            state["arms"] = Arms(replace(arms.candidate, name="champion"))
        else:
            state["arms"] = Arms(arms.champion)
        return {"action": action, "champion": state["arms"].champion.source}

    @app.post("/sample")
    async def sample(request: Request):
        started = time.perf_counter()
        given_id = request.headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex
        arm = state["arms"].route(request_id)
        row = {"request_id": request_id, "n": None, "labels": None, "seed": None, "steps": None,
               "format": None, "batch_size": None, "variant": arm.sampler.variant,
               "version": arm.name, "source": arm.source}

        def finish(status: int, error: str | None = None, **extra) -> None:
            row.update(extra, status=status, latency_ms=round(1000 * (time.perf_counter() - started), 3),
                       time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
            if error is not None:
                row["error"] = error
            log.write(row)

        if not authorised(request):
            finish(401, "authorization: missing or wrong bearer token")
            return unauthorised()
        try:
            req = parse_request(await _read_body(request), arm.sampler, config.max_n)
        except RequestError as exc:
            finish(exc.status, str(exc))
            return JSONResponse({"detail": str(exc), "request_id": request_id}, exc.status)
        row.update(n=req["n"], seed=req["seed"], steps=req["steps"], format=req["format"])
        draw = Draw(req["n"], req["seed"], req["labels"], req["steps"])
        if arm.sampler.conditional and draw.labels is None:  # drawn here so the answer names them
            draw = replace(draw, labels=arm.sampler.prior_labels(draw.n, draw.seed))
        try:
            result = await batcher.submit(arm.sampler, draw)
        except Exception as exc:  # noqa: BLE001 - the model failed: 500, logged, server goes on
            finish(500, f"sampling failed: {type(exc).__name__}: {exc}")
            return JSONResponse({"detail": f"sampling failed: {type(exc).__name__}: {exc}",
                                 "request_id": request_id}, 500)
        x = result.samples.to(torch.float32).cpu().numpy()
        labels = None if draw.labels is None else draw.labels.tolist()
        headers = {"X-Request-ID": request_id, "X-Seed": str(draw.seed), "X-Version": arm.name}
        extra = {"labels": labels, "batch_size": result.batch_size}
        if config.log_outputs:
            extra["outputs"] = base64.b64encode(_npz(x, labels, draw.seed)).decode("ascii")
        if req["format"] == "npz":
            body, media = _npz(x, labels, draw.seed), "application/octet-stream"
        elif req["format"] == "png":
            body, media = _png(x), "image/png"
        else:
            finish(200, **extra)
            return JSONResponse({"request_id": request_id, "seed": draw.seed, "labels": labels,
                                 "shape": list(x.shape), "samples": x.tolist(),
                                 "version": arm.name, "source": arm.source,
                                 "variant": arm.sampler.variant,
                                 "batch_size": result.batch_size}, headers=headers)
        finish(200, **extra)
        return Response(body, media_type=media, headers=headers)

    return app


class StopServer(uvicorn.Server):
    """uvicorn's server, stopped gracefully by SIGTERM/SIGINT without re-raising the signal
    afterwards (uvicorn does, so the process would die by it): ``genlab serve`` then exits 0 on
    SIGTERM, 130 on SIGINT."""

    stopped_by: int | None = None

    @contextlib.contextmanager
    def capture_signals(self):
        def stop(sig, frame):
            self.stopped_by = sig
            self.force_exit = self.should_exit and sig == signal.SIGINT  # a second Ctrl+C
            self.should_exit = True

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(source: str, *, host: str = "127.0.0.1", port: int = 8000, variant: str = "fp32",
          candidate: str | None = None, candidate_share: float = 0.2,
          config: ServeConfig = ServeConfig()) -> int:
    """Load the arms, then serve until SIGINT/SIGTERM (uvicorn's graceful shutdown); exit status."""
    from genlab.reproducibility import configure

    configure()
    champion = Arm("champion", str(source), load_sampler(resolve_source(source), variant))
    second = None if candidate is None else Arm(
        "candidate", str(candidate), load_sampler(resolve_source(candidate), variant))
    app = create_app(champion, config, second, candidate_share)
    if host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        print(f"genlab serve: warning: listening on {host} without --token-file", file=sys.stderr)
    server = StopServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    print(f"genlab serve: {champion.sampler.kind} from {source} ({variant}) on "
          f"http://{host}:{port}", flush=True)
    server.run()
    if not server.started:
        return 1
    return 130 if server.stopped_by == signal.SIGINT else 0
