"""The CI/CD gate: rules pass, fail, and error (missing key, null) exactly as documented."""

import json

import pytest

from genlab.ops.cli import main
from genlab.ops.gate import GateError, Rule, evaluate, load_rules


def _run(folder, **notebooks):
    folder.mkdir(parents=True)
    for stem, numbers in notebooks.items():
        (folder / f"{stem}.json").write_text(json.dumps({**numbers, "parameters": {"seed": 0},
                                                         "provenance": {}}))
    (folder / "timings.json").write_text(json.dumps({"fd": 99}))  # not a headline file
    return folder


@pytest.mark.parametrize("text, key, op, value", [
    ("fd<=2.0", "fd", "<=", 2.0), (" mia_auc_max < 0.6 ", "mia_auc_max", "<", 0.6),
    ("retrain_recommended==false", "retrain_recommended", "==", False),
    ("privacy_verdict!=high", "privacy_verdict", "!=", "high"),
    ("02_evaluate.fd>=1e-3", "02_evaluate.fd", ">=", 0.001),
])
def test_parse(text, key, op, value):
    assert Rule.parse(text) == Rule(key, op, value)


@pytest.mark.parametrize("text", ["fd", "fd<<2", "fd<=high", "<=2", "fd<=true"])
def test_parse_rejects(text):
    with pytest.raises(GateError, match="rule"):
        Rule.parse(text)


def test_pass_fail_and_errors(tmp_path):
    run = _run(tmp_path / "r", **{"01_train": {"final_val_loss": 24.1, "n_members": 896},
                                  "02_evaluate": {"fd": 3.0, "kid": None,
                                                  "kid_na_reason": "too few samples",
                                                  "n_members": 800}})
    rows = evaluate(run, [Rule.parse(t) for t in (
        "final_val_loss<=30", "fd<=2", "kid<=0.1", "missing>1", "n_members>0",
        "01_train.n_members==896")])
    status = {r["rule"]: (r["status"], r["why"]) for r in rows}
    assert status["final_val_loss<=30"][0] == "pass"
    assert status["fd<=2"][0] == "FAIL"
    assert status["kid<=0.1"] == ("ERROR", "'kid' is null: too few samples")
    assert status["missing>1"] == ("ERROR", "no headline key 'missing'")
    assert status["n_members>0"][0] == "ERROR" and "01_train.n_members" in status["n_members>0"][1]
    assert status["01_train.n_members==896"][0] == "pass"


def test_sweep_folder_checks_every_run_and_cli_exit_codes(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _run(sweep / "a", **{"01_train": {"final_val_loss": 20.0}})
    _run(sweep / "b", **{"01_train": {"final_val_loss": 40.0}})
    rows = evaluate(sweep, load_rules(["final_val_loss<=30"], []))
    assert [(r["run"], r["status"]) for r in rows] == [("a", "pass"), ("b", "FAIL")]
    assert main(["gate", str(sweep), "--rule", "final_val_loss<=30"]) == 1
    assert "1 passed, 1 failed" in capsys.readouterr().out
    assert main(["gate", str(sweep / "a"), "--rule", "final_val_loss<=30"]) == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - final_val_loss<=50\n")
    assert main(["gate", str(sweep), "-f", str(rules)]) == 0
    assert main(["gate", str(tmp_path / "nowhere"), "--rule", "fd<=1"]) == 2
    assert main(["gate", str(sweep)]) == 2
