"""Tracking and the registry on MLflow (embedded SQLite in a temporary folder): what a tracked run
holds, promotion only on a passing gate, the alias untouched by a failing one, `models:/` URIs,
and a clear error when the extra is missing."""

import json
import sys

import pytest

pytest.importorskip("mlflow")

from genlab.operations import tracking  # noqa: E402
from genlab.operations.promotion import gate_and_promote  # noqa: E402
from genlab.ops import cli  # noqa: E402
from genlab.ops.gate import Rule  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tracking store for this module (creating its tables takes seconds); each test uses
    its own model names. GENLAB_TRACK unset."""
    folder = tmp_path_factory.mktemp("ml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mp.delenv(tracking.TRACK_ENV, raising=False)
        yield folder


def test_tracking_switch(monkeypatch):
    monkeypatch.delenv(tracking.TRACK_ENV, raising=False)
    assert not tracking.tracking_requested(False) and tracking.tracking_requested(True)
    for on in ("1", "true", "ON"):
        monkeypatch.setenv(tracking.TRACK_ENV, on)
        assert tracking.tracking_requested(False)
    monkeypatch.setenv(tracking.TRACK_ENV, "0")
    assert not tracking.tracking_requested(False)
    assert cli._tracking_client(False) is None  # off: no client, no store touched


def test_log_run_records_numbers_tags_and_reports(headline_run, store):
    mc = tracking.client()
    run_id = tracking.log_run(headline_run, mc=mc)
    run = mc.get_run(run_id)
    doc = json.loads((headline_run / "02_evaluate.json").read_text())
    assert run.data.metrics["02_evaluate.fd"] == pytest.approx(doc["fd"])
    assert "02_evaluate.conditional_accuracy" not in run.data.metrics  # null: not a number
    assert run.data.tags["genlab.data_fingerprint"] == doc["provenance"]["data_fingerprint"]
    assert run.data.tags["03_privacy_audit.privacy_verdict"] == "low"  # strings are tags
    assert run.data.params["model"] == "vae" and run.data.params["arl0_target"] == "200"
    files = {f.path for f in mc.list_artifacts(run_id, "run")}
    assert {"run/02_evaluate.html", "run/01_train.json", "run/artifacts"} <= files
    assert (store / "artifacts").is_dir()  # beside the database, not in the working folder


def test_promotion_only_when_every_rule_passes(headline_run, store, tmp_path):
    mc = tracking.client()
    fd = json.loads((headline_run / "02_evaluate.json").read_text())["fd"]
    failing = [Rule.parse(f"fd<={fd / 2}"), Rule.parse("privacy_verdict!=high")]
    rows, promoted = gate_and_promote(headline_run, failing, "digits-vae", mc=mc)
    assert promoted is None and [r["status"] for r in rows] == ["FAIL", "pass"]
    assert tracking.alias_version("digits-vae", mc=mc) is None  # nothing registered
    gate = json.loads((headline_run / "gate.json").read_text())
    assert gate["passed"] is False and gate["promoted"] is None

    passing = [Rule.parse(f"fd<={fd * 2}"), Rule.parse("privacy_verdict!=high")]
    rows, promoted = gate_and_promote(headline_run, passing, "digits-vae", mc=mc)
    assert promoted["version"] == 1 and tracking.alias_version("digits-vae", mc=mc) == 1
    served = tracking.resolve_model_uri("models:/digits-vae@champion", mc=mc)
    assert (served / "artifacts" / "model.ckpt").read_bytes() == b"stand-in checkpoint of run-a"
    assert "registered as model digits-vae with alias `champion`" in (
        served / "model_card.md").read_text()
    assert "registered as digits-vae version 1" in (headline_run / "model_card.md").read_text()
    from genlab.serve.sampler import SourceError, resolve_source

    with tracking.model_resolver():  # what `genlab serve models:/...` does
        assert resolve_source("models:/digits-vae@champion") == served.resolve()
    with pytest.raises(SourceError, match="no model registry resolver"):
        resolve_source("models:/digits-vae@champion")  # gone again afterwards
    version = mc.get_model_version("digits-vae", "1")
    assert version.description.startswith("# Model card: run-a")

    # a second run that fails its gate leaves the alias on version 1, one that passes moves it
    other = tmp_path / "run-b"
    import shutil

    shutil.copytree(headline_run, other)
    (other / "gate.json").unlink()
    (other / "artifacts" / "model.ckpt").write_bytes(b"stand-in checkpoint of run-b")
    gate_and_promote(other, failing, "digits-vae", mc=mc)
    assert tracking.alias_version("digits-vae", mc=mc) == 1
    assert (tracking.resolve_model_uri("models:/digits-vae@champion", mc=mc) / "artifacts"
            / "model.ckpt").read_bytes() == b"stand-in checkpoint of run-a"
    gate_and_promote(other, passing, "digits-vae", mc=mc)
    assert tracking.alias_version("digits-vae", mc=mc) == 2
    assert (tracking.resolve_model_uri("models:/digits-vae@champion", mc=mc) / "artifacts"
            / "model.ckpt").read_bytes() == b"stand-in checkpoint of run-b"


def test_gate_cli_exit_codes_and_messages(headline_run, store, capsys):
    assert cli.main(["gate", str(headline_run), "--rule", "fd<=0.1", "--promote", "m"]) == 1
    assert "alias 'champion' of m left where it was" in capsys.readouterr().out
    assert cli.main(["gate", str(headline_run), "--rule", "fd<=1000", "--promote", "m"]) == 0
    assert "registered m version 1" in capsys.readouterr().out
    assert "gate: <b>passed → m v1 @champion" in (headline_run / "index.html").read_text()


def test_bad_model_uri_and_missing_alias(store):
    with pytest.raises(tracking.TrackingError, match="expected 'models:/NAME@alias'"):
        tracking.resolve_model_uri("models:/digits")
    with pytest.raises(tracking.TrackingError, match="no version of model 'nope'"):
        tracking.resolve_model_uri("models:/nope@champion")


def test_sweep_parent_with_children(headline_run, store, tmp_path):
    import shutil

    shutil.copytree(headline_run, tmp_path / "sweep" / "seed-1")
    shutil.copytree(headline_run, tmp_path / "sweep" / "seed-2")
    mc = tracking.client()
    parent = tracking.log_sweep(tmp_path / "sweep", [tmp_path / "sweep" / "seed-1",
                                                     tmp_path / "sweep" / "seed-2"], mc=mc)
    children = mc.search_runs([mc.get_run(parent).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent}'")
    assert mc.get_run(parent).data.tags["genlab.sweep"] == "sweep"
    assert sorted(r.info.run_name for r in children) == ["seed-1", "seed-2"]


def test_missing_extra_is_one_clear_error(headline_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(tracking.TrackingError, match=r"optional extra 'ops'.*\.\[ops\]"):
        tracking.mlflow_module()
    assert cli.main(["gate", str(headline_run), "--rule", "fd<=1000", "--promote", "m"]) == 2
    assert "optional extra 'ops'" in capsys.readouterr().err
    assert not (headline_run / "gate.json").exists()  # refused before the gate ran
    assert cli.main(["run", "--only", "train", "--track", "--name", "x"]) == 2
    assert "optional extra 'ops'" in capsys.readouterr().err


@pytest.mark.slow
def test_genlab_run_tracked_and_untracked(store, tmp_path, monkeypatch, capsys):
    """A real (tiny) training run: with --track one MLflow run holds its numbers, reports and
    checkpoint; without it nothing is logged."""
    mc = tracking.client()
    experiment = mc.get_experiment_by_name(tracking.EXPERIMENT)
    before = len(mc.search_runs([experiment.experiment_id])) if experiment else 0
    args = ["run", "--only", "train", "-p", "dataset=toy", "-p", "max_epochs=2", "-p",
            "width=32", "--reports-dir", str(tmp_path / "rep"), "--no-progress"]
    assert cli.main([*args, "--name", "plain"]) == 0
    experiment = mc.get_experiment_by_name(tracking.EXPERIMENT)
    assert (len(mc.search_runs([experiment.experiment_id])) if experiment else 0) == before
    assert (tmp_path / "rep" / "plain" / "model_card.html").exists()
    assert cli.main([*args, "--name", "tracked", "--track"]) == 0
    assert "tracked: MLflow run" in capsys.readouterr().out
    runs = mc.search_runs([mc.get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
                          "tags.`genlab.run` = 'tracked'")
    assert len(runs) == 1
    doc = json.loads((tmp_path / "rep" / "tracked" / "01_train.json").read_text())
    assert runs[0].data.metrics["01_train.final_val_loss"] == pytest.approx(doc["final_val_loss"])
    files = {f.path for f in mc.list_artifacts(runs[0].info.run_id, "run/artifacts")}
    assert "run/artifacts/model.ckpt" in files


def test_command_line_starts_without_mlflow():
    import subprocess

    code = ("import sys; from genlab.ops import cli; cli.main(['params', 'operations']); "
            "assert 'mlflow' not in sys.modules and 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]
    assert "canary_share" in done.stdout
