"""Glue for ``03_privacy_audit.ipynb``: the audit protocol end to end, kept out of the notebook.

Protocol (the pools of `genlab.data`):

1. Scored records: ``n`` members (drawn from ``members``, the data-set records the model was
   trained on) and ``n`` non-members (from ``holdout_a``), seeded draws without replacement.
   The reference population for fitted attacks is ``holdout_b`` (never scored). Canaries, when
   the run has them, are scored by the same fitted attacks.
2. Every attack gives every record a score (:mod:`genlab.privacy_audit.attacks`); each attack is evaluated the
   same way (:mod:`genlab.privacy_audit.statistics`): members and non-members are each split into a seeded
   selection half and evaluation half; thresholds, the best attack and the bound's operating
   point are chosen on the selection half, every reported figure is measured on the other half.
3. Canaries: the best attack (chosen on the records' selection half — never on the canaries)
   ranks them; the one-run bound of Steinke et al. turns the correct guesses into an ε lower
   bound, set beside the DP accountant's ε when the run used DP.
4. Memorisation from the samples (:mod:`genlab.privacy_audit.memorisation`) and a verdict with parameterised
   thresholds.

LiRA shadows (``lira_shadows > 0``) are trained with the audited model's own LightningModule
class and hyper-parameters on random halves of ``holdout_b``, into ``artifacts/shadows/<k>/``;
the audited ``model.ckpt`` is never touched.

Class-conditional models (``n_classes > 0``) are scored with each record's true label (members,
non-members and the reference population all come from the labelled data set), and their shadows
train on the labels of their half of ``holdout_b``. Canaries are unlabelled crafted records
(training refuses them for a conditional model); were there any, they would be scored label-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.privacy_audit import statistics as pv
from genlab.numerics import flatten
from genlab.privacy_audit.attacks import ATTACKS, fit_attacks, lira_offline, model_loss, nn_distances
from genlab.train.canaries import CANARY_FILE, Canaries
from genlab.data import DataSpec
from genlab.datamodule import EpochSeededSampler
from genlab.train.dp import load_record
from genlab.privacy_audit.memorisation import data_copying_ct, dcr
from genlab.models import is_conditional
from genlab.params import PrivacyAuditParams

FPR_KEYS = {0.1: "10pct", 0.01: "1pct", 0.001: "0_1pct"}


@dataclass
class AuditResult:
    numbers: dict[str, Any]
    attacks: list[dict]  # one row per attack (table)
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # evaluation-half ROC per attack
    canary: dict | None
    memo: dict  # DCR etc. on the samples not nearest to a canary
    ct: dict
    generated: np.ndarray
    members_x: np.ndarray
    tables: dict = field(default_factory=dict)


def draw_scored(spec: DataSpec, n_audit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Balanced seeded draws: (member indices, holdout_a indices, n)."""
    mem, hold = spec.pool("members"), spec.pool("holdout_a")
    n = min(len(mem), len(hold)) if n_audit is None else int(n_audit)
    if n > min(len(mem), len(hold)) or n < 4:
        raise ValueError(f"n_audit: expected an integer in [4, {min(len(mem), len(hold))}] (the "
                         f"smaller of members={len(mem)} and holdout_a={len(hold)}) or None, got {n_audit!r}")
    rng = np.random.default_rng([int(seed), 0xA0D17])
    return (np.sort(rng.choice(mem, n, replace=False)), np.sort(rng.choice(hold, n, replace=False)), n)


