"""Membership-inference attacks on generative models: one score per record, higher = "member".

All attacks are fitted once (:func:`fit_attacks`) from what the attacker may use — the model,
generated samples, and a *reference population* disjoint from the scored records (the data
spec's ``holdout_b``) — and then score any records the same way (:meth:`Attacks.score`):
members, non-members and canaries alike. Members are never used to fit anything.

Families
--------
- ``elbo`` (VAE, white-box): minus the negative ELBO, averaged over ``mc_samples`` seeded draws
  of z (a single draw is too noisy to rank records). Lower loss on members is what training does.
- ``recon`` (VAE, white-box): minus the squared reconstruction error at z = μ (no sampling noise).
- ``discriminator`` (GAN, white-box; LOGAN, Hayes et al. 2019): the discriminator's logit — it
  has seen the members as "real" throughout training.
- ``denoising`` (DDPM, white-box; Matsumoto et al. 2023): the EMA denoiser's loss
  ``||ε̂(x_t, t) − ε||²`` at the timesteps ``DENOISING_FRACTIONS`` of T (small to mid t, where the
  paper finds training records stand out most), each averaged over ``mc_samples`` seeded noise
  draws, standardised per timestep by the reference population's mean and standard deviation
  (the raw loss falls steeply with t, so unscaled the smallest t would drown the rest), and
  averaged over the timesteps; minus that, so lower loss = "member".
- ``secmi`` (DDPM, white-box; SecMI, Duan et al. 2023): minus the t-error of a deterministic
  DDIM round trip between t − k and t, t = ``SECMI_T`` · T, k = ``SECMI_K`` · T (the paper's
  t_sec = 100 and k = 10 of T = 1000): carried to t − k by DDIM inversion, one step up and one
  back; a record the denoiser has fitted comes back closer. No noise, so nothing to average.
  Not universal: on a tiny DDPM overfit full-batch to 32 records, at t ≥ 0.3 T the t-error
  ranks members *higher* (an AUC far below ½).
- ``distance`` (black-box; GAN-Leaks full black-box, Chen et al. 2020): minus the distance to
  the closest of k generated samples. Works for any generator, including one that copies.
- ``mc_ball`` (black-box; Hilprecht et al. 2019): the share of the k generated samples inside an
  ε-ball around the record; ε is a quantile of the reference population's nearest-sample
  distances, so it adapts to the data's scale without seeing members.
- ``domias`` (density ratio; van Breugel et al. 2023): ``log p_G(x) − log p_R(x)``, Gaussian KDEs
  of the generated samples and of the reference population in a PCA space fitted on the
  reference population. Overfitting shows as generated density piling up at members *beyond*
  what the population density explains.
- ``lira`` (shadow calibration; Carlini et al. 2022), online with fixed variances, from shadow
  models that replicate the audited training: :mod:`genlab.privacy_audit.lira`.

Class-conditional models are scored with the records' true labels when the caller gives them
(``labels=``; the audit does) and label-free otherwise (:mod:`genlab.models.scoring`: the marginal
ELBO and the most likely class for the CVAE, the null label for the DDPM, the largest logit over
the classes for the GAN). Distances are Euclidean in data space (records flattened).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.decomposition import PCA

from genlab.models.scoring import (cvae_marginal_neg_elbo, denoising_losses, gan_logit, neg_elbos,
                                   record_labels, secmi_t_errors, timesteps_at)
from genlab.models import is_conditional
from genlab.numerics import flatten, sq_dists

__all__ = ["ATTACKS", "DENOISING_FRACTIONS", "Attacks", "fit_attacks", "available_attacks",
           "nn_distances", "model_loss"]

ATTACKS = ("elbo", "recon", "discriminator", "denoising", "secmi", "distance", "mc_ball", "domias",
           "lira")
_MC_SEED = 7_331  # base seed of the ELBO's z / the denoising loss's ε draws (deterministic scores)
DENOISING_FRACTIONS = (0.05, 0.1, 0.2, 0.3)  # the denoising attack's timesteps, as fractions of T
SECMI_T, SECMI_K = 0.1, 0.01  # SecMI's timestep and interval, as fractions of T


def nn_distances(queries, bank, k: int = 1, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances from each query to its k nearest rows of ``bank`` and their indices.

    Exact (no approximate index): the audit's figures should not depend on an ANN's recall.
    Chunked so that memory stays at ``chunk × len(bank)`` floats."""
    q, b = flatten(queries), flatten(bank)
    if q.shape[1] != b.shape[1]:
        raise ValueError(f"queries and bank must have the same record size, got {q.shape[1]} and {b.shape[1]}")
    if not 1 <= k <= len(b):
        raise ValueError(f"k: expected an integer in [1, {len(b)}] (the bank's size), got {k!r}")
    bn = (b * b).sum(1)
    dists, idx = [], []
    for s in range(0, len(q), chunk):
        qc = q[s:s + chunk]
        d2 = sq_dists(qc, b, bn)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(b) else np.tile(np.arange(len(b)), (len(qc), 1))
        pd = np.take_along_axis(d2, part, 1)
        order = np.lexsort((part, pd), axis=1)  # by distance, ties by index: deterministic
        idx.append(np.take_along_axis(part, order, 1))
        dists.append(np.sqrt(np.take_along_axis(pd, order, 1)))
    return np.concatenate(dists), np.concatenate(idx)


