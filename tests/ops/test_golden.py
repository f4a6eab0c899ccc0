"""The regression record: the default run's headline numbers, on any machine, within tolerances.

`tests/golden/<notebook>.json` (written by `make golden`) holds every headline key of the default
run with its rule: exact for what no hardware changes, a tolerance from the spread over seeds for
floats. The slow test runs the default pipeline and compares; the fast ones show that the
comparison still bites: an injected change beyond a tolerance fails, a missing key fails."""

from __future__ import annotations

import copy
import json

import pytest

from genlab.ops import golden
from genlab.ops.pipeline import NOTEBOOKS, plan_run, run_pipeline

STEMS = [NOTEBOOKS[s] for s in golden.RECORDED]


def _record(stem):
    return golden.load(stem)


def _doc(record):
    """The headline JSON the golden run wrote, rebuilt from its record."""
    doc = {k: rule["value"] for k, rule in record["keys"].items()}
    doc["parameters"] = dict(record["parameters"])
    doc["provenance"] = {}
    return doc


# ------------------------------------------------------------------------------ the rules
def test_key_rules_from_seeds_and_machines():
    assert golden.key_rule("n_members", [896, 896, 896], [896]) == {"rule": "exact", "value": 896}
    assert golden.key_rule("privacy_verdict", ["low"] * 3, ["low"])["rule"] == "exact"
    # text that differs between runs (a verdict near its threshold) is compared by type only
    assert golden.key_rule("privacy_verdict", ["low"] * 3, ["elevated"])["rule"] == "text"
    assert golden.key_rule("privacy_verdict", ["low", "elevated", "low"])["rule"] == "text"
    # seed sd 1.0, machine rms 0.1: half a seed sd wins
    fd = golden.key_rule("fd", [10.0, 11.0, 12.0], [10.1, 9.9])
    assert fd["rule"] == "number" and fd["tolerance"] == pytest.approx(golden.K_SEED * 1.0)
    assert fd["machine_rms"] == pytest.approx(0.1)
    # machine rms 1.0 (bigger than seeds show): four times it wins
    ece = golden.key_rule("tstr_ece", [0.05, 0.051, 0.049], [0.06, 0.04])
    assert ece["tolerance"] == pytest.approx(golden.K_MACHINE * 0.01)
    epoch = golden.key_rule("best_epoch", [98, 95, 99], [98])
    assert epoch["rule"] == "number" and not epoch["nullable"]
    # a float every run reproduces still gets a floor, never an exact text match
    const = golden.key_rule("alpha", [0.05, 0.05, 0.05], [0.05])
    assert const["rule"] == "number" and const["tolerance"] == pytest.approx(0.05 * golden.REL_FLOOR)
    assert golden.key_rule("data_fingerprint", ["a", "b", "c"]) == {"rule": "exact", "value": "a"}
    nullable = golden.key_rule("auc", [0.6, None, 0.62])
    assert nullable["rule"] == "number" and nullable["nullable"]


def test_table_shape_keeps_keys_and_lengths_not_values():
    a = {"rows": [{"x": 1.0, "y": 2}, {"x": 3.0, "y": 4}], "meta": {"n": 1}}
    b = {"rows": [{"x": 9.0, "y": 0}, {"x": 8.0, "y": 7}], "meta": {"n": 2}}
    assert golden.table_shape(a) == golden.table_shape(b)
    assert golden.table_shape(a) != golden.table_shape({**a, "rows": a["rows"][:1]})


# --------------------------------------------------------------- the committed golden records
@pytest.mark.parametrize("stem", STEMS)
def test_golden_record_matches_itself_and_records_its_machine(stem):
    record = _record(stem)
    assert golden.compare(record, _doc(record)) == []
    assert record["made_on"]["cpu_model"] and record["made_on"]["torch_threads"] >= 1
    assert len(record["seeds"]) >= 3 and len(record["machines"]) >= 2


