"""A canary round against a real `genlab serve` process on loopback: a candidate as good as the
champion is promoted, a candidate with damaged weights is rolled back, and no request fails,
also while the admin endpoint swaps the arms under traffic."""

import shutil

import pytest

pytest.importorskip("fastapi")

from genlab.operations.scenario import canary_round, damaged_copy  # noqa: E402


def _copy_run(run, dest):
    (dest / "artifacts").mkdir(parents=True)
    for name in ("model.ckpt", "data_spec.json"):
        shutil.copy2(run.path / "artifacts" / name, dest / "artifacts" / name)
    return dest


@pytest.mark.slow
def test_canary_promotes_good_and_rolls_back_broken(vae_run, tmp_path):
    champion = _copy_run(vae_run, tmp_path / "champion")
    good = _copy_run(vae_run, tmp_path / "good")
    broken = damaged_copy(vae_run.path, tmp_path / "broken", noise=1.0)

    # half the traffic on each arm, 32 records a request: for equal arms the non-inferiority
    # test at margin 0.05 then has a power of about 0.999 (acceptance near 0.8, 2400 per arm)
    promoted = canary_round(champion, good, tmp_path / "round-good", n_requests=150, n=32,
                            share=0.5, arl0_target=200)
    d = promoted["decision"]
    assert d["action"] == "promote", d
    assert promoted["champion_after"] == str(good) and promoted["candidate_after"] is None
    assert promoted["failed_requests"] == 0 and promoted["failed_requests_during_switch"] == 0
    assert promoted["requests_during_switch"] == 40
    assert 55 <= promoted["candidate_requests_before_decision"] <= 95  # ~half of 150

    rolled = canary_round(champion, broken, tmp_path / "round-broken", n_requests=150,
                          arl0_target=200)
    d = rolled["decision"]
    assert d["action"] == "rollback", d
    assert d["candidate"] < d["champion"] and d["p_inferior"] <= d["alpha"]
    assert rolled["metrics"]["candidate_drift_alarm"] is True  # its outputs changed, too
    assert rolled["champion_after"] == str(champion) and rolled["candidate_after"] is None
    assert rolled["failed_requests"] == 0 and rolled["failed_requests_during_switch"] == 0
