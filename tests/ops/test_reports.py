"""Headline JSON contract, provenance, notebook normalisation, run-folder path mapping."""

import json

import nbformat
import numpy as np
import pytest

from genlab.ops import reports
from genlab.ops import runs


def test_headline_nan_becomes_null_with_reason_and_numpy_is_plain():
    out = reports.headline({"fd": float("nan"), "n": np.int64(3), "auc": np.float32(0.5),
                            "ok": True, "name": "vae"})
    assert out["fd"] is None and "not finite" in out["fd_na_reason"]
    assert type(out["n"]) is int and type(out["auc"]) is float
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("numbers, fragment", [
    ({"fd": None}, "give 'fd_na_reason'"),
    ({"label": "x" * 500}, "500-character string"),
    ({"table": [1, 2]}, "got list"),
])
def test_headline_rejects(numbers, fragment):
    with pytest.raises(ValueError, match=fragment):
        reports.headline(numbers)


def test_headline_null_with_reason_is_allowed():
    out = reports.headline({"tpr_at_0.1pct": None, "tpr_at_0.1pct_na_reason": "not measurable"})
    assert out["tpr_at_0.1pct"] is None


def test_write_headline_is_byte_stable_and_carries_provenance(tmp_path):
    run = runs.RunFolder(tmp_path / "r")
    prov = reports.provenance({"seed": 3, "model": "vae"}, dataset="digits",
                              data_fingerprint="abc")
    doc = reports.write_headline(run, "01_train", {"loss": 1.5}, provenance=prov,
                                 tables={"per_class": [{"c": 0, "v": 1.0}]})
    first = (run.path / "01_train.json").read_bytes()
    reports.write_headline(run, "01_train", {"loss": 1.5}, provenance=prov,
                           tables={"per_class": [{"c": 0, "v": 1.0}]})
    assert (run.path / "01_train.json").read_bytes() == first
    assert doc["parameters"] == {"seed": 3, "model": "vae"}
    for key in ("genlab", "git_commit", "git_dirty", "python", "torch", "lightning",
                "torchmetrics", "seed", "dataset", "data_fingerprint"):
        assert key in doc["provenance"]
    assert json.loads((run.path / "01_train.tables.json").read_text())["per_class"][0]["v"] == 1.0


def test_normalize_notebook_strips_run_to_run_noise():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("1")])
    nb.metadata["papermill"] = {"start_time": "t", "end_time": "t", "duration": 1.0,
                                "input_path": "a", "output_path": "b", "parameters": {"x": 1}}
    nb.cells[0].metadata["tags"] = ["injected-parameters"]
    nb.cells[0].id = "random123"
    for c in nb.cells:
        c.metadata["papermill"] = {"duration": 0.5, "start_time": "t"}
        c.metadata["execution"] = {"iopub.status.busy": "t"}
    timings = reports.normalize_notebook(nb)
    assert timings["cells"] == [0.5, 0.5]
    assert nb.metadata["papermill"] == {"parameters": {"x": 1}}
    assert nb.cells[0].id == "injected-parameters"
    assert all("papermill" not in c.metadata and "execution" not in c.metadata for c in nb.cells)


def test_table_text_and_html():
    t = reports.Table([{"a": 1.234567, "b": "x<y"}, {"a": None}], title="T", digits=3)
    assert repr(t).split("\n") == ["T", "a     b", "1.23  x<y", ""]
    assert "x&lt;y" in t._repr_html_()


def test_staging_env_maps_final_run_dir(tmp_path, monkeypatch):
    final, staging = tmp_path / "reports" / "r1", tmp_path / "stage"
    monkeypatch.setenv(runs.STAGING_ENV, json.dumps({str(final): str(staging)}))
    assert runs.resolve_run_dir(final) == staging
    assert runs.resolve_run_dir(tmp_path / "other") == tmp_path / "other"


def test_relative_run_dir_resolves_against_project_root(monkeypatch):
    root = runs.project_root()
    monkeypatch.chdir(root / "notebooks")
    assert runs.resolve_run_dir("reports/x") == root / "reports" / "x"


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    runs.atomic_write_text(target, "good")

    def boom(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write_text(target, "partial")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]


def test_index_lists_reports_with_headline(tmp_path):
    (tmp_path / "01_train.html").write_text("<html></html>")
    (tmp_path / "01_train.json").write_text(json.dumps({"loss": 1.0, "parameters": {}}))
    page = reports.write_index(tmp_path, ["01_train", "02_evaluate"], name="run-7").read_text()
    assert "href='01_train.html'" in page and "02_evaluate" not in page
    assert "<h1>genlab run: run-7</h1>" in page and "href='keys.html'" in page
    assert "loss" in (tmp_path / "keys.html").read_text()  # every key, on the second page
