"""Every attack evaluated the same way: one row per attack from the scored records' scores.

Members and non-members are each split into a seeded selection half and evaluation half
(:func:`genlab.privacy_audit.statistics.split_halves`); thresholds and the best attack are chosen
on the selection half, and every reported figure (AUC with its DeLong CI, TPR at fixed FPRs) is
measured on the evaluation half."""

from __future__ import annotations

from typing import Any, Iterable

from genlab.privacy_audit import statistics as pv
from genlab.privacy_audit.attacks import ATTACKS

__all__ = ["FPR_KEYS", "BLACK_BOX", "attack_rows", "best_attack", "attack_numbers"]

FPR_KEYS = {0.1: "10pct", 0.01: "1pct", 0.001: "0_1pct"}
BLACK_BOX = ("distance", "mc_ball", "domias")  # need only samples; the rest read the model


def attack_rows(s_mem: dict, s_non: dict, n: int, seed: int, confidence: float):
    """Per attack: AUC (CI) and TPR at the FPRs on the evaluation halves, thresholds and the
    selection AUC from the selection halves; returns (rows, roc, halves)."""
    sel_m, ev_m = pv.split_halves(n, seed)
    sel_n, ev_n = pv.split_halves(n, seed + 1)
    rows, roc = [], {}
    for name in [a for a in ATTACKS if a in s_mem]:
        m_, n_ = s_mem[name], s_non[name]
        auc = pv.roc_auc(m_[ev_m], n_[ev_n], confidence=confidence)
        row = {"attack": name, "auc": auc.auc, "auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high,
               "auc_selection_half": pv.roc_auc(m_[sel_m], n_[sel_n]).auc}
        for fpr, key in FPR_KEYS.items():
            t = pv.tpr_at_fpr(m_[sel_m], n_[sel_n], m_[ev_m], n_[ev_n], fpr)
            row[f"tpr_at_{key}_fpr"] = t["tpr"]
            row[f"fpr_achieved_{key}"] = t["fpr_achieved"]
            if t["na_reason"]:
                row[f"tpr_at_{key}_fpr_na_reason"] = t["na_reason"]
        rows.append(row)
        roc[name] = pv.roc_curve(m_[ev_m], n_[ev_n])
    return rows, roc, (sel_m, ev_m, sel_n, ev_n)


def best_attack(rows: list[dict], names: Iterable[str] | None = None) -> dict | None:
    """The row with the highest *selection-half* AUC (ties: the earlier attack in ATTACKS),
    among ``names`` (all when None); None when no row qualifies."""
    keep = [r for r in rows if names is None or r["attack"] in set(names)]
    if not keep:
        return None
    return max(keep, key=lambda r: (r["auc_selection_half"], -ATTACKS.index(r["attack"])))


def attack_numbers(rows: list[dict], halves, n: int, n_generated: int) -> dict[str, Any]:
    """The headline's attack keys: sizes, the best attack's AUC and CI, the best black-box and
    white-box attacks' AUCs, every attack's AUC, the best TPR at each FPR."""
    sel_m, ev_m, sel_n, ev_n = halves
    best = best_attack(rows)
    num: dict[str, Any] = {
        "n_scored_members": n, "n_scored_nonmembers": n,
        "n_eval_members": len(ev_m), "n_eval_nonmembers": len(ev_n),
        "n_generated": n_generated,
        "mia_best_attack": best["attack"], "mia_auc_max": best["auc"],
        "mia_auc_max_ci_low": best["auc_ci_low"], "mia_auc_max_ci_high": best["auc_ci_high"],
    }
    for side, names in (("black_box", BLACK_BOX), ("white_box", [a for a in ATTACKS if a not in BLACK_BOX])):
        b = best_attack(rows, names)
        num[f"mia_auc_{side}"] = None if b is None else b["auc"]
        if b is None:
            num[f"mia_auc_{side}_na_reason"] = f"no {side.replace('_', '-')} attack applies"
        else:
            num[f"mia_auc_{side}_ci_low"] = b["auc_ci_low"]
            num[f"mia_auc_{side}_ci_high"] = b["auc_ci_high"]
            num[f"mia_best_{side}_attack"] = b["attack"]
    for r in rows:
        num[f"mia_auc_{r['attack']}"] = r["auc"]
        num[f"mia_auc_{r['attack']}_ci_low"] = r["auc_ci_low"]
        num[f"mia_auc_{r['attack']}_ci_high"] = r["auc_ci_high"]
    for key in FPR_KEYS.values():
        vals = [r[f"tpr_at_{key}_fpr"] for r in rows if r[f"tpr_at_{key}_fpr"] is not None]
        num[f"tpr_at_{key}_fpr_max"] = max(vals) if vals else None
        if not vals:
            num[f"tpr_at_{key}_fpr_max_na_reason"] = rows[0][f"tpr_at_{key}_fpr_na_reason"]
    return num
