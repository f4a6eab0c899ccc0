"""A run stopped by a full disk leaves no partial output behind (only its failed notebook) and
says how much it had written and how much space was left. The disk is simulated: the notebook
execution (or the copy of a run folder) writes some bytes, then raises ENOSPC."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from genlab.ops import pipeline
from genlab.ops.pipeline import PipelineError, is_disk_full, plan_run, run_pipeline
from genlab.ops.runs import STAGING_ENV

PARTIAL = 3_000_000  # bytes of the half-written checkpoint


def _fake_execute(failure):
    """papermill.execute_notebook that writes its output notebook and a partial checkpoint into
    the staging folder, then raises ``failure()``."""

    def execute(source, output, **_kw):
        staging = next(iter(json.loads(os.environ[STAGING_ENV]).values()))
        ckpts = os.path.join(staging, "artifacts", "checkpoints")
        os.makedirs(ckpts, exist_ok=True)
        with open(os.path.join(ckpts, "last.ckpt"), "wb") as fh:
            fh.write(b"\0" * PARTIAL)
        nbformat.write(nbformat.read(source, as_version=4), output)
        raise failure()

    return execute


def _kernel_enospc():
    return PapermillExecutionError(
        cell_index=9, exec_count=9, source="fit(...)", ename="OSError",
        evalue="[Errno 28] No space left on device",
        traceback=["OSError: [Errno 28] No space left on device"])


@pytest.mark.parametrize("failure", [
    lambda: OSError(errno.ENOSPC, "No space left on device"),  # in this process
    _kernel_enospc,  # in the kernel: it arrives as papermill's text
], ids=["oserror", "kernel"])
def test_disk_full_run_deletes_partial_output_keeps_failed_notebook(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(failure))
    reports = tmp_path / "rep"
    plan = plan_run({"dataset": "toy"}, only=["train"], name="full", reports_dir=reports)
    lines = []
    with pytest.raises(PipelineError) as info:
        run_pipeline(plan, progress=False, echo=lines.append)
    text = str(info.value)
    assert "[Errno 28] No space left on device" in text
    last = text.splitlines()[-1]  # what a sweep records
    assert last.startswith("disk full: run 'full' needed more than "), text
    assert re.search(r"it had written 3\.[01] MB to .*\.staging.* when .* were left free", last), last
    assert "were left free" in last and "are free now" in last
    assert f"kept 01_train.failed.ipynb in {reports / 'full.failed'}" in last
    assert "disk full; partial output deleted" in lines[-1]
    assert list((reports / ".staging").iterdir()) == []  # no debris
    assert sorted(p.name for p in (reports / "full.failed").iterdir()) == ["01_train.failed.ipynb"]
    assert not (reports / "full").exists()


def test_other_failures_still_keep_the_partial_output(tmp_path, monkeypatch):
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(lambda: RuntimeError("boom")))
    reports = tmp_path / "rep"
    plan = plan_run({"dataset": "toy"}, only=["train"], name="r", reports_dir=reports)
    with pytest.raises(PipelineError, match="boom") as info:
        run_pipeline(plan, progress=False, echo=lambda *_: None)
    assert "disk full" not in str(info.value)
    failed = reports / "r.failed"
    assert (failed / "01_train.failed.ipynb").exists()
    assert (failed / "artifacts" / "checkpoints" / "last.ckpt").stat().st_size == PARTIAL  # resumable


def test_disk_full_while_copying_a_run_folder(tmp_path, monkeypatch):
    reports = tmp_path / "rep"
    good = reports / "r"
    (good / "artifacts").mkdir(parents=True)
    (good / "artifacts" / "model.ckpt").write_bytes(b"m" * 1000)
    (good / "01_train.json").write_text("{}")
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}

    def copytree(src, dst, **_kw):
        os.makedirs(dst)
        with open(os.path.join(dst, "model.ckpt"), "wb") as fh:
            fh.write(b"m" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", copytree)
    plan = plan_run({}, only=["evaluate"], name="r", reports_dir=reports)
    with pytest.raises(PipelineError) as info:
        run_pipeline(plan, progress=False, echo=lambda *_: None)
    text = str(info.value)
    assert text.startswith(f"copying {good} to work on failed: [Errno 28] No space left on device")
    assert "it had written 500 bytes" in text and "kept nothing" in text
    assert list((reports / ".staging").iterdir()) == []
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before


def test_training_script_deletes_its_staging_folder_on_a_full_disk(tmp_path, monkeypatch, capsys):
    from genlab.train import __main__ as script

    def train(p, final, num_nodes):
        staging = next(iter(json.loads(os.environ[STAGING_ENV]).values()))
        os.makedirs(os.path.join(staging, "artifacts"))
        with open(os.path.join(staging, "artifacts", "last.ckpt"), "wb") as fh:
            fh.write(b"\0" * 2000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(script, "train", train)
    monkeypatch.setenv(STAGING_ENV, "{}")
    monkeypatch.delenv(STAGING_ENV)  # restored (unset) after the test: main() sets it
    assert script.main(["--name", "t", "--reports-dir", str(tmp_path), "-p", "dataset=toy"]) == 1
    err = capsys.readouterr().err
    assert "OSError: [Errno 28] No space left on device" in err
    assert "disk full: run 't' needed more than" in err and "it had written 2.0 KB" in err
    assert list((tmp_path / ".staging").iterdir()) == []


def test_is_disk_full():
    assert is_disk_full(OSError(errno.ENOSPC, "x")) and is_disk_full(OSError(errno.EDQUOT, "x"))
    assert is_disk_full(_kernel_enospc())
    wrapped = PipelineError("notebook failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "x")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("boom"))
    assert pipeline._size(999) == "999 bytes" and pipeline._size(3_000_000) == "3.0 MB"
