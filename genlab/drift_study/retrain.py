"""Retraining after drift, and the check of the user's own production data.

The trigger is a rule an operations team can state in one line: "retrain when <test> on
<representation> gives p ≤ <threshold> on a window of at least <min_window> production records".
When it fires, the run's model is fine-tuned (`init_from`) on one part of the shifted production
data into `artifacts/drift_retrain/` — never the run's `model.ckpt` or `checkpoints/` — and the
old and new models are compared on another, disjoint part: Fréchet distance of their samples,
the model's own score, and whether drift is still detected against each reference.

A class-conditional model needs labels to train on, and production records come without them:
it is fine-tuned on the evaluation classifier's predicted labels (the BBSD softmax
representation's argmax), and its class prior becomes their shares, so its samples follow the
production label mix (a knock-out or imbalance shift included).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from genlab.train import training
from genlab.drift_study.study import Representation, run_test, tests_for
from genlab.numerics import frechet_distance, single_threaded
from genlab.models.scoring import model_representations
from genlab.models import is_conditional
from genlab.models import load_model
from genlab.ops.runs import RunFolder
from genlab.drift_study.shifts import Pool, parse_shift
from genlab.params import DriftStudyParams

RETRAIN_DIR = "drift_retrain"


def retrain_scenario(run: RunFolder, reference: np.ndarray, pool: Pool,
                     reps: Mapping[str, Representation], p: DriftStudyParams) -> dict[str, Any]:
    """Shift the whole production pool, decide on a window, fine-tune if the rule fires, and
    compare old and new models on a held-out part. Returns flat numbers for the report."""
    rep, test = p.retrain_representation, p.retrain_detector
    if rep not in reps:
        raise ValueError(f"retrain_representation: expected one of {sorted(reps)} for this run, "
                         f"got {rep!r}")
    if test not in tests_for(rep):
        raise ValueError(f"retrain_detector: expected one of {list(tests_for(rep))} on "
                         f"{rep!r}, got {test!r}")
    shift = parse_shift(p.retrain_shift, "retrain_shift")
    rng = np.random.default_rng([p.seed, 6])
    shifted = shift.draw_all(pool, rng)
    half = len(shifted) // 2
    tune, held = shifted[:half], shifted[half:]
    if p.retrain_min_window > len(tune):
        raise ValueError(f"retrain_min_window: expected <= {len(tune)} (half the production "
                         f"pool), got {p.retrain_min_window}")
    window = tune[: p.retrain_min_window]
    f = reps[rep]
    with single_threaded():
        decision = run_test(test, f(reference), f(window), alpha=p.retrain_threshold,
                            n_permutations=p.n_permutations, rng=rng)
    out: dict[str, Any] = {
        "retrain_rule": f"{test}@{rep} p <= {p.retrain_threshold} on >= "
                        f"{p.retrain_min_window} records",
        "retrain_shift": shift.name, "retrain_window_pvalue": decision.p_value,
        "retrain_recommended": decision.detected,
    }
    old = load_model(run.model_ckpt)
    feat = reps.get("features", reps["pca"])
    out["fd_feature_space"] = "features" if "features" in reps else "pca"
    out.update(_compare(old, "before", "old", reference, held, feat, f, p))
    if not decision.detected:
        for k in ("fd_after_retrain", "score_after_retrain", "pvalue_new_reference_vs_heldout",
                  "retrain_fd_change", "retrain_helped"):
            out[k] = None
            out[f"{k}_na_reason"] = "retraining not recommended by the rule"
        return out
    labels = None
    if is_conditional(old):
        if "softmax" not in reps:
            raise ValueError("a conditional model is fine-tuned on predicted labels, but this run has "
                             "no classifier (softmax representation) to predict them")
        labels = reps["softmax"](tune).argmax(1)
    new = fine_tune(run, tune, p, labels=labels)
    out.update(_compare(new, "after", "new", tune, held, feat, f, p))
    out.update(_fd_change(old, new, held, feat, p.seed))
    return out


FD_CHANGE_DRAWS = 40


def _fd_change(old, new, held: np.ndarray, feat: Representation, seed: int) -> dict[str, Any]:
    """FD(after) − FD(before) against the held-out production records, with a 95% interval
    over `FD_CHANGE_DRAWS` paired subsamples (half of the held-out records, the same half for
    both models; half of each model's samples): retraining *helped* only when the whole
    interval is below 0, not when one pair of FDs happens to order that way."""
    with single_threaded():
        f_old = feat(old.sample(len(held), seed=seed).numpy())
        f_new = feat(new.sample(len(held), seed=seed).numpy())
        f_held = feat(held)
        m = len(held) // 2
        rng = np.random.default_rng([seed, 12])
        diffs = []
        for _ in range(FD_CHANGE_DRAWS):
            h = f_held[rng.choice(len(f_held), m, replace=False)]
            diffs.append(frechet_distance(f_new[rng.choice(len(f_new), m, replace=False)], h)
                         - frechet_distance(f_old[rng.choice(len(f_old), m, replace=False)], h))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"retrain_fd_change": float(np.mean(diffs)), "retrain_fd_change_ci_low": float(lo),
            "retrain_fd_change_ci_high": float(hi), "retrain_fd_change_m": m,
            "retrain_helped": bool(hi < 0)}


def fine_tune(run: RunFolder, x: np.ndarray, p: DriftStudyParams,
              labels: np.ndarray | None = None):
    """Fine-tune a copy of the run's model on `x` (with class `labels` for a conditional model,
    whose class prior becomes their shares) for `retrain_epochs` epochs (seeded, deterministic)
    into `artifacts/drift_retrain/`; returns the new model in eval mode."""
    ckpt_dir = run.artifacts / RETRAIN_DIR
    training.seed_everything(p.seed)
    model = load_model(run.model_ckpt)
    training.init_from_checkpoint(model, run.model_ckpt)
    model.train()
    g = torch.Generator().manual_seed(p.seed)
    tensors = [torch.from_numpy(np.ascontiguousarray(x, np.float32))]
    if labels is not None:
        tensors.append(torch.as_tensor(np.asarray(labels), dtype=torch.long))
        model.set_class_prior(torch.bincount(tensors[1], minlength=model.n_classes))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=64,
                                         shuffle=True, generator=g)
    cfg = training.TrainConfig(max_epochs=p.retrain_epochs, batch_size=64, seed=p.seed)
    result = training.fit(model, train_dataloaders=loader, ckpt_dir=ckpt_dir, cfg=cfg)
    return load_model(result.last_ckpt)


def _compare(model, when: str, which: str, reference: np.ndarray, held: np.ndarray,
             feat: Representation, f: Representation, p: DriftStudyParams) -> dict[str, Any]:
    """The same three measurements for the old model (before) and the fine-tuned one (after):
    FD of its samples to the held-out part, its score there, and the MMD p-value of the
    held-out part against the reference that model stands for (old: holdout_a, new: the
    fine-tuning part)."""
    out: dict[str, Any] = {f"fd_{when}_retrain": _fd(model, held, feat, p.seed),
                           f"score_{when}_retrain": _score(model, held)}
    if out[f"score_{when}_retrain"] is None:
        out[f"score_{when}_retrain_na_reason"] = ("a GAN's discriminator logit is relative to its own "
                                                  "generator: not comparable between two models")
    with single_threaded():
        out[f"pvalue_{which}_reference_vs_heldout"] = run_test(
            "mmd", f(reference), f(held), alpha=p.alpha, n_permutations=p.n_permutations,
            rng=np.random.default_rng([p.seed, 7])).p_value
    return out


def _fd(model, held: np.ndarray, feat: Representation, seed: int) -> float:
    with single_threaded():
        samples = model.sample(len(held), seed=seed).numpy()
        return frechet_distance(feat(samples), feat(held))


def _score(model, held: np.ndarray) -> float | None:
    """The model's mean loss on the held-out part, where it compares across models (lower is
    better): the study's score representation (the VAE's negative ELBO, a CVAE's label-free
    marginal, the DDPM's denoising loss at T/2); None for a GAN."""
    kind = getattr(model, "model_kind", None)
    if kind not in ("vae", "ddpm"):
        return None
    with single_threaded():
        return float(model_representations(model)["score"](held).mean())


def production_check(reference: np.ndarray, production: np.ndarray,
                     reps: Mapping[str, Representation], p: DriftStudyParams) -> list[dict]:
    """Every test on every representation: the user's production data vs the reference."""
    if production.shape[1:] != reference.shape[1:]:
        raise ValueError(f"production: expected records of shape {reference.shape[1:]} like the "
                         f"run's data, got {production.shape[1:]}")
    rows = []
    with single_threaded():
        for rep, f in reps.items():
            a, b = f(reference), f(production)
            for test in tests_for(rep):
                r = run_test(test, a, b, alpha=p.alpha, n_permutations=p.n_permutations,
                             rng=np.random.default_rng([p.seed, 8]))
                rows.append({"method": f"{test}@{rep}", "p_value": r.p_value,
                             "effect_size": r.statistic, "drift": r.detected})
    return rows
