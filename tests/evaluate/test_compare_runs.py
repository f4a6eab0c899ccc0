"""Several models in 02_evaluate (`run_dirs`): one table, one fingerprint, its own report folder."""

import json

import pytest
from lightning.pytorch import seed_everything

from genlab import data, params
from genlab.evaluate import compare_runs as C
from genlab.train import notebook as experiment
from genlab.ops import reports
from genlab.ops.runs import RunFolder


def _train(folder, model, seed=0):
    """A tiny run on the toy data (2 epochs), built as 01_train builds one."""
    ds = data.load_dataset("toy")
    p = params.typed("train", {"dataset": "toy", "model": model, "max_epochs": 2, "width": 32,
                                  "seed": seed, "batch_size": 128})
    run = RunFolder(folder)
    spec = data.DataSpec.build(ds, seed=seed)
    spec.save(run.data_spec)
    seed_everything(seed)
    net = experiment.model_from_params(p, ds.data_shape)
    result, _ = experiment.train(net, experiment.datamodule(ds, spec, run, p), run, p)
    experiment.publish_model(result, run, p)
    return str(run.path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    return {"vae": _train(root / "vae", "vae"), "gan": _train(root / "gan", "gan"),
            "other": _train(root / "other-seed", "vae", seed=1)}


def _p(**kw):
    return params.typed("evaluate", {"n_draws": 3, "n_samples": 200, **kw})


@pytest.mark.slow
def test_two_models_one_table_in_own_folder(runs):
    p = _p(run_dirs=f"{runs['vae']},{runs['gan']}")
    cmp = C.compare_runs(p)
    assert cmp.names == ["vae", "gan"]
    assert [r["row"] for r in cmp.rows] == ["vae (vae)", "gan (gan)", "real (holdout_a)",
                                            "baseline (noise)",
                                            "baseline (GMM)"]
    for r in cmp.rows[:2]:
        assert r["fd_ci_low"] <= r["fd"] <= r["fd_ci_high"] and r["m"] == cmp.rows[0]["m"]
    assert cmp.headlines["vae"]["fd_real_vs_real"] == cmp.headlines["gan"]["fd_real_vs_real"]
    assert cmp.headlines["vae"]["fd"] != cmp.headlines["gan"]["fd"]
    prov = reports.provenance(p, dataset="toy", data_fingerprint=cmp.fingerprint)
    C.write_comparison(cmp, prov)
    assert cmp.out_dir.name == "compare-vae-gan" and cmp.out_dir.parent == RunFolder(runs["vae"]).path.parent
    doc = json.loads((cmp.out_dir / "02_evaluate_compare.json").read_text())
    assert doc["gan.fd"] == cmp.headlines["gan"]["fd"] and doc["data_fingerprint"] == cmp.fingerprint
    tables = json.loads((cmp.out_dir / "02_evaluate_compare.tables.json").read_text())
    assert len(tables["rows"]) == 5 and tables["runs"]["gan"] == runs["gan"]
    # the single-run default is untouched: its first row is still "model"
    assert params.defaults("evaluate")["run_dirs"] is None


@pytest.mark.slow
def test_different_fingerprints_are_refused_naming_both(runs):
    fp = {k: data.DataSpec.load(RunFolder(v).data_spec).fingerprint for k, v in runs.items()}
    with pytest.raises(data.DataError, match="one data fingerprint") as err:
        C.compare_runs(_p(run_dirs=[runs["vae"], runs["other"]]))
    assert fp["vae"] in str(err.value) and fp["other"] in str(err.value)


def test_run_dirs_parsing():
    assert C.parse_run_dirs("[a, 'b']") == ["a", "b"] and C.parse_run_dirs(["a", "b"]) == ["a", "b"]
    with pytest.raises(data.DataError, match="at least two"):
        C.parse_run_dirs("a")


def test_comparison_folder_ignores_the_pipelines_staging_copy(tmp_path, monkeypatch):
    """Under `genlab run --name a`, run a is written to a staging folder: the comparison still
    goes to reports/compare-a-b beside the final runs, named after them."""
    from genlab.ops.runs import STAGING_ENV

    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv(STAGING_ENV, json.dumps({str(a): str(tmp_path / ".staging" / "a.123")}))
    assert RunFolder(str(a), create=False).path.name == "a.123"
    assert C.comparison_dir([str(a), str(b)]) == tmp_path / "compare-a-b"