def available_attacks(model) -> list[str]:
    """Attacks this model supports without shadows (white-box ones need the model's internals)."""
    names = []
    if hasattr(model, "neg_elbo"):
        names += ["elbo", "recon"]
    if hasattr(model, "discriminate"):
        names.append("discriminator")
    if hasattr(model, "denoising_loss"):
        names += ["denoising", "secmi"]
    return names + ["distance", "mc_ball", "domias"]


def model_loss(model, x: torch.Tensor, *, mc_samples: int = 8, seed: int = 0, labels=None) -> np.ndarray:
    """The white-box per-record loss LiRA calibrates: negative ELBO (VAE), −logit (GAN), or the
    denoising loss at the attack's timesteps, averaged over them (DDPM: LiRA compares each
    record's loss with the shadows' on the same record and draws, so no standardisation is
    needed). ``labels``: the records' classes (conditional models; label-free without)."""
    y = record_labels(model, labels, len(x))
    if hasattr(model, "neg_elbo"):
        return -_elbo(model, x, mc_samples, seed, y)
    if hasattr(model, "discriminate"):
        return -gan_logit(model, x, y)
    if hasattr(model, "denoising_loss"):
        return _denoising(model, x, mc_samples, seed, y).mean(1)
    raise TypeError(f"model_loss: a VAE (neg_elbo), GAN (discriminate) or DDPM (denoising_loss) is "
                    f"needed, got {type(model).__name__}")


def _elbo(model, x: torch.Tensor, mc_samples: int, seed: int, labels=None) -> np.ndarray:
    if is_conditional(model) and labels is None:
        return -cvae_marginal_neg_elbo(model, x, draws=mc_samples, seed=_MC_SEED + 1000 * int(seed))[0]
    return -neg_elbos(model, x, draws=mc_samples, seed=_MC_SEED + 1000 * int(seed), labels=labels)


def _recon(model, x: torch.Tensor, labels=None) -> np.ndarray:
    if not is_conditional(model):
        r = model.reconstruct(x)
    else:  # unlabelled: the class the model finds most likely (one z draw decides it)
        y = labels if labels is not None else torch.from_numpy(
            cvae_marginal_neg_elbo(model, x, draws=1, seed=_MC_SEED)[1].argmax(1))
        r = model.reconstruct(x, labels=y)
    return -flatten((r - x).pow(2)).sum(1)


def _denoising(model, x, mc_samples: int, seed: int, labels=None) -> np.ndarray:
    """(n, len(DENOISING_FRACTIONS)) raw denoising losses at the attack's timesteps."""
    return denoising_losses(model, x, timesteps_at(model, DENOISING_FRACTIONS), draws=mc_samples,
                            seed=_MC_SEED + 1000 * int(seed), labels=labels)


def _secmi_steps(model) -> tuple[int, int]:
    """SecMI's (t, k) for this model's T, at least one step each."""
    k = max(1, round(SECMI_K * model.timesteps))
    return min(max(round(SECMI_T * model.timesteps), k), model.timesteps - 1), k


