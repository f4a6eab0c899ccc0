"""Sweeps on Dask: expansion, validation before running, skip-if-finished, failures recorded,
and the comparison page checked in a real headless browser."""

import html.parser
import json
import math
import shutil
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


@pytest.mark.slow
def test_sweep_runs_skips_records_failures_and_renders(tmp_path, monkeypatch, chromium):
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
    # 2 seeds: the range, no t-interval
    assert vae["n_runs"] == 2 and vae["final_val_loss"]["ci_low"] is None
    assert vae["final_val_loss"]["min"] < vae["final_val_loss"]["max"]
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
    dom = chromium("--dump-dom", (folder / "index.html").as_uri())
    assert dom.returncode == 0 and dom.stdout.count("<tr>") >= 6, dom.stderr[-500:]
    shot = tmp_path / "sweep.png"
    chromium("--window-size=1200,900", f"--screenshot={shot}", (folder / "index.html").as_uri())
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, Path(tempfile.gettempdir()) / "genlab-sweep-screenshot.png")


def test_example_sweeps_validate(tmp_path):
    from genlab.ops.runs import project_root

    files = sorted((project_root() / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        sweep = load_sweep(path, tmp_path)
        assert len({r.name for r in sweep.runs}) == len(sweep.runs) >= 2


def _fake_sweep(folder, groups):
    """Run folders with a headline JSON each: {model: [(seed, {key: value}), ...]}."""
    runs, statuses = [], []
    for model, seeds in groups.items():
        for seed, numbers in seeds:
            name = f"model-{model}_seed-{seed}"
            (folder / name).mkdir(parents=True)
            (folder / name / "02_evaluate.json").write_text(json.dumps(numbers))
            runs.append((name, {"model": model, "seed": seed}))
            statuses.append({"run": name, "status": "ok", "error": ""})
    return runs, statuses


def test_metric_ranges_and_clipped_intervals():
    from genlab.ops.sweep_report import clip_interval, metric_range

    assert metric_range("precision") == metric_range("tstr_accuracy") == (0.0, 1.0)
    assert metric_range("mia_auc_max_ci_low") == metric_range("dcr_share_closer_to_members") == (0, 1)
    assert metric_range("n_generated") == metric_range("fd") == metric_range("kid") == (0.0, math.inf)
    assert metric_range("final_val_loss") == metric_range("data_copying_ct") == (-math.inf, math.inf)
    assert clip_interval("precision", 0.03, -0.0951, 0.1558) == (0.0, 0.1558)
    assert clip_interval("recall", 0.8961, 0.291, 1.501) == (0.291, 1.0)
    assert clip_interval("kid", -2.0, -9.0, 5.0) == (-2.0, 5.0)  # keeps an unbiased mean below 0
    assert clip_interval("final_val_loss", -3.0, -9.0, 5.0) == (-9.0, 5.0)


def test_sweep_page_clips_intervals_and_flags_groups_with_few_seeds(tmp_path):
    from genlab.ops.sweep_report import write_sweep_report

    runs, statuses = _fake_sweep(tmp_path, {
        "gan": [(0, {"precision": 0.0, "recall": 0.99, "fd": 40.0}),
                (1, {"precision": 0.06076, "recall": 0.8022, "fd": 41.0})],
        "vae": [(s, {"precision": p, "recall": r, "fd": f}) for s, p, r, f in
                [(0, 0.01, 0.99, 0.5), (1, 0.02, 0.999, 9.0), (2, 0.2, 0.98, 0.7)]],
        "ddpm": [(0, {"precision": 0.9, "recall": 0.8, "fd": 3.0})],
    })
    summary = write_sweep_report(tmp_path, runs, statuses)
    groups = {g["group"]: g for g in summary["groups"]}
    gan, vae, ddpm = groups["model=gan"], groups["model=vae"], groups["model=ddpm"]
    # 2 seeds: no t-interval (it would be [-0.32, 0.38] for precision), the range instead
    assert gan["precision"] == {"mean": pytest.approx(0.03038), "n": 2, "min": 0.0, "max": 0.06076,
                                "ci_low": None, "ci_high": None}
    # 3 seeds: the t-interval, clipped to [0, 1] / [0, inf)
    lo = mean_ci([0.01, 0.02, 0.2])[1]
    assert lo < 0 and vae["precision"]["ci_low"] == 0.0 and vae["precision"]["ci_high"] < 1
    assert mean_ci([0.99, 0.999, 0.98])[2] > 1 and vae["recall"]["ci_high"] == 1.0
    assert mean_ci([0.5, 9.0, 0.7])[1] < 0 and vae["fd"]["ci_low"] == 0.0
    for g in summary["groups"]:
        for key in ("precision", "recall", "fd"):
            c = g[key]
            assert c["ci_low"] is None or (0 <= c["ci_low"] <= c["mean"] <= c["ci_high"])
    page = (tmp_path / "index.html").read_text()
    assert "0.03038 (range 0 to 0.06076, 2 seeds)" in page
    assert "0.9 (1 seed)" in page
    assert "[0, " in page and "-0." not in page.split("<h2>Runs</h2>")[0]
    assert ("Fewer than 3 seeds with results in 2 of 3 group(s): model=gan (2 seeds); "
            "model=ddpm (1 seed). With so few seeds a t-interval means nothing") in page


def test_unset_parameters_are_named_with_the_notebook_default(tmp_path):
    from genlab.ops.sweep import KEY_FILE

    assert run_names([{"model": "vae"}, {"model": "gan", "max_epochs": 200}]) == [
        "model-vae_max_epochs-100", "model-gan_max_epochs-200"]
    # stated or left unset, the default is the same run parameter: not a varying one
    assert run_names([{"seed": 0}, {"seed": 1, "max_epochs": 100}]) == ["seed-0", "seed-1"]

    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"name": "d", "only": ["train"], "base": {"dataset": "toy"},
                                "runs": [{"model": "vae"}, {"model": "gan", "max_epochs": 200}],
                                "grid": {"seed": [0, 1]}}))
    sweep = load_sweep(spec, tmp_path / "rep")
    assert [r.name for r in sweep.runs] == [
        "model-vae_seed-0_max_epochs-100", "model-vae_seed-1_max_epochs-100",
        "model-gan_seed-0_max_epochs-200", "model-gan_seed-1_max_epochs-200"]
    for i, run in enumerate(sweep.runs):  # finished runs: the page is written without Dask
        run.plan.final_dir.mkdir(parents=True)
        (run.plan.final_dir / KEY_FILE).write_text(run.key + "\n")
        (run.plan.final_dir / "index.html").write_text("<html></html>")
        (run.plan.final_dir / "01_train.json").write_text(json.dumps({"final_val_loss": 1.0 + i}))
    run_sweep(sweep, echo=lambda *_: None)
    summary = json.loads((sweep.folder / "summary.json").read_text())
    assert [g["group"] for g in summary["groups"]] == ["model=vae, max_epochs=100",
                                                       "model=gan, max_epochs=200"]
    assert [r["param.max_epochs"] for r in summary["runs"]] == [100, 100, 200, 200]
    page = (sweep.folder / "index.html").read_text()
    assert "None" not in page and "model=vae, max_epochs=100" in page
