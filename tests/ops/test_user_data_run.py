"""A run on the user's own `.npz` goes through all four notebooks (tiny settings, real papermill
runs): every later notebook reloads the data from the path the training recorded, not from the
data set's name (for an `.npz` only its stem)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from genlab import data

TINY = ["-p", "max_epochs=2", "-p", "width=16",
        "-p", "n_draws=2",                                       # 02_evaluate
        "-p", "n_generated=200",                                 # 03_privacy_audit
        "-p", "trials=5", "-p", "monitor_streams=10", "-p", "n_permutations=19",
        "-p", "arl0_target=50", "-p", "monitor_window=10", "-p", "drift_start=20",
        "-p", "retrain_epochs=1"]                                # 04_drift_study


@pytest.mark.slow
def test_a_run_on_a_user_npz_goes_through_all_four_notebooks(tmp_path):
    digits = data.load_dataset("digits")
    path = tmp_path / "my_digits.npz"
    np.savez(path, x=digits.x[:600], y=digits.y[:600])
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress", "--reports-dir",
           str(tmp_path / "reports"), "--name", "mine", "-p", f"dataset={path}",
           "--only", "train,evaluate,privacy_audit,drift_study", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "reports" / "mine"
    for name in ("01_train", "02_evaluate", "03_privacy_audit", "04_drift_study"):
        doc = json.loads((run / f"{name}.json").read_text())
        assert doc["provenance"]["dataset"] == "my_digits", name
    spec = json.loads((run / "artifacts" / "data_spec.json").read_text())
    assert spec["n"] == 600 and spec["source"].endswith("my_digits.npz")
