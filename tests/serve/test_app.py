"""The HTTP server: round trips of every model kind, bad requests, auth, batching, canary arms."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from genlab.serve.sampler import load_sampler

KINDS = [(k, c) for k in ("vae", "gan", "ddpm") for c in (False, True)]


def log_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kind,conditional", KINDS)
def test_round_trip_gives_the_samplers_samples(serve_runs, serve_at, kind, conditional):
    run = serve_runs[(kind, conditional)]
    labels = [3, 0, 9] if conditional else None
    with serve_at(run) as url:
        r = httpx.post(url + "/sample", json={"n": 3, "labels": labels, "seed": 11})
        meta = httpx.get(url + "/metadata").json()
    assert r.status_code == 200, r.text
    body = r.json()
    x = np.array(body["samples"], dtype=np.float32)
    assert x.shape == (3, 1, 8, 8) and body["shape"] == [3, 1, 8, 8]
    assert 0 <= x.min() and x.max() <= 1
    expected = load_sampler(run).sample(3, None if labels is None else torch.tensor(labels), 11)
    np.testing.assert_allclose(x, expected.numpy(), atol=1e-6)
    assert body["labels"] == labels and body["seed"] == 11 and body["version"] == "champion"
    assert meta["model_kind"] == kind and meta["conditional"] == conditional
    assert meta["variant"] == "fp32" and set(meta["arms"]) == {"champion"}
    assert meta["data_fingerprint"] is not None


def test_conditional_without_labels_draws_and_reports_them(serve_runs, serve_at):
    run = serve_runs[("gan", True)]
    with serve_at(run) as url:
        body = httpx.post(url + "/sample", json={"n": 5, "seed": 4}).json()
    model_samples = load_sampler(run).model.sample(5, seed=4)
    assert body["labels"] == load_sampler(run).prior_labels(5, 4).tolist()
    np.testing.assert_allclose(np.array(body["samples"]), model_samples.numpy(), atol=1e-6)


def test_npz_and_png_formats(serve_runs, serve_at):
    with serve_at(serve_runs[("ddpm", True)]) as url:
        npz = httpx.post(url + "/sample", json={"n": 4, "seed": 2, "steps": 2, "format": "npz",
                                                "labels": [1, 1, 2, 2]})
        png = httpx.post(url + "/sample", json={"n": 5, "seed": 2, "format": "png"})
    assert npz.status_code == 200 and npz.headers["x-seed"] == "2"
    arrays = np.load(io.BytesIO(npz.content))
    assert arrays["x"].shape == (4, 1, 8, 8) and arrays["labels"].tolist() == [1, 1, 2, 2]
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (4 * 28, 4 * 19)  # 3x2 grid of 8+1 px


BAD = [  # (body bytes or JSON, status, text the message must contain)
    (b'{"n": 2', 400, "body"),
    ([1, 2], 422, "body"),
    ({"n": "2"}, 422, "n:"),
    ({"n": 2.0}, 422, "n:"),
    ({"n": True}, 422, "n:"),
    ({"n": 0}, 422, "n:"),
    ({"n": 10_000}, 422, "n:"),
    ({}, 422, "n:"),
    ({"n": 2, "seed": "x"}, 422, "seed:"),
    ({"n": 2, "seed": -1}, 422, "seed:"),
    ({"n": 2, "format": "gif"}, 422, "format:"),
    ({"n": 2, "colour": 1}, 422, "colour"),
    ({"n": 2, "labels": [0, 1]}, 422, "labels:"),  # unconditional model
    ({"n": 2, "steps": 3}, 422, "steps:"),  # not a DDPM
    (b"x" * 70_000, 413, "body"),
]


def test_bad_requests_get_4xx_naming_the_field_and_the_server_keeps_serving(
        serve_runs, serve_at, tmp_path):
    log = tmp_path / "log.jsonl"
    with serve_at(serve_runs[("vae", False)], request_log=log) as url:
        for body, status, text in BAD:
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = httpx.post(url + "/sample", headers={"content-type": "application/json"}, **kw)
            assert r.status_code == status, (body, r.text)
            assert text in r.json()["detail"], (body, r.json())
        assert httpx.post(url + "/sample", json={"n": 1}).status_code == 200
    rows = log_rows(log)
    assert [r["status"] for r in rows] == [s for _, s, _ in BAD] + [200]
    assert all("error" in r for r in rows[:-1]) and "error" not in rows[-1]


@pytest.mark.parametrize("body,text", [
    ({"n": 2, "labels": [0, 10]}, "labels:"),
    ({"n": 2, "labels": [0]}, "labels:"),
    ({"n": 2, "labels": [0, 1.5]}, "labels:"),
    ({"n": 2, "steps": 0}, "steps:"),
    ({"n": 2, "steps": 21}, "steps:"),
])
def test_conditional_ddpm_field_limits(serve_runs, serve_at, body, text):
    with serve_at(serve_runs[("ddpm", True)]) as url:
        r = httpx.post(url + "/sample", json=body)
        assert r.status_code == 422 and text in r.json()["detail"]
        assert httpx.post(url + "/sample", json={"n": 1, "steps": 2}).status_code == 200


def test_bearer_token(serve_runs, serve_at):
    with serve_at(serve_runs[("vae", False)], token="s3cret") as url:
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.post(url + "/sample", json={"n": 1}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.post(url + "/sample", json={"n": 1}, headers=wrong).status_code == 401
        assert httpx.get(url + "/metadata", headers=wrong).status_code == 401
        assert httpx.post(url + "/admin/rollback").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.post(url + "/sample", json={"n": 1}, headers=good).status_code == 200
        assert httpx.get(url + "/metadata", headers=good).status_code == 200


def _concurrently(url, bodies, workers=16):
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: client.post(url + "/sample", json=b), bodies))


@pytest.mark.parametrize("kind", ["vae", "ddpm"])
def test_batches_form_and_a_request_gets_the_same_output_alone_and_batched(
        serve_runs, serve_at, tmp_path, kind):
    run = serve_runs[(kind, True)]
    bodies = [{"n": 1 + i % 3, "seed": 100 + i, "labels": None} for i in range(24)]
    log = tmp_path / "log.jsonl"
    with serve_at(run, max_batch=64, batch_timeout_ms=50, request_log=log) as url:
        batched = _concurrently(url, bodies)
    with serve_at(run, max_batch=1) as url:
        alone = [httpx.post(url + "/sample", json=b) for b in bodies]
    assert all(r.status_code == 200 for r in batched + alone)
    sizes = [r["batch_size"] for r in log_rows(log)]
    assert max(sizes) > 3, sizes  # some model call merged several requests
    assert all(r.json()["batch_size"] == b["n"] for r, b in zip(alone, bodies))
    for a, b in zip(batched, alone):
        assert a.json()["labels"] == b.json()["labels"]
        np.testing.assert_allclose(a.json()["samples"], b.json()["samples"], atol=1e-5)


def test_canary_share_and_swaps_without_failed_requests(serve_runs, serve_at, tmp_path):
    champion, candidate = serve_runs[("vae", False)], serve_runs[("gan", False)]
    log = tmp_path / "log.jsonl"
    with serve_at(champion, candidate=candidate, share=0.3, request_log=log) as url:
        meta = httpx.get(url + "/metadata").json()
        assert meta["arms"]["candidate"]["model_kind"] == "gan"
        assert meta["arms"]["candidate"]["share"] == 0.3
        first = _concurrently(url, [{"n": 1, "seed": i} for i in range(200)])
        with ThreadPoolExecutor(1) as pool:  # promote while a stream of requests runs
            stream = pool.submit(_concurrently, url, [{"n": 2, "seed": i} for i in range(150)], 8)
            promoted = httpx.post(url + "/admin/promote")
            during = stream.result()
        after = httpx.get(url + "/metadata").json()
        assert httpx.post(url + "/admin/rollback").status_code == 409  # no candidate left
    assert promoted.status_code == 200
    assert all(r.status_code == 200 for r in first + during)
    share = np.mean([r.json()["version"] == "candidate" for r in first])
    assert 0.3 - 0.13 < share < 0.3 + 0.13  # 4 binomial sds at n = 200
    assert after["model_kind"] == "gan" and set(after["arms"]) == {"champion"}
    rows = log_rows(log)
    assert {(r["version"], r["source"]) for r in rows} == {
        ("champion", str(champion)), ("candidate", str(candidate)), ("champion", str(candidate))}


def test_rollback_during_requests(serve_runs, serve_at):
    champion, candidate = serve_runs[("vae", False)], serve_runs[("vae", True)]
    with serve_at(champion, candidate=candidate, share=0.5) as url:
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(_concurrently, url, [{"n": 1, "seed": i} for i in range(150)], 8)
            rolled = httpx.post(url + "/admin/rollback")
            during = stream.result()
        meta = httpx.get(url + "/metadata").json()
    assert rolled.status_code == 200 and all(r.status_code == 200 for r in during)
    assert meta["conditional"] is False and set(meta["arms"]) == {"champion"}


def test_same_request_id_same_arm(serve_runs, serve_at):
    with serve_at(serve_runs[("vae", False)], candidate=serve_runs[("gan", False)],
                  share=0.5) as url:
        arms = {httpx.post(url + "/sample", json={"n": 1},
                           headers={"X-Request-ID": "abc-123"}).json()["version"]
                for _ in range(5)}
    assert len(arms) == 1


def test_request_log_with_outputs(serve_runs, serve_at, tmp_path):
    log = tmp_path / "log.jsonl"
    with serve_at(serve_runs[("vae", True)], request_log=log, log_outputs=True) as url:
        body = httpx.post(url + "/sample", json={"n": 2, "seed": 5, "labels": [4, 5]}).json()
    (row,) = log_rows(log)
    assert {"time", "request_id", "n", "labels", "seed", "steps", "latency_ms", "batch_size",
            "variant", "version", "source", "status"} <= set(row)
    assert row["labels"] == [4, 5] and row["status"] == 200 and row["request_id"] == body["request_id"]
    import base64

    arrays = np.load(io.BytesIO(base64.b64decode(row["outputs"])))
    np.testing.assert_allclose(arrays["x"], np.array(body["samples"]), atol=1e-7)
