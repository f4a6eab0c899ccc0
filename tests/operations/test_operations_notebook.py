"""06_operations in the pipeline: a real server, a drift alarm, a promoted fine-tuned candidate,
a broken candidate stopped by the gate and rolled back by the canary, no failed request."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("fastapi")

from genlab.ops import cli  # noqa: E402

DATA = Path(__file__).parent / "data"
QUICK = ["stream_requests=300", "monitor_arl0=200", "arl0_streams=50",
         "online_arl0=300"]


@pytest.mark.slow
def test_operations_notebook_runs_in_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    reports = ["--reports-dir", str(tmp_path), "--no-progress", "--name", "ops"]
    assert cli.main(["run", "--only", "train", "-p", "max_epochs=20", *reports]) == 0
    run = tmp_path / "ops"
    # the champion gate reads the evaluation and privacy verdict: recorded ones stand in here
    for stem in ("02_evaluate", "03_privacy_audit"):
        shutil.copy(DATA / f"{stem}.json", run / f"{stem}.json")
    args = [a for q in QUICK for a in ("-p", q)]
    assert cli.main(["run", "--only", "operations", *args, *reports]) == 0
    doc = json.loads((run / "06_operations.json").read_text())
    assert doc["drift_alarm"] is True and doc["candidate_gate_passed"] is True
    assert doc["canary_decision"] == "promote"
    assert doc["broken_gate_passed"] is False and doc["broken_canary_decision"] == "rollback"
    assert doc["broken_requests_before_rollback"] > 0
    assert doc["failed_requests_during_promotion"] == 0
    assert doc["failed_requests_during_rollback"] == 0 and doc["failed_requests_total"] == 0
    page = (run / "index.html").read_text()
    assert "served: <b>fp32 · genlab-model v2 @champion</b>" in page
    assert "gate: <b>passed → genlab-model v1 @champion</b>" in page
