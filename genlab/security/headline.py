"""The headline numbers of `07_security.json` and the tables beside them.

Every measured number carries `<key>_ci_low`/`<key>_ci_high` (Wilson intervals for rates,
subsample percentile intervals for FD/recall, a cluster bootstrap for memorisation), or is null
with `<key>_na_reason`. Ratios of two measurements (damage undone, FD over generations) get the
conservative interval spanned by the corners of their parts' intervals. The keys in
:data:`SETTINGS` describe the study, not a measurement, and carry no interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genlab.security.adversarial import largest_undetected, rate_row, wilson
from genlab.security.feedback import LOOP_MODES
from genlab.security.study import DAMAGE

SETTINGS = ("epochs", "epochs_reduced", "run_max_epochs", "n_samples", "ci_m", "poison_rates",
            "trigger_threshold", "adversarial_eps", "loop_generations", "drift_trials",
            "drift_evasion_eps_max", "poison_trigger_rate_max_at", "fd_poisoned_max_kind",
            "recall_poisoned_min_kind", "synthetic_labels", "screen_false_flag_rate_max_kind")

_TABLE_KEYS = ("trigger_rate", "trigger_rate_target", "conditional_accuracy", "fd", "recall",
               "coverage", "dup_share_closer")


def poisoning_table(rows: list[dict]) -> list[dict]:
    """One line per model: the measurements as 'value [low, high]' text columns."""
    out = []
    for r in rows:
        line = {"kind": r["kind"], "rate": r["rate"], "n_poisoned": r["n_poisoned"]}
        for k in _TABLE_KEYS:
            if k in r:
                line[k] = _ci_text(r, k)
        out.append(line)
    return out


def _ci_text(r: dict, k: str) -> str:
    if r.get(k) is None:
        return "–"
    return f"{r[k]:.3g} [{r[f'{k}_ci_low']:.3g}, {r[f'{k}_ci_high']:.3g}]"


def add_rarest_class_share(rows: list[dict]) -> None:
    """Per loop row: the share of the class that was rarest in generation 0's samples."""
    if not rows or "class_shares" not in rows[0]:
        return
    rare = int(np.argmin(rows[0]["class_shares"]))
    for r in rows:
        s = np.asarray(r["class_shares"])
        r["rarest_class"] = rare
        r["rarest_class_share"] = float(s[rare])


def loop_table(rows: list[dict]) -> list[dict]:
    return [{"mode": r["mode"], "generation": r["generation"], "n_train": r["n_train"],
             "fd": _ci_text(r, "fd"), "recall": _ci_text(r, "recall"),
             "coverage": _ci_text(r, "coverage"),
             **({"class_spread": r["class_spread"], "rarest_class_share": r["rarest_class_share"]}
                if "class_spread" in r else {})} for r in rows]


def _copy(out: dict, key: str, row: dict | None, src: str, reason: str = "") -> None:
    if row is None or row.get(src) is None:
        out[key] = None
        out[f"{key}_na_reason"] = reason or "not measured"
        return
    out[key] = row[src]
    out[f"{key}_ci_low"], out[f"{key}_ci_high"] = row.get(f"{src}_ci_low"), row.get(f"{src}_ci_high")


def _ratio(out: dict, key: str, num: dict, den: dict, metric: str) -> None:
    """num/den with the interval from the corners of both intervals (den's must exclude 0)."""
    lo_d, hi_d = den[f"{metric}_ci_low"], den[f"{metric}_ci_high"]
    if den[metric] <= 0 or lo_d <= 0:
        out[key] = None
        out[f"{key}_na_reason"] = f"generation 0's {metric} interval reaches 0"
        return
    out[key] = num[metric] / den[metric]
    out[f"{key}_ci_low"] = num[f"{metric}_ci_low"] / hi_d
    out[f"{key}_ci_high"] = num[f"{metric}_ci_high"] / lo_d


