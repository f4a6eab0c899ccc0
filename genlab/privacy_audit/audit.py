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
5. Reference rows (:mod:`genlab.privacy_audit.references`): the memorisation metrics and the best
   black-box attack on a copier (samples = the members) and on fresh real records (``val``), as
   ``<key>_copy`` / ``<key>_baseline`` beside the model's.

LiRA (``lira_shadows > 0``, :mod:`genlab.privacy_audit.lira`) is the online attack with shadows
that replicate the audited training (its recipe from ``01_train.json``), written to
``artifacts/shadows/<k>/``; the audited ``model.ckpt`` is never touched. Without a recipe
(``recipe=None``: e.g. a model audited outside a run folder) ``mia_auc_lira`` is null with the
reason.

External samples (``samples=``, an array from any generator): only the black-box parts run on
them (distance, MC ball, DOMIAS, DCR / NNDR / authenticity, C_T, the gallery); the white-box
attacks, LiRA, the canary bound and the accountant's ε describe the run's model, not the
samples, and are null with the reason.

Class-conditional models (``n_classes > 0``) are scored with each record's true label (members,
non-members and the reference population all come from the labelled data set), and their shadows
train on the labels of their records. Canaries are unlabelled crafted records
(training refuses them for a conditional model); were there any, they would be scored label-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from genlab.data import DataSpec
from genlab.models import is_conditional
from genlab.numerics import flatten
from genlab.params import ParameterError, PrivacyAuditParams
from genlab.privacy_audit import lira
from genlab.privacy_audit import statistics as pv
from genlab.privacy_audit.attack_table import attack_numbers, attack_rows
from genlab.privacy_audit.attacks import fit_attacks, model_loss, nn_distances
from genlab.privacy_audit.references import memo_numbers, reference_rows
from genlab.train.canaries import CANARY_FILE, Canaries
from genlab.train.dp import load_record


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
    idx: dict[str, np.ndarray]         # data-set indices of "mem", "non", "ref"
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor | None]  # labels, for a conditional model only


def _scored(model, ds, spec: DataSpec, n_audit: int | None, seed: int) -> _Scored:
    x_all = torch.from_numpy(ds.x)
    mem_idx, non_idx, n = draw_scored(spec, n_audit, seed)
    idx = {"mem": mem_idx, "non": non_idx, "ref": spec.pool("holdout_b")}
    # labels matter only to a conditional model; the others ignore them
    labelled = ds.y is not None and is_conditional(model)
    return _Scored(n, idx, {k: x_all[torch.from_numpy(i)] for k, i in idx.items()},
                   {k: torch.from_numpy(ds.y[i]).long() if labelled else None for k, i in idx.items()})


def _lira_na(p: PrivacyAuditParams, model, recipe) -> str | None:
    """Why LiRA does not run, or None when it does."""
    if p.lira_shadows == 0:
        return "lira_shadows=0"
    if model is None:
        return "external samples: LiRA needs the generator's own loss (white-box)"
    if isinstance(recipe, str):
        return recipe
    if recipe is None:
        return "no training recipe given: shadows cannot replicate the audited training"
    if not any(hasattr(model, a) for a in ("neg_elbo", "discriminate", "denoising_loss")):
        return f"{type(model).__name__} has no per-record loss for LiRA (see attacks.model_loss)"
    return None


def _add_lira(model, ds, spec: DataSpec, sc: _Scored, canaries: Canaries | None,
              scores: dict[str, dict], artifacts: Path, p: PrivacyAuditParams,
              recipe: lira.ShadowRecipe) -> dict:
    """Online LiRA scores into ``scores`` ("mem", "non", "can": each a score dict); returns the
    design's figures for the tables."""
    pop = lira.shadow_population(ds, spec, sc.idx["mem"], sc.idx["non"], canaries, seed=p.seed,
                                 labelled=sc.y["mem"] is not None)
    inclusion = lira.inclusion_matrix(len(pop.x), pop.n_train, p.lira_shadows, p.seed)
    shadows = lira.train_shadows(model, pop, inclusion, recipe, Path(artifacts) / "shadows",
                                 seed=p.seed)
    labels = pop.y if sc.y["mem"] is not None else None
    loss = lambda m: model_loss(m, pop.x, mc_samples=p.mc_samples, seed=p.seed, labels=labels)
    score = lira.lira_online(loss(model), np.stack([loss(s) for s in shadows]), inclusion)
    for key, target in scores.items():
        if target is not None:
            target["lira"] = score[pop.scored[key]]
    n_in = inclusion.sum(0)
    return {"shadows": p.lira_shadows, "population": len(pop.x), "shadow_train_size": pop.n_train,
            "in_per_record_min": int(n_in.min()), "in_per_record_max": int(n_in.max()),
            "epochs": recipe.epochs, "batch_size": recipe.batch_size, "dp": recipe.dp is not None}


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


