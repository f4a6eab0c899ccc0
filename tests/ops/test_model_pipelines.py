"""The four notebooks end to end with a class-conditional DDPM (tiny settings, real papermill runs).

Checks the wiring the unit tests cannot: parameters reach every notebook, the run folder's model
is a conditional DDPM, and each report's headline carries the numbers the DDPM brings
(conditional accuracy, the denoising attack, the denoising-loss drift score).
"""

import json
import subprocess
import sys

import pytest

TINY = ["-p", "model=ddpm", "-p", "conditional=true", "-p", "max_epochs=2", "-p", "timesteps=50",
        "-p", "width=8", "-p", "sampling_steps=5",
        "-p", "n_draws=2",                                       # 02_evaluate
        "-p", "n_generated=200",                                 # 03_privacy_audit
        "-p", "trials=5", "-p", "monitor_streams=10", "-p", "n_permutations=19",
        "-p", "retrain_epochs=1"]                                # 04_drift_study


def _headline(run, name):
    return json.loads((run / f"{name}.json").read_text())


@pytest.mark.slow
def test_conditional_ddpm_through_all_four_reports(tmp_path):
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress", "--reports-dir", str(tmp_path),
           "--name", "cddpm", "--only", "train,evaluate,privacy_audit,drift_study", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "cddpm"
    train = _headline(run, "01_train")
    assert train["parameters"]["model"] == "ddpm" and train["parameters"]["conditional"] is True
    assert train["epochs_run"] == 2
    ev = _headline(run, "02_evaluate")
    assert ev["samples_source"] == "model.ckpt (ddpm)"
    assert 0.0 <= ev["conditional_accuracy"] <= 1.0 and ev["conditional_accuracy_min_class"] is not None
    assert ev["tstr_accuracy"] is not None
    audit = _headline(run, "03_privacy_audit")
    assert audit["mia_auc_denoising"] is not None, sorted(audit)
    drift = _headline(run, "04_drift_study")
    assert drift["false_alarm_rate_max"] is not None
    for name in ("01_train", "02_evaluate", "03_privacy_audit", "04_drift_study"):
        assert (run / f"{name}.html").stat().st_size > 10_000, name


@pytest.mark.slow
def test_unlabelled_rgb_images_run_end_to_end_with_the_automatic_feature_space(tmp_path):
    """16×16 RGB patches without labels: training, evaluation (pixels chosen automatically and
    said so), the audit and the drift study all run; what needs labels is null with a reason."""
    import numpy as np

    rng = np.random.default_rng(0)
    grid = np.linspace(0, 3, 16, dtype=np.float32)
    freq = rng.uniform(0.5, 3, (300, 3, 2, 1, 1)).astype(np.float32)
    x = 0.5 + 0.4 * np.sin(freq[:, :, 0] * grid[:, None] + freq[:, :, 1] * grid[None, :])
    np.savez(tmp_path / "patches.npz", x=x.astype(np.float32))
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress", "--reports-dir",
           str(tmp_path), "--name", "patches", "--only", "train,evaluate,privacy_audit,drift_study",
           "-p", f"dataset={tmp_path / 'patches.npz'}", "-p", "max_epochs=2", "-p", "n_draws=2",
           "-p", "n_generated=100", "-p", "trials=5", "-p", "monitor_streams=10",
           "-p", "n_permutations=19", "-p", "retrain_epochs=1", "-p", "retrain_min_window=20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "patches"
    ev = _headline(run, "02_evaluate")
    assert ev["extractor"] == "pixels" and ev["fd"] is not None and ev["fd_baseline"] is not None
    assert ev["conditional_accuracy"] is None and ev["conditional_accuracy_na_reason"]
    assert ev["tstr_accuracy"] is None and ev["tstr_accuracy_na_reason"]
    assert "has no labels" in (run / "02_evaluate.html").read_text()
    assert _headline(run, "03_privacy_audit")["mia_auc_max"] is not None
    assert _headline(run, "04_drift_study")["false_alarm_rate_max"] is not None