def _undone(out: dict, key: str, clean: dict, poisoned: dict, screened: dict, metric: str) -> None:
    """(poisoned − screened) / (poisoned − clean): 1 = the screens undid all the damage."""
    def iv(r):
        return r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]

    gap = poisoned[metric] - clean[metric]
    (pl, ph), (cl, ch), (sl, sh) = iv(poisoned), iv(clean), iv(screened)
    if abs(gap) < 1e-12 or (pl <= ch and cl <= ph):
        out[key] = None
        out[f"{key}_na_reason"] = (f"no damage to undo: the poisoned model's {metric} interval "
                                   "overlaps the clean model's")
        return
    out[key] = (poisoned[metric] - screened[metric]) / gap
    corners = [(p - s) / (p - c) for p in (pl, ph) for s in (sl, sh) for c in (cl, ch)
               if abs(p - c) > 1e-12 and np.sign(p - c) == np.sign(gap)]
    out[f"{key}_ci_low"], out[f"{key}_ci_high"] = min(corners), max(corners)


def numbers(rep) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline, tables) of a finished :class:`~genlab.security.notebook.SecurityReport`."""
    p, s = rep.p, rep.setup_
    rows = rep.poisoned["rows"]
    clean = rows[0]
    out: dict[str, Any] = {
        "epochs": rep.epochs, "run_max_epochs": rep.settings.max_epochs,
        "epochs_reduced": rep.epochs < rep.settings.max_epochs, "n_samples": s.n_samples,
        "ci_m": s.m, "poison_rates": ",".join(f"{r:g}" for r in rep.rates),
        "trigger_threshold": s.threshold, "adversarial_eps": p.adversarial_eps,
        "loop_generations": rep.generations, "drift_trials": rep.drift_trials}
    # ---- poisoning
    det = {r["records"]: r for r in rep.detector_rows}
    _copy(out, "poison_trigger_rate_real", det["real (holdout_b)"], "trigger_rate")
    _copy(out, "poison_trigger_rate_noise", det["noise baseline"], "trigger_rate")
    _copy(out, "poison_trigger_rate_clean", clean, "trigger_rate")
    back = [r for r in rows if r["kind"] == "backdoor"]
    top = max(back, key=lambda r: (r["trigger_rate"], r["rate"]))
    _copy(out, "poison_trigger_rate_max", top, "trigger_rate")
    out["poison_trigger_rate_max_at"] = top["rate"]
    uncond = "unconditional model: samples are not requested by class"
    _copy(out, "poison_trigger_rate_target_max", max(back, key=lambda r: r.get("trigger_rate_target") or 0),
          "trigger_rate_target", uncond)
    _copy(out, "conditional_accuracy_clean", clean, "conditional_accuracy", uncond)
    flips = [r for r in rows if r["kind"] == "label_flip"]
    _copy(out, "conditional_accuracy_label_flip_max_rate", flips[-1] if flips else None,
          "conditional_accuracy", rep.skipped.get("label_flip", uncond))
    poisoned = rows[1:]
    worst_fd = max(poisoned, key=lambda r: r["fd"])
    worst_recall = min(poisoned, key=lambda r: r["recall"])
    for key, row in (("fd_clean", clean), ("fd_poisoned_max", worst_fd)):
        _copy(out, key, row, "fd")
    for key, row in (("recall_clean", clean), ("recall_poisoned_min", worst_recall)):
        _copy(out, key, row, "recall")
    out["fd_poisoned_max_kind"] = f"{worst_fd['kind']}@{worst_fd['rate']:g}"
    out["recall_poisoned_min_kind"] = f"{worst_recall['kind']}@{worst_recall['rate']:g}"
    dups = [r for r in rows if r["kind"] == "near_duplicate"]
    _copy(out, "memorisation_dup_share_clean", clean, "dup_share_closer")
    _copy(out, "memorisation_dup_share_poisoned", dups[-1] if dups else None, "dup_share_closer")
    # ---- screens
    anys = {r["kind"]: r for r in rep.screened["screens"] if r["screen"] == "any"}
    retrained = {r["kind"]: r for r in rep.screened["retrained"]}
    for kind in DAMAGE:
        recall, undone = f"screen_recall_{kind}", f"screen_damage_undone_{kind}"
        if kind not in anys:
            for key in (recall, undone):
                out[key], out[f"{key}_na_reason"] = None, rep.skipped.get(kind, "not run")
            continue
        a = anys[kind]
        _copy(out, recall, _counts(a["true_positives"], a["poisoned"]), "r")
        metric = DAMAGE[kind]
        rate = retrained[kind]["rate"]
        prow = next(r for r in rows if r["kind"] == kind and r["rate"] == rate)
        _undone(out, undone, clean, prow, rep.screened["measured"][kind], metric)
    if anys:
        kind, a = max(anys.items(), key=lambda kv: kv[1]["false_flag_rate"])
        _copy(out, "screen_false_flag_rate_max", _counts(a["false_flags"], a["clean"]), "r")
        out["screen_false_flag_rate_max_kind"] = kind
    # ---- adversarial
    if rep.vae_rows:
        at = next(r for r in rep.vae_rows if r["eps"] == p.adversarial_eps)
        _copy(out, "adversarial_success_at_eps", at, "success")
        _copy(out, "adversarial_noise_success_at_eps", at, "noise_success")
        _copy(out, "adversarial_success_clean", rep.vae_rows[0], "success")
    else:
        for k in ("adversarial_success_at_eps", "adversarial_noise_success_at_eps",
                  "adversarial_success_clean"):
            out[k], out[f"{k}_na_reason"] = None, rep.vae_reason
    for tag, name in (("real", "real (TRTR)"), ("synthetic", "synthetic (TSTR)")):
        rs, why = rep.robust.get(name), rep.robust_reasons.get(name, "")
        at = next((r for r in rs if r["eps"] == p.adversarial_eps), None) if rs else None
        _copy(out, f"accuracy_{tag}_clean", rs[0] if rs else None, "accuracy", why)
        _copy(out, f"robust_accuracy_{tag}_at_eps", at, "accuracy", why)
        _copy(out, f"noise_accuracy_{tag}_at_eps", at, "noise_accuracy", why)
    if getattr(rep, "synthetic_labels", None):
        out["synthetic_labels"] = rep.synthetic_labels
    # ---- drift evasion
    best = largest_undetected(rep.evasion, p.evasion_max_detection) if rep.evasion else None
    out["drift_evasion_eps_max"] = best
    if best is None:
        out["drift_evasion_eps_max_na_reason"] = rep.evasion_reason or (
            "even the smallest budget is flagged by a drift test")
    row = next((r for r in rep.evasion if r["eps"] == best), None)
    for test in ("mmd_detection", "ks_detection"):
        _copy(out, f"drift_evasion_{test}_at_max", row, test,
              out.get("drift_evasion_eps_max_na_reason", ""))
    if row is not None:
        out["drift_evasion_accuracy_at_max"] = row["accuracy"]
        out.update(_accuracy_ci(row, rep.drift_batch_size, rep.drift_trials))
    else:
        out["drift_evasion_accuracy_at_max"] = None
        out["drift_evasion_accuracy_at_max_na_reason"] = out["drift_evasion_eps_max_na_reason"]
    # ---- feedback loops
    loops = rep.loops
    g = rep.generations
    for mode, tag in zip(LOOP_MODES, ("collapse", "mix", "accumulate")):
        first = next(r for r in loops if r["mode"] == mode and r["generation"] == 0)
        last = next(r for r in loops if r["mode"] == mode and r["generation"] == g)
        _ratio(out, f"{tag}_fd_ratio_gen_k", last, first, "fd")
        _ratio(out, f"{tag}_recall_ratio_gen_k", last, first, "recall")
        _copy(out, f"{tag}_class_spread_gen_k", last, "class_spread",
              "no labels: no classifier assigns classes")
    _copy(out, "class_spread_gen_0", loops[0], "class_spread", "no labels: no classifier assigns classes")
    tables = {"trigger_detector": rep.detector_rows, "poisoning": rows,
              "screens": rep.screened["screens"], "screened_retrain": rep.screened["retrained"],
              "vae_latent_attack": rep.vae_rows, "robust_accuracy": rep.robust,
              "drift_evasion": rep.evasion, "feedback_loops": loops}
    return out, tables


def _counts(k: int, n: int) -> dict:
    """k of n as a rate with its Wilson interval (under the key "r")."""
    return rate_row("r", np.r_[np.ones(k, bool), np.zeros(n - k, bool)])


def _accuracy_ci(row: dict, batch: int, trials: int) -> dict:
    n = batch * trials
    _, lo, hi = wilson(int(round(row["accuracy"] * n)), n)
    return {"drift_evasion_accuracy_at_max_ci_low": lo, "drift_evasion_accuracy_at_max_ci_high": hi}
