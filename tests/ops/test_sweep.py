"""Sweeps on Dask: expansion, validation before running, skip-if-finished, failures recorded,
and the comparison page checked in a real headless browser."""

import html.parser
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from scipy import stats

from genlab import params as P
from genlab.ops.sweep_report import mean_ci
from genlab.ops.sweep import expand, is_finished, load_sweep, run_names, run_sweep


def test_expand_crosses_runs_with_grid_in_order():
    out = expand({"max_epochs": 3}, {"model": ["vae", "gan"], "seed": [0, 1]},
                 [{"dataset": "toy"}, {"dataset": "digits"}])
    assert len(out) == 8
    assert out[0] == {"max_epochs": 3, "dataset": "toy", "model": "vae", "seed": 0}
    assert out[-1] == {"max_epochs": 3, "dataset": "digits", "model": "gan", "seed": 1}
    assert run_names(out[:4]) == ["model-vae_seed-0", "model-vae_seed-1", "model-gan_seed-0",
                                  "model-gan_seed-1"]


def test_bad_grid_and_duplicates_are_refused():
    with pytest.raises(P.ParameterError, match="sweep grid 'seed'"):
        expand({}, {"seed": 3}, [])
    with pytest.raises(P.ParameterError, match="same parameters"):
        run_names([{"seed": 0, "a": 1}, {"seed": 0, "a": 1}, {"seed": 1, "a": 1}])


def test_unknown_parameter_fails_before_anything_runs(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("only: [train]\ngrid: {max_epoch: [1, 2]}\n")
    with pytest.raises(P.ParameterError, match="max_epoch"):
        load_sweep(spec, tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_mean_ci_matches_scipy():
    vals = [1.0, 2.0, 4.0]
    m, lo, hi = mean_ci(vals)
    ref = stats.t.interval(0.95, 2, loc=m, scale=stats.sem(vals))
    assert m == pytest.approx(7 / 3) and (lo, hi) == pytest.approx(ref, rel=1e-12)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        self.hrefs += [v for k, v in attrs if k == "href"]


def _chromium(*args):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp()}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_sweep_runs_skips_records_failures_and_renders(tmp_path, monkeypatch):
    # the key hashes the genlab source; pin it so edits elsewhere during the test don't count
    monkeypatch.setattr("genlab.ops.sweep.source_digest", lambda: "source-v1")
    spec = tmp_path / "grid.yaml"
    spec.write_text(json.dumps({
        "name": "mini", "only": ["train"],
        "base": {"dataset": "toy", "max_epochs": 2, "width": 32},
        "grid": {"seed": [0, 1]},
        "runs": [{"model": "vae"}, {"model": "gan", "n_train": 100000}],  # gan: fails inside
    }))
    sweep = load_sweep(spec, tmp_path / "rep")
    rows = run_sweep(sweep, workers=2, threads=1, echo=lambda *_: None)
    status = {r["run"]: r["status"] for r in rows}
    assert status == {"model-vae_seed-0_n_train-None": "ok",
                      "model-vae_seed-1_n_train-None": "ok",
                      "model-gan_seed-0_n_train-100000": "failed",
                      "model-gan_seed-1_n_train-100000": "failed"}
    assert "n_train" in next(r["error"] for r in rows if r["status"] == "failed")
    folder = tmp_path / "rep" / "mini"
    assert (folder / "model-gan_seed-0_n_train-100000.failed" / "01_train.failed.ipynb").exists()
    summary = json.loads((folder / "summary.json").read_text())
    vae = next(g for g in summary["groups"] if g["group"].startswith("model=vae"))
    assert vae["n_runs"] == 2 and vae["final_val_loss"]["ci_low"] is not None
    assert (folder / "summary.csv").read_text().startswith("run,status,")

    page = (folder / "index.html").read_bytes()
    again = run_sweep(load_sweep(spec, tmp_path / "rep"), workers=1, echo=lambda *_: None)
    assert [r["status"] for r in again[:2]] == ["skipped (finished)"] * 2
    assert (folder / "index.html").read_bytes() == page  # same runs, same bytes
    monkeypatch.setattr("genlab.ops.sweep.source_digest", lambda: "source-v2")
    assert not any(is_finished(r) for r in load_sweep(spec, tmp_path / "rep").runs)

    parser = _Links()
    parser.feed(page.decode())
    assert parser.hrefs and all((folder / h).exists() for h in parser.hrefs), parser.hrefs
    dom = _chromium("--dump-dom", (folder / "index.html").as_uri())
    assert dom.returncode == 0 and dom.stdout.count("<tr>") >= 6, dom.stderr[-500:]
    shot = tmp_path / "sweep.png"
    _chromium("--window-size=1200,900", f"--screenshot={shot}", (folder / "index.html").as_uri())
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, Path(tempfile.gettempdir()) / "genlab-sweep-screenshot.png")


def test_example_sweeps_validate(tmp_path):
    from genlab.ops.runs import project_root

    files = sorted((project_root() / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        sweep = load_sweep(path, tmp_path)
        assert len({r.name for r in sweep.runs}) == len(sweep.runs) >= 2
