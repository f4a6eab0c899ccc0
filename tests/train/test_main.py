"""`python -m genlab.train`: the training notebook as a script, for DDP (2 CPU processes, gloo),
writing a run folder the later notebooks read."""

import json
import math
import subprocess
import sys

import pytest
import torch


def _script(*args, reports):
    cmd = [sys.executable, "-m", "genlab.train", "--reports-dir", str(reports), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_bad_parameters_are_refused(tmp_path):
    proc = _script("--name", "x", "-p", "max_epochs=0", reports=tmp_path)
    assert proc.returncode == 2 and "parameter 'max_epochs'" in proc.stderr
    proc = _script("--name", "x", "-p", "run_dir=y", reports=tmp_path)
    assert proc.returncode == 2 and "--name" in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_ddp_two_processes_then_evaluate(tmp_path):
    proc = _script("--name", "ddp", "--strategy", "ddp", "--devices", "2",
                   "-p", "max_epochs=2", reports=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "ddp"
    ckpt = torch.load(run / "artifacts" / "model.ckpt", weights_only=True, map_location="cpu")
    headline = json.loads((run / "01_train.json").read_text())
    per_rank = math.ceil(headline["n_members"] / 2)  # DistributedSampler halves each epoch
    assert ckpt["global_step"] == 2 * math.ceil(per_rank / 64)
    assert headline["parameters"]["strategy"] == "ddp" and headline["epochs_run"] == 2
    assert not list((tmp_path / ".staging").glob("ddp*"))

    evaluate = subprocess.run(
        [sys.executable, "-m", "genlab.ops.cli", "run", "--only", "evaluate", "--name", "ddp",
         "--reports-dir", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    doc = json.loads((run / "02_evaluate.json").read_text())
    assert doc["fd"] is not None and doc["fd"] > 0