@dataclass
class Attacks:
    """Fitted attacks; :meth:`score` applies all of them to any records."""

    model: Any
    generated: np.ndarray  # (k, d) flattened samples
    names: list[str]
    ball_radius: float
    pca: PCA
    kde_gen: Any
    kde_ref: Any
    mc_samples: int
    seed: int
    denoising_ref: tuple[np.ndarray, np.ndarray] | None = None  # per-timestep mean, sd (reference)
    info: dict = field(default_factory=dict)

    def score(self, x, labels=None) -> dict[str, np.ndarray]:
        """{attack name: scores} for records ``x`` (a tensor shaped like the model's data).

        ``labels``: the records' classes, used by a conditional model's white-box attacks
        (ignored by an unconditional model); without them those attacks are label-free."""
        xt = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
        xf = flatten(xt)
        y = record_labels(self.model, labels, len(xt))
        out: dict[str, np.ndarray] = {}
        if "elbo" in self.names:
            out["elbo"] = _elbo(self.model, xt, self.mc_samples, self.seed, y)
        if "recon" in self.names:
            out["recon"] = _recon(self.model, xt, y)
        if "discriminator" in self.names:
            out["discriminator"] = gan_logit(self.model, xt, y)
        if "denoising" in self.names:
            mu, sd = self.denoising_ref
            losses = _denoising(self.model, xt, self.mc_samples, self.seed, y)
            out["denoising"] = -((losses - mu) / sd).mean(1)
        if "secmi" in self.names:
            out["secmi"] = -secmi_t_errors(self.model, xt, *_secmi_steps(self.model), labels=y)
        d, _ = nn_distances(xf, self.generated, k=1)
        out["distance"] = -d[:, 0]
        out["mc_ball"] = (sq_dists(xf, self.generated) <= self.ball_radius ** 2).mean(1)
        z = self.pca.transform(xf).T
        out["domias"] = self.kde_gen.logpdf(z) - self.kde_ref.logpdf(z)
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def fit_attacks(model, generated, reference, *, seed: int = 0, mc_samples: int = 8,
                domias_dims: int = 5, ball_quantile: float = 0.1, reference_labels=None) -> Attacks:
    """Fit every attack the model supports from generated samples and a reference population.

    ``generated``: the model's samples (k records); ``reference``: records from the population
    that are *not* scored (``holdout_b``), with their classes ``reference_labels`` for a
    conditional model (pass labels to :meth:`Attacks.score` alike, or neither). ``ball_quantile``:
    the ε-ball radius is this quantile of the reference records' distances to their nearest
    generated sample — a ball that a typical population record rarely reaches, so counts inside
    it single out records the generator concentrates on."""
    g, ref = flatten(generated), flatten(reference)
    if len(g) < 2 or len(ref) < domias_dims + 2:
        raise ValueError(f"fit_attacks: expected >= 2 generated samples and > domias_dims + 1 = "
                         f"{domias_dims + 1} reference records, got {len(g)} and {len(ref)}")
    if not 0 < ball_quantile < 1:
        raise ValueError(f"ball_quantile: expected a number in (0, 1), got {ball_quantile!r}")
    if not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"mc_samples: expected a positive integer, got {mc_samples!r}")
    ref_d, _ = nn_distances(ref, g, k=1)
    radius = float(np.quantile(ref_d[:, 0], ball_quantile))
    dims = int(min(domias_dims, g.shape[1], len(ref) - 1))
    pca = PCA(n_components=dims, random_state=seed).fit(ref)
    kde_gen = stats.gaussian_kde(pca.transform(g).T)
    kde_ref = stats.gaussian_kde(pca.transform(ref).T)
    names = available_attacks(model)
    info = {"ball_radius": radius, "domias_dims": dims, "n_generated": len(g), "n_reference": len(ref)}
    denoising_ref = None
    if "denoising" in names:
        ref_x = reference if isinstance(reference, torch.Tensor) else torch.as_tensor(
            np.asarray(reference), dtype=torch.float32)
        losses = _denoising(model, ref_x, mc_samples, seed,
                            record_labels(model, reference_labels, len(ref_x)))
        denoising_ref = (losses.mean(0), np.maximum(losses.std(0), 1e-12))
        info["denoising_timesteps"] = timesteps_at(model, DENOISING_FRACTIONS)
        info["secmi_t"], info["secmi_k"] = _secmi_steps(model)
    return Attacks(model=model, generated=g, names=names, ball_radius=radius, pca=pca,
                   kde_gen=kde_gen, kde_ref=kde_ref, mc_samples=mc_samples, seed=seed,
                   denoising_ref=denoising_ref, info=info)