def _no_canaries(num: dict, reason: str | None = None) -> None:
    reason = reason or "run has no canaries (train with canaries=m for the one-run audit)"
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
    Returns (memo, ct, the samples used, the members, holdout_a)."""
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
    memo, ct = memo_numbers(gen_memo, x_mem_all, x_hold_all, p)
    num.update({k: v for k, v in memo.items() if not isinstance(v, (np.ndarray, list))})
    num["data_copying_ct"] = ct["data_copying_ct"]
    if ct["data_copying_ct"] is None:
        num["data_copying_ct_na_reason"] = ct["data_copying_ct_na_reason"]
    return memo, ct, gen_memo, x_mem_all, x_hold_all


def run_audit(model, ds, spec: DataSpec, artifacts: Path, p: PrivacyAuditParams, *,
              canaries: Canaries | None = None, recipe: lira.ShadowRecipe | str | None = None,
              samples: np.ndarray | None = None) -> AuditResult:
    """Run every attack and test on the audited ``model`` (anything with ``sample(n, seed)``;
    white-box attacks where it has a VAE's, GAN's or DDPM's internals), or on external
    ``samples`` (black-box parts only; ``model`` is then not used). ``p``: the notebook
    parameters; ``recipe``: the audited training's, for LiRA's shadows (or why there is none)."""
    spec.check_matches(ds)
    if 0 < p.lira_shadows < lira.MIN_SHADOWS:
        raise ParameterError(f"parameter 'lira_shadows': expected 0 or an integer >= "
                             f"{lira.MIN_SHADOWS} (online LiRA needs >= 2 IN and 2 OUT shadows per "
                             f"record for its variances), got {p.lira_shadows}")
    external = samples is not None
    if external:
        model, canaries = None, None
        generated = flatten(samples)
    else:
        generated = flatten(model.sample(p.n_generated, seed=p.seed))
    sc = _scored(model, ds, spec, p.n_audit, p.seed)
    fitted = fit_attacks(model, generated, sc.x["ref"], seed=p.seed, mc_samples=p.mc_samples,
                         domias_dims=p.domias_dims, ball_quantile=p.ball_quantile,
                         reference_labels=sc.y["ref"])
    s_mem, s_non = fitted.score(sc.x["mem"], labels=sc.y["mem"]), fitted.score(sc.x["non"], labels=sc.y["non"])
    s_can = fitted.score(canaries.x()) if canaries is not None else None
    lira_na, lira_info = _lira_na(p, model, recipe), None
    if lira_na is None:
        lira_info = _add_lira(model, ds, spec, sc, canaries, {"mem": s_mem, "non": s_non, "can": s_can},
                              artifacts, p, recipe)

    rows, roc, halves = attack_rows(s_mem, s_non, sc.n, p.seed, p.confidence)
    num = attack_numbers(rows, halves, sc.n, len(generated))
    best = num["mia_best_attack"]
    if lira_na is not None:
        num["mia_auc_lira"], num["mia_auc_lira_na_reason"] = None, lira_na
    if external:
        num["mia_auc_white_box_na_reason"] = ("external samples: white-box attacks read the "
                                              "generator's own loss")
    sel_m, ev_m, sel_n, ev_n = halves
    ind = pv.best_rate_epsilon(s_mem[best][sel_m], s_non[best][sel_n], s_mem[best][ev_m],
                               s_non[best][ev_n], delta=p.audit_delta, confidence=p.confidence)
    num["epsilon_indicative_records"] = ind["epsilon"]
    canary = _canary_bound(s_can[best], canaries, p, num) if canaries is not None else None
    if canaries is None:
        _no_canaries(num, "external samples: whether their generator trained on the run's canaries "
                          "is unknown" if external else None)
    if external:
        num["dp_epsilon_accountant"] = None
        num["dp_epsilon_accountant_na_reason"] = "external samples: the run's DP record is its model's"
    else:
        _accountant_numbers(artifacts, canary, p, num)
    memo, ct, gen_memo, x_mem_all, x_hold_all = _memorisation(generated, ds, spec, canaries, p, num)
    num.update(reference_rows(ds, spec, sc, x_mem_all, x_hold_all, p))
    num["privacy_verdict"], num["privacy_verdict_reason"] = _verdict(num, p)

    member_ids = [int(i) for i in spec.pool("members")]
    tables = {"attacks": rows, "data_copying_cells": ct["cells"], "attack_fit": fitted.info,
              "indicative_epsilon": {k: v for k, v in ind.items()},
              "gallery": [{"sample": s, "nearest_member": member_ids[m], "distance": d}
                          for s, m, d in memo["gallery"]]}
    if lira_info is not None:
        tables["lira"] = lira_info
    return AuditResult(numbers=num, attacks=rows, roc=roc, canary=canary, memo=memo, ct=ct,
                       generated=gen_memo, members_x=flatten(x_mem_all), tables=tables)


def load_canaries(artifacts: Path) -> Canaries | None:
    path = Path(artifacts) / CANARY_FILE
    return Canaries.load(path) if path.exists() else None