@pytest.mark.parametrize("stem", STEMS)
def test_every_number_beyond_its_tolerance_is_caught(stem):
    record = _record(stem)
    numbers = {k: r for k, r in record["keys"].items()
               if r["rule"] == "number" and r["value"] is not None}
    assert numbers
    for key, rule in numbers.items():
        doc = _doc(record)
        doc[key] = rule["value"] + 1.01 * rule["tolerance"]
        assert any(f".{key}:" in p for p in golden.compare(record, doc)), key
        doc[key] = rule["value"] + 0.99 * rule["tolerance"]
        assert golden.compare(record, doc) == [], key


# Changes a real regression makes, each of which must fail the comparison.
INJECTED = [
    ("02_evaluate", "fd", lambda v: v * 1.2),
    ("02_evaluate", "precision", lambda v: v - 0.1),
    ("03_privacy_audit", "mia_auc_max", lambda v: v + 0.1),
    ("01_train", "final_val_loss", lambda v: v * 1.1),
    ("04_drift_study", "arl0_measured", lambda v: v * 2),
]


@pytest.mark.parametrize("stem,key,change", INJECTED, ids=[f"{s}.{k}" for s, k, _ in INJECTED])
def test_injected_metric_change_fails(stem, key, change):
    record = _record(stem)
    doc = _doc(record)
    doc[key] = change(doc[key])
    problems = golden.compare(record, doc)
    assert any(f".{key}:" in p for p in problems), (key, record["keys"][key])


def test_structure_changes_fail():
    record = _record("02_evaluate")
    doc = _doc(record)
    missing = {k: v for k, v in doc.items() if k != "fd"}
    assert any("'fd' missing" in p for p in golden.compare(record, missing))
    assert any("not in the golden" in p for p in golden.compare(record, {**doc, "new_key": 1.0}))
    assert any("fd:" in p for p in golden.compare(record, {**doc, "fd": None}))
    params = copy.deepcopy(doc)
    params["parameters"]["n_draws"] = 3
    assert any("parameters" in p for p in golden.compare(record, params))
    train = _record("01_train")
    doc = _doc(train)
    doc["data_fingerprint"] = "0" * 64
    assert any("data_fingerprint" in p for p in golden.compare(train, doc))
    doc = _doc(train)
    doc["n_members"] += 1
    assert any("n_members" in p for p in golden.compare(train, doc))


# --------------------------------------------------------------------- the default run itself
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    return run_pipeline(plan_run({}, name="default", reports_dir=reports,
                                 only=list(golden.RECORDED)), progress=False,
                        echo=lambda *_: None)


@pytest.mark.slow
@pytest.mark.golden
def test_default_run_matches_golden_record(default_run):
    problems = golden.check_run(default_run, STEMS)
    assert not problems, "\n".join(problems)
    spec = json.loads((default_run / "artifacts" / "data_spec.json").read_text())
    train = json.loads((default_run / "01_train.json").read_text())
    assert spec["fingerprint"] == train["data_fingerprint"]


@pytest.mark.slow
@pytest.mark.golden
def test_default_run_floor_is_best_and_noise_is_worst(default_run):
    """The sanity rows gate the default run: on every fidelity metric of 02_evaluate the floor is
    the best row and the noise baseline the worst, intervals apart."""
    from genlab.evaluate.sanity import sanity_checks

    h = json.loads((default_run / "02_evaluate.json").read_text())
    failed = [r["detail"] for r in sanity_checks(h) if not r["passed"]]
    assert not failed and h["sanity_violations"] == 0, failed


@pytest.mark.slow
@pytest.mark.golden
def test_default_run_drift_tests_stay_in_their_false_alarm_band(default_run):
    """Under no shift every drift test's false-alarm rate stays within its (family-wise)
    calibration band, and the monitor's ARL0 is measured on a pool it was not calibrated on."""
    h = json.loads((default_run / "04_drift_study.json").read_text())
    tables = json.loads((default_run / "04_drift_study.tables.json").read_text())
    out = [r for r in tables["false_alarms"] if r["rate"] > r["band_high"]]
    assert not out and h["n_miscalibrated"] == 0, out
    assert {r["detector"] for r in tables["monitor_calibration_sizes"]} >= {"window_mmd"}
