"""Parameter specs: every bad value is refused with a message naming it; notebooks match specs."""

import math

import pytest

from genlab import params as P
from genlab.ops.pipeline import available_notebooks


def test_defaults_pass_their_own_spec():
    for notebook in P.NOTEBOOK_PARAMS:
        assert P.validate(notebook, P.defaults(notebook)) == P.defaults(notebook)


@pytest.mark.parametrize("name, value, fragment", [
    ("max_epochs", 0, "expected int in [1, 100000]"),
    ("max_epochs", 2.5, "got 2.5 (float)"),
    ("max_epochs", True, "got True (bool)"),
    ("model", "flow", "in ['vae', 'gan', 'ddpm']"),
    ("val_frac", 0.95, "in [0.0, 0.9]"),
    ("lr", math.nan, "got nan"),
    ("dataset", None, "got None"),
    ("seed", -1, "parameter 'seed'"),
])
def test_bad_values_name_parameter_expected_and_given(name, value, fragment):
    with pytest.raises(P.ParameterError) as err:
        P.validate("train", {name: value}, partial=True)
    assert f"'{name}'" in str(err.value) and fragment in str(err.value)


def test_unknown_and_missing_names():
    with pytest.raises(P.ParameterError, match=r"unknown parameter\(s\) \['max_epoch'\]"):
        P.validate("train", {"max_epoch": 3}, partial=True)
    with pytest.raises(P.ParameterError, match="'seed' is missing"):
        P.validate("train", {k: v for k, v in P.defaults("train").items() if k != "seed"})


def test_int_widens_to_float_and_optional_accepts_none():
    out = P.validate("train", {"val_frac": 0, "lr": None, "n_train": None}, partial=True)
    assert out["val_frac"] == 0.0 and isinstance(out["val_frac"], float)
    assert out["lr"] is None and out["n_train"] is None


def test_namespace_validation_catches_injected_typo():
    ns = dict(P.defaults("train"), In=[], Out={}, _private=1, math=math, max_epoch=3)
    with pytest.raises(P.ParameterError, match="max_epoch"):
        P.from_namespace("train", ns)
    del ns["max_epoch"]
    assert P.from_namespace("train", ns)["seed"] == 0


@pytest.mark.parametrize("text, expected", [
    ("max_epochs=20", ("max_epochs", 20)),
    ("lr=1e-3", ("lr", 0.001)),
    ("lr=0.5", ("lr", 0.5)),
    ("n_train=null", ("n_train", None)),
    ("n_train=None", ("n_train", None)),
    ("model=gan", ("model", "gan")),
    ("dataset=data/a=b.npz", ("dataset", "data/a=b.npz")),
    ("flag=true", ("flag", True)),
])
def test_parse_assignment(text, expected):
    key, value, _ = P.parse_assignment(text)
    assert (key, value) == expected


@pytest.mark.parametrize("text", ["noequals", "=3", "bad key=1"])
def test_parse_assignment_rejects(text):
    with pytest.raises(P.ParameterError, match="key=value"):
        P.parse_assignment(text)


def test_str_parameter_keeps_literal_text():
    spec = P.spec("train")
    assert P.restore_text(spec["dataset"], 2024, "2024") == "2024"
    assert P.restore_text(spec["max_epochs"], 20, "20") == 20


def test_notebook_parameter_cells_match_specs():
    import papermill as pm

    for short, path in available_notebooks().items():
        declared = {name: eval(p["default"]) for name, p in pm.inspect_notebook(str(path)).items()}
        assert declared == P.defaults(short), f"{path.name} parameters cell != genlab.params"
