"""Online metrics of a request log: the output monitor's false-alarm rate under no change stays in
its calibration band (calibrated on one pool, measured on another, checked on fresh streams), a
change is caught, task completion and request drift, and the log's format."""

import base64
import io
import json

import numpy as np
import pytest

from genlab.operations import online


def _gaussian_sampler(shift: float = 0.0):
    def sample(n, seed):
        return np.random.default_rng(seed).normal(shift, 1.0, size=(n, 4))
    return sample


@pytest.fixture(scope="module")
def monitor():
    return online.calibrate_output_monitor(_gaussian_sampler(), lambda x: x, window=20,
                                           arl0_target=100, pool_size=400, n_streams=100, seed=0)


def _fresh_run_lengths(monitor, sample, n_streams, length, seed):
    """Run lengths on streams of new records (each record drawn once, as served traffic is)."""
    lengths = []
    for s in range(n_streams):
        first = monitor.first_alarm(sample(length, 10_000 + seed * 1000 + s))
        lengths.append(length if first is None else first + 1)
    return np.array(lengths)


def test_no_change_false_alarms_within_calibration_band(monitor):
    # measured on a pool the threshold never saw; reported with its CI
    a = monitor.arl0
    assert a["ci_low"] < a["measured"] < a["ci_high"] and a["censored_share"] < 0.05
    assert 0.6 * 100 < a["measured"] < 1.6 * 100
    fresh = _fresh_run_lengths(monitor, _gaussian_sampler(), 60, 1000, seed=1)
    se = np.sqrt(((a["ci_high"] - a["ci_low"]) / 3.92) ** 2 + fresh.var(ddof=1) / len(fresh))
    assert abs(fresh.mean() - a["measured"]) < 3 * se, (fresh.mean(), a)
    assert 0.5 * 100 < fresh.mean() < 2 * 100


def test_a_changed_output_distribution_alarms_fast(monitor):
    shifted = _fresh_run_lengths(monitor, _gaussian_sampler(shift=1.0), 20, 1000, seed=2)
    assert np.median(shifted) < 60  # within a few windows, against ~100 under no change


def test_task_completion_and_acceptance():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    out = online.task_completion(proba, np.array([0, 1, 1, -1]), seed=0)
    assert out["completion_n"] == 3 and out["completion_successes"] == 2
    assert out["completion_ci_low"] < 2 / 3 < out["completion_ci_high"]
    assert out["acceptance_n"] == 4
    many = online.task_completion(np.tile([[0.7, 0.3]], (4000, 1)), np.zeros(4000, int))
    assert many["acceptance"] == pytest.approx(0.7, abs=0.03)  # the stated acceptance model


def test_wilson_interval():
    low, high = online.wilson(8, 10)  # the textbook value at z = 1.95996
    assert low == pytest.approx(0.4901625, abs=1e-6) and high == pytest.approx(0.9433178, abs=1e-6)
    assert online.wilson(0, 0) == (None, None)


def _row(version, labels, n=None, status=200, x=None):
    n = n or len(labels)
    row = {"status": status, "version": version, "n": n, "labels": labels, "request_id": "r"}
    if x is not None:
        buf = io.BytesIO()
        np.savez(buf, x=x, labels=np.asarray(labels), seed=np.int64(0))
        row["outputs"] = base64.b64encode(buf.getvalue()).decode()
    return row


def test_request_drift_chi_square():
    shares = np.full(10, 0.1)
    rng = np.random.default_rng(0)
    same = [_row("champion", rng.integers(0, 10, 8).tolist()) for _ in range(100)]
    zeros = [_row("champion", [0] * 8) for _ in range(100)]
    ok = online.request_drift(same, shares, same[:50])
    assert ok["label_drift"] is False and ok["size_drift"] is False
    bad = online.request_drift(zeros, shares, same[:50])
    assert bad["label_drift"] is True and bad["label_pvalue"] < 1e-6
    big = [_row("champion", rng.integers(0, 10, 64).tolist()) for _ in range(60)]
    assert online.request_drift(big, shares, same[:50])["size_drift"] is True


def test_log_reading_and_arms(tmp_path):
    x = np.zeros((3, 1, 8, 8), np.float32)
    rows = [_row("champion", [1, 2, 3], x=x), _row("candidate", [4, 5, 6], x=x + 1),
            {"status": 422, "version": "candidate", "error": "n: expected int"}]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    served = online.served_records(online.read_log(log))
    assert served.x.shape == (6, 1, 8, 8) and served.labels.tolist() == [1, 2, 3, 4, 5, 6]
    cand = served.arm("candidate")
    assert cand.x.min() == 1 and cand.request_of_record.tolist() == [0, 0, 0]
    log.write_text("{not json\n")
    with pytest.raises(online.LogError, match="line 1: not JSON"):
        online.read_log(log)
    with pytest.raises(online.LogError, match="--log-outputs"):
        online.served_records([{"status": 200, "version": "champion"}])


def test_realistic_share_is_prdc_precision():
    from genlab.evaluate.metrics import prdc

    rng = np.random.default_rng(0)
    ref, fake = rng.normal(size=(300, 6)), rng.normal(0.3, 1.2, size=(400, 6))
    share = online.realistic(fake, ref, k=5).mean()
    assert share == pytest.approx(prdc(ref, fake, k=5)["precision"], abs=2 / 400)
