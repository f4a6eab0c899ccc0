"""`genlab run` end to end: parameter errors, byte-identical reruns, failures that lose nothing.

These run the real training notebook through papermill on the 2-D toy set with a few epochs."""

import subprocess
import sys

import pytest

FAST = ["-p", "dataset=toy", "-p", "max_epochs=3", "-p", "width=32"]


def genlab(*args, reports):
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress",
           "--reports-dir", str(reports), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, fragment", [
    (["-p", "max_epochs=0"], "parameter 'max_epochs': expected int in [1, 100000], got 0"),
    (["-p", "max_epoch=3"], "unknown parameter(s) ['max_epoch']"),
    (["-p", "model=flow"], "parameter 'model'"),
    (["-p", "timesteps=100"], "parameter 'timesteps' applies to model ddpm only"),
    (["--only", "nope"], "--only: unknown notebook 'nope'"),
    (["-p", "run_dir=x"], "use --name"),
    (["-f", "missing.yaml"], "-f missing.yaml: file not found"),
])
def test_bad_parameters_exit_non_zero_before_running(tmp_path, args, fragment):
    proc = genlab(*args, "--name", "bad", reports=tmp_path)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_rerun_is_byte_identical_and_failure_keeps_good_run(tmp_path):
    run_a = tmp_path / "a" / "r"
    reproducible = ("01_train.html", "01_train.json", "01_train.ipynb", "index.html",
                    "artifacts/data_spec.json")
    first = genlab(*FAST, "--only", "train", "--name", "r", reports=tmp_path / "a")
    assert first.returncode == 0, first.stderr
    before = {name: (run_a / name).read_bytes() for name in reproducible}
    second = genlab(*FAST, "--only", "train", "--name", "r", reports=tmp_path / "a")
    assert second.returncode == 0, second.stderr
    for name in reproducible:
        assert (run_a / name).read_bytes() == before[name], name
    for name in ("timings.json", "artifacts/model.ckpt", "artifacts/checkpoints/last.ckpt"):
        assert (run_a / name).exists()
    assert not (tmp_path / "a" / ".staging" / "r").exists()

    good = {p.name: p.read_bytes() for p in run_a.iterdir() if p.is_file()}
    bad = genlab(*FAST, "-p", "dataset=missing.npz", "--only", "train", "--name", "r",
                 reports=tmp_path / "a")
    assert bad.returncode == 1
    assert "missing.npz" in bad.stderr
    assert {p.name: p.read_bytes() for p in run_a.iterdir() if p.is_file()} == good
    assert (tmp_path / "a" / "r.failed" / "01_train.failed.ipynb").exists()


@pytest.mark.slow
def test_papermill_by_hand_rejects_unknown_parameter(tmp_path):
    import papermill as pm

    from genlab.ops.runs import project_root

    source = project_root() / "notebooks" / "01_train.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="max_epoch"):
        pm.execute_notebook(str(source), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            parameters={"max_epoch": 3, "run_dir": str(tmp_path / "run")},
                            progress_bar=False)


@pytest.mark.slow
def test_resume_and_init_from_write_new_run_folders(tmp_path):
    import json

    reports = tmp_path / "rep"
    assert genlab(*FAST, "--only", "train", "--name", "src", reports=reports).returncode == 0
    src = reports / "src"
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    last = src / "artifacts" / "checkpoints" / "last.ckpt"

    resumed = genlab(*FAST, "-p", "max_epochs=5", "-p", f"resume_from={last}", "--only",
                     "train", "--name", "more", reports=reports)
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads((reports / "more" / "01_train.json").read_text())
    assert doc["epochs_run"] == 5  # 3 restored from the checkpoint's history + 2 new

    tuned = genlab(*FAST, "-p", f"init_from={src / 'artifacts' / 'model.ckpt'}", "--only",
                   "train", "--name", "ft", reports=reports)
    assert tuned.returncode == 0, tuned.stderr
    ft = json.loads((reports / "ft" / "01_train.json").read_text())
    scratch = json.loads((src / "01_train.json").read_text())
    assert ft["final_val_loss"] < scratch["final_val_loss"]  # 3 more epochs from trained weights
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_papermill_by_hand_is_as_quiet_as_genlab_run(tmp_path):
    """The kernel of the project's environment starts without its loopback-TCP warning when a
    notebook is run by hand (make install writes the kernel's log level into the venv)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1 + 1")]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    proc = subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "tiny.ipynb",
                           "out.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "without encryption" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
