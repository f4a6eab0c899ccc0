"""Adversarial inputs: a small projected-gradient-descent attack (Madry et al. 2018) and the
three places the study points it at.

- :func:`pgd` — sign-gradient steps on a per-record loss, each followed by projection onto the
  L∞ ball of radius ε around the input and onto the data's value range. No random start, so
  ε = 0 returns the input unchanged and a run is deterministic.
- :func:`vae_latent_attack` — the latent attack on a VAE's encoder (Tabacof, Tavares & Valle
  2016; Kos, Fischer & Song 2018): move the posterior mean of x + δ onto that of a target record,
  so the reconstruction becomes the target's class; judged by the evaluation classifier.
- :func:`robust_accuracy` — accuracy under an untargeted PGD of a multinomial logistic
  regression (the evaluation's TSTR/TRTR classifier, rebuilt in torch from its fitted
  coefficients: :func:`torch_logits`).
- :func:`drift_evasion` — the same perturbation applied to every record of a production batch,
  tested against the reference by the drift study's MMD and KS tests.

Every rate comes with a Wilson 95% interval over the attacked records (or batches), and beside
it a noise row: a random ±ε sign perturbation of the same size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from genlab.drift_study import detectors as drift
from genlab.numerics import single_threaded


IMAGE_RANGE = (0.0, 1.0)  # images; flat records pass (-inf, inf): no range to stay in
FLAT_RANGE = (-float("inf"), float("inf"))


def pgd(x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], eps: float, *,
        steps: int = 40, step_size: float | None = None,
        bounds: tuple[float, float] = IMAGE_RANGE) -> torch.Tensor:
    """Minimise `loss(x_adv)` (per-record values, summed) over ‖x_adv − x‖∞ ≤ eps within
    `bounds`; `step_size` defaults to 2.5·eps/steps. Returns a detached tensor."""
    if eps < 0:
        raise ValueError(f"eps: expected a non-negative L-infinity radius, got {eps!r}")
    x = x.detach()
    lo, hi = bounds
    if eps == 0:
        return x.clone()
    step = 2.5 * eps / steps if step_size is None else step_size
    adv = x.clone()
    for _ in range(int(steps)):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(adv).sum(), adv)
        with torch.no_grad():
            adv = adv - step * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(lo, hi)
    return adv.detach()


def sign_noise(x: torch.Tensor, eps: float, seed: int, bounds=IMAGE_RANGE) -> torch.Tensor:
    """The noise row: every value moved by ±eps at random, clipped to `bounds`."""
    g = torch.Generator().manual_seed(int(seed))
    s = torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1
    return (x + eps * s).clamp(*bounds)


def wilson(k: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    lo, hi = drift.wilson_ci(int(k), int(n))
    return k / n, lo, hi


def rate_row(name: str, hits: np.ndarray) -> dict:
    v, lo, hi = wilson(int(np.sum(hits)), len(hits))
    return {name: v, f"{name}_ci_low": lo, f"{name}_ci_high": hi}


# --------------------------------------------------------------------------- the VAE's encoder
def vae_latent_attack(model, x: np.ndarray, y: np.ndarray, target_x: np.ndarray,
                      target_y: np.ndarray, judge, eps_grid: Sequence[float], *, steps: int,
                      seed: int, bounds: tuple[float, float] = IMAGE_RANGE) -> list[dict]:
    """Success rate (the judge's class of the reconstruction == target class) per ε for the
    latent attack and for sign noise of the same size. A conditional VAE encodes and decodes with
    the source record's true class (the attacker changes only the record)."""
    cond = getattr(model, "n_classes", 0) > 0
    labels = torch.as_tensor(y, dtype=torch.long) if cond else None
    xt = torch.from_numpy(np.asarray(x, np.float32))
    rows = []
    with single_threaded(), torch.no_grad():
        mu_t = model.encode(torch.from_numpy(np.asarray(target_x, np.float32)),
                            torch.as_tensor(target_y, dtype=torch.long) if cond else None)[0]

    def loss(a):
        return (model.encode(a, labels)[0] - mu_t).pow(2).sum(1)

    def success(a):
        with torch.no_grad():
            rec = model.decode(model.encode(a, labels)[0], labels).numpy()
        return judge(rec).argmax(1) == target_y

    with single_threaded():
        for eps in eps_grid:
            adv = pgd(xt, loss, eps, steps=steps, bounds=bounds)
            row = {"eps": float(eps), **rate_row("success", success(adv)),
                   **rate_row("noise_success", success(sign_noise(xt, eps, seed, bounds)))}
            row["linf_max"] = float((adv - xt).abs().max())
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- classifiers
def torch_logits(estimator) -> Callable[[torch.Tensor], torch.Tensor]:
    """The decision function of a fitted scikit-learn LogisticRegression as a torch function of
    the (unflattened) records, so PGD can take its gradient: one logit per class in
    `estimator.classes_`. A two-class fit has one decision value z (class 1 when z > 0), so its
    logits are (0, z), whose softmax is scikit-learn's (1 - σ(z), σ(z))."""
    w = torch.as_tensor(estimator.coef_, dtype=torch.float32)
    b = torch.as_tensor(estimator.intercept_, dtype=torch.float32)
    if len(estimator.classes_) == 2:
        w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])
    return lambda x: x.flatten(1) @ w.T + b