def train_shadows(model, x_pool: torch.Tensor, run_artifacts: Path, *, k: int, epochs: int,
                  batch_size: int, seed: int, y_pool: torch.Tensor | None = None) -> list:
    """K shadow models of the audited model's class and hyper-parameters, each on a seeded random
    half of ``x_pool`` (holdout_b) with its labels ``y_pool`` (None: unlabelled, -1), written to
    ``artifacts/shadows/<i>/``. A conditional shadow's class prior is its half's label shares,
    as training sets the audited model's from its members."""
    from genlab.models import build_model
    from genlab.train.training import TrainConfig, fit, seed_everything

    hp = dict(model.hparams)
    kind = hp.pop("model_kind")
    hp.pop("data_shape")
    shadows = []
    for i in range(k):
        s = int(seed) * 1000 + 17 + i
        half = np.sort(np.random.default_rng([s, 0x5AD]).permutation(len(x_pool))[: len(x_pool) // 2])
        xs = x_pool[torch.from_numpy(half)]
        ys = torch.full((len(xs),), -1) if y_pool is None else y_pool[torch.from_numpy(half)]
        loader = DataLoader(TensorDataset(xs, ys), batch_size=batch_size,
                            sampler=EpochSeededSampler(len(xs), s))
        seed_everything(s)
        shadow = build_model(kind, list(model.data_shape), **hp)
        if is_conditional(shadow):
            shadow.set_class_prior(torch.bincount(ys, minlength=shadow.n_classes))
        fit(shadow, ckpt_dir=Path(run_artifacts) / "shadows" / str(i),
            cfg=TrainConfig(max_epochs=int(epochs), batch_size=batch_size, seed=s),
            train_dataloaders=loader)
        shadows.append(shadow.eval())
    return shadows


def _verdict(n: Mapping[str, Any], p: PrivacyAuditParams) -> tuple[str, str]:
    """low / elevated / high, with the reason — thresholds are notebook parameters."""
    auc, lo = n["mia_auc_max"], n["mia_auc_max_ci_low"]
    share, ct = n["dcr_share_closer_to_members"], n["data_copying_ct"]
    eps_lb = n.get("epsilon_lower_bound")
    if auc >= p.verdict_auc_high:
        return "high", f"best attack AUC {auc:.3f} >= {p.verdict_auc_high}"
    reasons = []
    if share >= p.verdict_share_high:
        # the samples are not independent: the share counts only when they sit by enough
        # distinct records (few: one coin flip each, a barely trained model repeating itself)
        # and its record-level (cluster bootstrap) CI is clear of 50 %. The notes stay short:
        # with every elevated reason they must fit the headline's 200 characters.
        k, k_min = n.get("dcr_n_distinct_nearest"), p.verdict_min_distinct_nearest
        s_lo = n.get("dcr_share_closer_to_members_ci_low")
        if k is not None and k < k_min:
            reasons.append(f"{share:.1%} closer to members not counted: only {k} distinct "
                           f"record(s) nearest (< {k_min})")
        elif s_lo is not None and s_lo <= 0.5:
            reasons.append(f"{share:.1%} closer to members not counted: record-level CI low "
                           f"{s_lo:.3f} <= 0.5")
        else:
            return "high", (f"{share:.1%} of samples closer to members >= "
                            f"{p.verdict_share_high:.0%} (nearest to {k} distinct records, "
                            f"record-level CI low {s_lo:.3f})")
    notes = reasons
    reasons = []
    if auc >= p.verdict_auc_elevated and lo > 0.5:
        reasons.append(f"best attack AUC {auc:.3f} >= {p.verdict_auc_elevated} (CI low {lo:.3f} > 0.5)")
    if ct is not None and ct <= p.verdict_ct_copying:
        reasons.append(f"C_T {ct:.2f} <= {p.verdict_ct_copying} (copying)")
    if eps_lb is not None and eps_lb > 0:
        reasons.append(f"canary ε lower bound {eps_lb:.2f} > 0")
    if reasons:
        return "elevated", "; ".join(reasons + notes)
    return "low", "; ".join([f"best attack AUC {auc:.3f} < {p.verdict_auc_elevated} or not "
                             f"significant; no copying or canary evidence"] + notes)


@dataclass
class _Scored:
    """The scored records (members, non-members, the reference population) and their labels."""

    n: int
    x: dict[str, torch.Tensor]         # "mem", "non", "ref"
    y: dict[str, torch.Tensor | None]  # labels, for a conditional model only


def _scored(model, ds, spec: DataSpec, n_audit: int | None, seed: int) -> _Scored:
    x_all = torch.from_numpy(ds.x)
    mem_idx, non_idx, n = draw_scored(spec, n_audit, seed)
    idx = {"mem": mem_idx, "non": non_idx, "ref": spec.pool("holdout_b")}
    # labels matter only to a conditional model; the others ignore them
    labelled = ds.y is not None and is_conditional(model)
    return _Scored(n, {k: x_all[torch.from_numpy(i)] for k, i in idx.items()},
                   {k: torch.from_numpy(ds.y[i]).long() if labelled else None for k, i in idx.items()})


def _add_lira(model, sc: _Scored, scores: list[tuple], artifacts: Path, p: PrivacyAuditParams,
              shadow_epochs: int | None, shadow_batch_size: int) -> None:
    """LiRA scores of every scored set (`scores`: (x, labels, its score dict)), from shadows."""
    epochs = p.lira_epochs or shadow_epochs
    if epochs is None:
        raise ValueError("lira_epochs: expected an int when the run's training epochs are unknown, got None")
    shadows = train_shadows(model, sc.x["ref"], artifacts, k=p.lira_shadows, epochs=epochs,
                            batch_size=shadow_batch_size, seed=p.seed, y_pool=sc.y["ref"])
    for x, y, target in scores:
        t = model_loss(model, x, mc_samples=p.mc_samples, seed=p.seed, labels=y)
        sh = np.stack([model_loss(s, x, mc_samples=p.mc_samples, seed=p.seed, labels=y)
                       for s in shadows])
        target["lira"] = lira_offline(t, sh)


def _attack_rows(s_mem: dict, s_non: dict, n: int, p: PrivacyAuditParams):
    """Per attack: AUC (CI) and TPR at the FPRs on the evaluation halves, thresholds and the
    selection AUC from the selection halves; returns (rows, roc, best attack, halves)."""
    sel_m, ev_m = pv.split_halves(n, p.seed)
    sel_n, ev_n = pv.split_halves(n, p.seed + 1)
    rows, roc, sel_auc = [], {}, {}
    for name in [a for a in ATTACKS if a in s_mem]:
        m_, n_ = s_mem[name], s_non[name]
        auc = pv.roc_auc(m_[ev_m], n_[ev_n], confidence=p.confidence)
        sel_auc[name] = pv.roc_auc(m_[sel_m], n_[sel_n]).auc
        row = {"attack": name, "auc": auc.auc, "auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high,
               "auc_selection_half": sel_auc[name]}
        for fpr, key in FPR_KEYS.items():
            t = pv.tpr_at_fpr(m_[sel_m], n_[sel_n], m_[ev_m], n_[ev_n], fpr)
            row[f"tpr_at_{key}_fpr"] = t["tpr"]
            row[f"fpr_achieved_{key}"] = t["fpr_achieved"]
            if t["na_reason"]:
                row[f"tpr_at_{key}_fpr_na_reason"] = t["na_reason"]
        rows.append(row)
        roc[name] = pv.roc_curve(m_[ev_m], n_[ev_n])
    best = max(sel_auc, key=lambda k: (sel_auc[k], -list(ATTACKS).index(k)))
    return rows, roc, best, (sel_m, ev_m, sel_n, ev_n)


def _attack_numbers(rows: list[dict], best: str, n: int, halves, n_generated: int) -> dict[str, Any]:
    sel_m, ev_m, sel_n, ev_n = halves
    best_row = next(r for r in rows if r["attack"] == best)
    num: dict[str, Any] = {
        "n_scored_members": n, "n_scored_nonmembers": n,
        "n_eval_members": len(ev_m), "n_eval_nonmembers": len(ev_n),
        "n_generated": n_generated,
        "mia_best_attack": best, "mia_auc_max": best_row["auc"],
        "mia_auc_max_ci_low": best_row["auc_ci_low"], "mia_auc_max_ci_high": best_row["auc_ci_high"],
    }
    for r in rows:
        num[f"mia_auc_{r['attack']}"] = r["auc"]
    for key in FPR_KEYS.values():
        vals = [r[f"tpr_at_{key}_fpr"] for r in rows if r[f"tpr_at_{key}_fpr"] is not None]
        num[f"tpr_at_{key}_fpr_max"] = max(vals) if vals else None
        if not vals:
            num[f"tpr_at_{key}_fpr_max_na_reason"] = rows[0][f"tpr_at_{key}_fpr_na_reason"]
    return num


def _canary_bound(s_can: np.ndarray, canaries: Canaries, p: PrivacyAuditParams, num: dict) -> dict:
    """The one-run ε lower bound from the best attack's canary scores (numbers into `num`)."""
    g = pv.canary_guesses(s_can, canaries.included_mask(), guess_frac=p.canary_guess_frac)
    bound = pv.one_run_epsilon(g["m"], g["r"], g["v"], delta=p.audit_delta, confidence=p.confidence)
    # cap: all r guesses right (the most this audit can show); max_m: all m guessed and right
    cap = pv.one_run_epsilon(g["m"], g["r"], g["r"], delta=p.audit_delta, confidence=p.confidence)
    cap_m = pv.one_run_epsilon_cap(g["m"], delta=p.audit_delta, confidence=p.confidence)
    num.update(epsilon_lower_bound=bound, epsilon_lower_bound_cap=cap,
               epsilon_lower_bound_max_m=cap_m, n_canaries=g["m"],
               canary_guesses=g["r"], canary_correct=g["v"])
    return {"m": g["m"], "r": g["r"], "v": g["v"], "bound": bound, "cap": cap,
            "scores": s_can, "included": canaries.included_mask()}


def _no_canaries(num: dict) -> None:
    reason = "run has no canaries (train with canaries=m for the one-run audit)"
    num.update(epsilon_lower_bound=None, epsilon_lower_bound_na_reason=reason,
               epsilon_lower_bound_cap=None, epsilon_lower_bound_cap_na_reason=reason,
               epsilon_lower_bound_max_m=None, epsilon_lower_bound_max_m_na_reason=reason,
               n_canaries=0)


def _accountant_numbers(artifacts: Path, canary: dict | None, p: PrivacyAuditParams, num: dict) -> None:
    """The DP accountant's ε beside the canary bound (their gap when both use one δ)."""
    dp = load_record(artifacts)
    if not dp.get("dp"):
        num["dp_epsilon_accountant"] = None
        num["dp_epsilon_accountant_na_reason"] = "trained without DP"
        return
    num["dp_epsilon_accountant"] = dp["epsilon"]
    num["dp_delta_accountant"] = dp["delta"]
    if canary is None:
        num["audit_gap"], num["audit_gap_na_reason"] = None, "no canary bound to compare"
    elif abs(dp["delta"] - p.audit_delta) > 1e-15:
        num["audit_gap"] = None
        num["audit_gap_na_reason"] = f"audit_delta {p.audit_delta:g} != training delta {dp['delta']:g}"
    else:
        num["audit_gap"] = dp["epsilon"] - canary["bound"]


def _memorisation(generated: np.ndarray, ds, spec: DataSpec, canaries: Canaries | None,
                  p: PrivacyAuditParams, num: dict):
    """DCR and C_T of the samples against members vs holdout_a. Samples nearer to a canary than
    to any data record reproduce canaries (outliers): they are counted apart and left out here,
    since outlier canaries would otherwise pull blurry samples into the "members" bank.
    Returns (memo, ct, the samples used, the members)."""
    x_all = torch.from_numpy(ds.x)
    x_mem_all = x_all[torch.from_numpy(spec.pool("members"))]
    x_hold_all = x_all[torch.from_numpy(spec.pool("holdout_a"))]
    gen_memo = generated
    if canaries is not None:
        d_can = nn_distances(generated, canaries.x(), 1)[0][:, 0]
        d_data = nn_distances(generated, torch.cat([x_mem_all, x_hold_all]), 1)[0][:, 0]
        near_canary = d_can < d_data
        num["n_samples_nearest_a_canary"] = int(near_canary.sum())
        gen_memo = generated[~near_canary]
    memo = dcr(gen_memo, x_mem_all, x_hold_all, seed=p.seed, near_quantile=p.near_dup_quantile,
               confidence=p.confidence)
    ct = data_copying_ct(x_mem_all, x_hold_all, gen_memo, cells=min(p.ct_cells, len(x_mem_all)),
                         seed=p.seed)
    num.update({k: v for k, v in memo.items() if not isinstance(v, (np.ndarray, list))})
    num["data_copying_ct"] = ct["data_copying_ct"]
    if ct["data_copying_ct"] is None:
        num["data_copying_ct_na_reason"] = ct["data_copying_ct_na_reason"]
    return memo, ct, gen_memo, x_mem_all


def run_audit(model, ds, spec: DataSpec, artifacts: Path, p: PrivacyAuditParams, *,
              canaries: Canaries | None = None, shadow_epochs: int | None = None,
              shadow_batch_size: int = 64) -> AuditResult:
    """Run every attack and test on the audited ``model`` (anything with ``sample(n, seed)``;
    white-box attacks where it has a VAE's, GAN's or DDPM's internals). ``p``: the notebook
    parameters; ``shadow_epochs``: the audited training's epochs (LiRA's default)."""
    spec.check_matches(ds)
    sc = _scored(model, ds, spec, p.n_audit, p.seed)
    generated = flatten(model.sample(p.n_generated, seed=p.seed))
    fitted = fit_attacks(model, generated, sc.x["ref"], seed=p.seed, mc_samples=p.mc_samples,
                         domias_dims=p.domias_dims, ball_quantile=p.ball_quantile,
                         reference_labels=sc.y["ref"])
    s_mem, s_non = fitted.score(sc.x["mem"], labels=sc.y["mem"]), fitted.score(sc.x["non"], labels=sc.y["non"])
    s_can = fitted.score(canaries.x()) if canaries is not None else None
    if p.lira_shadows > 0:
        scored = [(sc.x["mem"], sc.y["mem"], s_mem), (sc.x["non"], sc.y["non"], s_non)]
        if canaries is not None:
            scored.append((canaries.x(), None, s_can))
        _add_lira(model, sc, scored, artifacts, p, shadow_epochs, shadow_batch_size)

    rows, roc, best, halves = _attack_rows(s_mem, s_non, sc.n, p)
    num = _attack_numbers(rows, best, sc.n, halves, len(generated))
    sel_m, ev_m, sel_n, ev_n = halves
    ind = pv.best_rate_epsilon(s_mem[best][sel_m], s_non[best][sel_n], s_mem[best][ev_m],
                               s_non[best][ev_n], delta=p.audit_delta, confidence=p.confidence)
    num["epsilon_indicative_records"] = ind["epsilon"]
    if canaries is not None:
        canary = _canary_bound(s_can[best], canaries, p, num)
    else:
        canary = None
        _no_canaries(num)
    _accountant_numbers(artifacts, canary, p, num)
    memo, ct, gen_memo, x_mem_all = _memorisation(generated, ds, spec, canaries, p, num)
    num["privacy_verdict"], num["privacy_verdict_reason"] = _verdict(num, p)

    member_ids = [int(i) for i in spec.pool("members")]
    tables = {"attacks": rows, "data_copying_cells": ct["cells"], "attack_fit": fitted.info,
              "indicative_epsilon": {k: v for k, v in ind.items()},
              "gallery": [{"sample": s, "nearest_member": member_ids[m], "distance": d}
                          for s, m, d in memo["gallery"]]}
    return AuditResult(numbers=num, attacks=rows, roc=roc, canary=canary, memo=memo, ct=ct,
                       generated=gen_memo, members_x=flatten(x_mem_all), tables=tables)


def load_canaries(artifacts: Path) -> Canaries | None:
    path = Path(artifacts) / CANARY_FILE
    return Canaries.load(path) if path.exists() else None


def training_epochs(run_path: Path) -> int | None:
    """The audited run's ``max_epochs`` (from 01_train.json), for LiRA shadows."""
    js = Path(run_path) / "01_train.json"
    return json.loads(js.read_text())["parameters"].get("max_epochs") if js.exists() else None
