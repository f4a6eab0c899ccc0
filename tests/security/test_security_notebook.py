"""07_security end to end in the pipeline (tiny settings, real papermill runs): every headline
number has an interval or a reason, the run's own model is left alone, and 01_train's
`screen=true` puts the screens' flags into its headline and data-quality table."""

import json
import subprocess
import sys

import numpy as np
import pytest

from genlab.security.headline import SETTINGS

pytestmark = pytest.mark.slow

TINY = ["-p", "max_epochs=3", "-p", "width=16", "-p", "screen=true",           # 01_train
        "-p", "epochs=2", "-p", "generations=1", "-p", "poison_rates=0.1", "-p", "n_samples=60",
        "-p", "n_draws=2", "-p", "n_adversarial=20", "-p", "pgd_steps=3", "-p", "drift_trials=2",
        "-p", "drift_batch=30", "-p", "n_permutations=19"]                         # 07_security


def assert_interval_or_reason(doc: dict) -> None:
    for key, value in doc.items():
        if key in ("parameters", "provenance") or key in SETTINGS or key.endswith(
                ("_ci_low", "_ci_high", "_na_reason")) or isinstance(value, (str, bool)):
            continue
        if value is None:
            assert f"{key}_na_reason" in doc, key
        else:
            assert doc.get(f"{key}_ci_low") is not None and doc.get(f"{key}_ci_high") is not None, key
            assert doc[f"{key}_ci_low"] - 1e-9 <= value <= doc[f"{key}_ci_high"] + 1e-9, key


CASES = {
    "cvae": ["-p", "model=vae", "-p", "conditional=true"],
    "gan": ["-p", "model=gan"],
    "cddpm": ["-p", "model=ddpm", "-p", "conditional=true", "-p", "timesteps=50",
              "-p", "sampling_steps=5"],
    "toy": ["-p", "dataset=toy"],  # flat records: a trigger off the data's range, no [0, 1] clip
    "unlabelled": ["-p", "dataset={npz}"],  # digits without labels: pixel features, nulls
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_security_notebook_in_the_pipeline(tmp_path, digits, case):
    npz = tmp_path / "unlabelled.npz"
    np.savez(npz, x=digits.x[:600])
    model = [a.format(npz=npz) for a in CASES[case]]
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress", "--reports-dir",
           str(tmp_path), "--name", "sec", "--only", "train,security", *model, *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "sec"
    doc = json.loads((run / "07_security.json").read_text())
    assert_interval_or_reason(doc)
    assert doc["epochs"] == 2 and doc["epochs_reduced"] is True
    conditional = "conditional=true" in model
    assert (doc["conditional_accuracy_label_flip_max_rate"] is None) != conditional
    vae = "model=gan" not in model and "model=ddpm" not in model
    # GAN, DDPM: no encoder; without labels nothing judges the reconstruction's class
    assert (doc["adversarial_success_at_eps"] is None) != (vae and case != "unlabelled")
    if case == "unlabelled":
        assert doc["drift_evasion_eps_max_na_reason"] == "no labels: no classifier to attack"
    tables = json.loads((run / "07_security.tables.json").read_text())
    assert {r["kind"] for r in tables["poisoning"]} >= {"clean", "backdoor", "outlier", "near_duplicate"}
    # the study trained into its own folder; the run's model is the training's last checkpoint
    assert (run / "artifacts" / "security" / "clean" / "last.ckpt").exists()
    assert (run / "artifacts" / "model.ckpt").read_bytes() == (
        run / "artifacts" / "checkpoints" / "last.ckpt").read_bytes()
    train = json.loads((run / "01_train.json").read_text())
    assert {"screen_label_issues_flagged", "screen_outliers_flagged",
            "screen_near_duplicates_flagged"} <= set(train)
    assert "screen_outliers" in (run / "01_train.html").read_text()