def _untargeted(estimator, y: np.ndarray):
    """(logits, loss, class column, known) for the true labels `y`: the loss is the negative
    cross-entropy of the true class; a class the classifier never saw is always wrong."""
    f = torch_logits(estimator)
    classes = np.asarray(estimator.classes_)
    known = np.isin(y, classes)
    col = torch.as_tensor(np.searchsorted(classes, np.where(known, y, classes[0])), dtype=torch.long)
    return f, (lambda a: -torch.nn.functional.cross_entropy(f(a), col, reduction="none")), col, known


def robust_adv(estimator, x: np.ndarray, y: np.ndarray, eps: float, steps: int,
               bounds: tuple[float, float] = IMAGE_RANGE) -> np.ndarray:
    """`x` moved by untargeted PGD within eps against the classifier's true-class probability."""
    _, loss, _, _ = _untargeted(estimator, y)
    with single_threaded():
        return pgd(torch.from_numpy(np.asarray(x, np.float32)), loss, eps, steps=steps,
                   bounds=bounds).numpy()


def robust_accuracy(estimator, x: np.ndarray, y: np.ndarray, eps_grid: Sequence[float], *,
                    steps: int, seed: int, bounds: tuple[float, float] = IMAGE_RANGE) -> list[dict]:
    """Accuracy per ε under untargeted PGD and under sign noise of the same size."""
    f, _, col, known = _untargeted(estimator, y)

    def correct(a):
        with torch.no_grad():
            return (f(torch.as_tensor(a)).argmax(1) == col).numpy() & known

    xt = torch.from_numpy(np.asarray(x, np.float32))
    return [{"eps": float(eps),
             **rate_row("accuracy", correct(robust_adv(estimator, x, y, eps, steps, bounds))),
             **rate_row("noise_accuracy", correct(sign_noise(xt, eps, seed, bounds)))}
            for eps in eps_grid]


# --------------------------------------------------------------------------- drift detectors
def drift_evasion(estimator, reference_rep: np.ndarray, represent, batches: Sequence[tuple],
                  eps_grid: Sequence[float], *, alpha: float, n_permutations: int, steps: int,
                  seed: int, bounds: tuple[float, float] = IMAGE_RANGE) -> list[dict]:
    """Per ε: every record of each production batch (x, y) perturbed by untargeted PGD against
    the real-data classifier; the share of batches the MMD and KS (Bonferroni) tests flag
    against the reference in representation `represent`, and the classifier's accuracy on the
    perturbed records."""
    rows = []
    for eps in eps_grid:
        mmd, ks, acc = [], [], []
        for t, (bx, by) in enumerate(batches):
            adv = robust_adv(estimator, bx, by, eps, steps, bounds)
            rep = represent(adv)
            with single_threaded():
                mmd.append(drift.mmd_test(reference_rep, rep, alpha=alpha,
                                          n_permutations=n_permutations,
                                          rng=np.random.default_rng([seed, t, 0xD21F])).detected)
                ks.append(drift.ks_test(reference_rep, rep, alpha=alpha).detected)
            acc.append(float((estimator.predict(adv.reshape(len(adv), -1)) == by).mean()))
        rows.append({"eps": float(eps), **rate_row("mmd_detection", np.array(mmd)),
                     **rate_row("ks_detection", np.array(ks)), "accuracy": float(np.mean(acc))})
    return rows


def largest_undetected(rows: list[dict], max_detection: float) -> float | None:
    """The largest ε up to which (every smaller ε of the grid included) both tests flag at most
    `max_detection` of the batches; None when even the smallest ε is flagged more often."""
    best = None
    for r in sorted(rows, key=lambda r: r["eps"]):
        if r["mmd_detection"] > max_detection or r["ks_detection"] > max_detection:
            break
        best = r["eps"]
    return best
