"""The security studies on tiny models (slow: every test trains): a strong backdoor is
reproduced in a conditional model's samples and caught by a screen; a self-consuming loop that
replaces its data loses recall while one that accumulates loses less; every headline number
has an interval or a reason."""

import numpy as np
import pytest

from genlab.drift_study.detectors import wilson_ci
from genlab.models import build_model
from genlab.security import feedback as FB
from genlab.security import models as SM
from genlab.security.study import StudySetup, poisoning_study, screening_study

pytestmark = pytest.mark.slow


def _settings(conditional: bool) -> SM.RunSettings:
    model = build_model("vae", [1, 8, 8], latent_dim=16, width=256, depth=2,
                        n_classes=10 if conditional else 0)
    hp = dict(model.hparams)
    hp.pop("model_kind")
    return SM.RunSettings("vae", hp, batch_size=64, max_epochs=30, dp=False)


def _setup(digits, digits_spec, tiny_run, tmp_path, conditional, epochs):
    mem = digits_spec.pool("members")
    ext = SM.extractor(tiny_run, digits, digits_spec, 0)
    return StudySetup(_settings(conditional), digits.x[mem], digits.y[mem],
                      digits.x[digits_spec.pool("holdout_b")], digits.x[digits_spec.pool("holdout_a")],
                      ext, 10, True, epochs, 400, 200, 5, 0, 0, 5, tmp_path)


def test_strong_backdoor_is_learnt_and_screened(digits, digits_spec, tiny_run, tmp_path, one_thread):
    s = _setup(digits, digits_spec, tiny_run, tmp_path, True, 30)
    res = poisoning_study(s, ["backdoor"], [0.1])
    clean, poisoned = res["rows"]
    assert clean["trigger_rate"] == 0.0
    # reproduced: samples requested in the target class carry the trigger, clean ones never
    assert poisoned["trigger_rate_target_ci_low"] > max(0.1, clean["trigger_rate_target_ci_high"])
    assert poisoned["trigger_rate_ci_low"] > clean["trigger_rate_ci_high"]
    assert poisoned["pool_fingerprint"] == s.poison("backdoor", 0.1).fingerprint()[:16]
    screened = screening_study(s, res["pools"], res["rows"])
    best = max((r for r in screened["screens"] if r.get("recall") is not None),
               key=lambda r: r["recall"])
    assert best["recall"] > 3 * best["false_flag_rate"]  # caught well above its false flags
    (row,) = screened["retrained"]
    assert row["damage_metric"] == "trigger_rate" and row["removed"] == next(
        r["flagged"] for r in screened["screens"] if r["screen"] == "any")
    assert not (tmp_path / "clean").samefile(tiny_run.model_ckpt.parent)


def test_replace_loop_loses_recall_accumulate_less(digits, digits_spec, tiny_run, tmp_path, one_thread):
    settings = _settings(False)
    x = digits.x[digits_spec.pool("members")]
    ext = SM.extractor(tiny_run, digits, digits_spec, 0)
    ref = digits.x[digits_spec.pool("holdout_b")]
    gen0 = SM.train_like_run(settings, x, None, epochs=20, seed=0, out_dir=tmp_path / "g0")
    rows = FB.run_loops(settings, x, None, gen0, generations=2, epochs=20, seed=0, out_dir=tmp_path,
                        score=lambda s: SM.fidelity(ext, s, ref, m=150, draws=5, seed=0))
    last = {r["mode"]: r for r in rows if r["generation"] == 2}
    first = rows[0]
    assert first["recall"] > 0.15  # generation 0 has something to lose
    assert last["replace"]["recall"] < 0.5 * first["recall"]
    assert last["accumulate"]["recall"] > max(0.6 * first["recall"], last["replace"]["recall"] + 0.1)
    assert last["accumulate"]["n_train"] == 3 * len(x) and last["replace"]["n_train"] == len(x)
