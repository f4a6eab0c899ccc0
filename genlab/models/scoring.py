"""Per-record scores read off a generative model's internals, shared by the evaluation's
likelihood bounds (:func:`vae_bounds`: negative ELBO and the importance-weighted bound of Burda
et al. 2016), the privacy audit's white-box attacks (:mod:`genlab.privacy_audit.attacks`) and the drift study's
"score" representation (:mod:`genlab.drift_study.study`, :mod:`genlab.drift_study.retrain`).

- DDPM: the denoising loss ``||ε̂(x_t, t) − ε||²`` of the EMA denoiser (the one that samples) at
  chosen timesteps, averaged over seeded noise draws (:func:`denoising_losses`). Training lowers
  it on the training records, most visibly at small-to-mid t (Matsumoto et al. 2023); at t = T/2
  it measures how well the model explains a record at a coarse scale, a drift sensor.
- DDPM, SecMI (Duan et al. 2023): the t-error of a deterministic round trip. The record is
  carried to step t − k by DDIM inversion (deterministic, in steps of k), one DDIM step on to t
  and one back; a denoiser that has fitted the record returns close to where it started
  (:func:`secmi_t_errors`). No noise is drawn.
- Class-conditional models (``n_classes > 0``) score a record with its label when it is given
  (the audit knows the labels of the records it scores) and *label-free* otherwise (production
  records in the drift study come without labels):

  * DDPM: the null label, i.e. the unconditional denoiser classifier-free guidance trains
    alongside (the model's default for ``labels=None``);
  * CVAE: the marginal ``−log Σ_y π_y exp(−negELBO(x, y))`` with the class prior π, a bound on
    ``−log p(x)`` like the unconditional negative ELBO (:func:`cvae_neg_elbos` gives the
    per-class terms); its latent code is the posterior-weighted mean of ``μ(x, y)``;
  * GAN (projection discriminator): the largest logit over the classes, "real for some class".
    Not a prior-weighted mixture: a projection logit is a log density *ratio*, not a likelihood,
    so there is nothing to marginalise; the maximum asks the question the unconditional logit
    asks, "does this look like a real record", with the class left open.

Every score is deterministic: noise comes from private generators seeded per (seed, timestep,
draw), never from the global RNG, and the model is scored in eval mode without gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import math

import numpy as np
import torch

from genlab.models._common import eval_no_grad, is_conditional
from genlab.models.diffusion import ddim_step
from genlab.numerics import MetricInputError

__all__ = ["record_labels", "timesteps_at", "denoising_losses", "secmi_t_errors",
           "neg_elbos", "cvae_neg_elbos", "cvae_marginal_neg_elbo", "gan_logit", "model_representations",
           "DRIFT_T_FRACTION", "vae_bounds"]

DRIFT_T_FRACTION = 0.5  # the drift study's DDPM score: the denoising loss at t = T/2
DRIFT_DRAWS = 4  # noise / z draws averaged per record by the drift study's score
_SCORE_SEED = 12_345


def record_labels(model, labels, n: int) -> torch.Tensor | None:
    """``labels`` as the model's own check gives them (an ``(n,)`` int64 tensor) for a conditional
    model; None for an unconditional one (it has no use for them) or when none are given."""
    if labels is None or not is_conditional(model):
        return None
    return model.check_labels(labels, n)


def _records(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _generator(*key: int) -> torch.Generator:
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def timesteps_at(model, fractions: Sequence[float]) -> list[int]:
    """Timesteps ``round(f · T)`` (clipped to ``[0, T)``) for fractions ``f`` of the DDPM's T."""
    T = model.timesteps
    return [min(T - 1, max(0, int(round(f * T)))) for f in fractions]


def denoising_losses(model, x, timesteps: Sequence[int], *, draws: int, seed: int,
                     labels=None) -> np.ndarray:
    """``(n, len(timesteps))`` float64: each record's EMA denoising loss at each timestep, the mean
    over ``draws`` noise draws; draw j at timestep t uses a generator seeded with (seed, t, j).

    ``labels``: the records' classes for a conditional DDPM; None scores with the null label."""
    xt = _records(x)
    y = record_labels(model, labels, len(xt))
    kw = {} if y is None else {"labels": y}
    out = np.zeros((len(xt), len(timesteps)))
    with eval_no_grad(model):
        for k, t in enumerate(timesteps):
            for j in range(int(draws)):
                out[:, k] += model.denoising_loss(xt, int(t), _generator(seed, t, j), **kw).double().numpy()
    return out / int(draws)


def secmi_t_errors(model, x, t: int, k: int, labels=None) -> np.ndarray:
    """SecMI's t-error per record (float64): ``||x̃ − x_{t−k}||²`` (mean over dimensions), where
    ``x_{t−k}`` is the record carried by deterministic DDIM inversion from level 0 to timestep
    ``t − k`` in steps of ``k`` and ``x̃`` its image after one DDIM step up to ``t`` and one back
    (SecMI's ``t_sec = t``, interval ``k``); all with the EMA denoiser (``labels``: the records'
    classes; None: the null label). A constant ε̂ would make the round trip exact."""
    if not 1 <= k <= t < model.timesteps:
        raise ValueError(f"secmi: expected 1 <= k <= t < T={model.timesteps}, got t={t}, k={k}")
    xt = _records(x)
    y = record_labels(model, labels, len(xt))
    if y is None and is_conditional(model):
        y = torch.full((len(xt),), model.n_classes, dtype=torch.long)  # the null label
    ab = model.alphas_cumprod.double()

    def step(z, a, b):  # deterministic DDIM (η = 0) from timestep a to b
        eps = model.guided_eps(z.float(), torch.full((len(z),), a, dtype=torch.long), y, 1.0).double()
        return ddim_step(z, eps, ab[a], ab[b])[0]

    with eval_no_grad(model):
        z = model.to_model_space(xt).double()  # a clean record, taken as level 0 (ab_0 ≈ 1)
        for a in range(0, t - k, k):
            z = step(z, a, min(a + k, t - k))
        back = step(step(z, t - k, t), t, t - k)
    return (back - z).pow(2).flatten(1).mean(1).numpy()


def neg_elbos(model, x, *, draws: int, seed: int, labels=None) -> np.ndarray:
    """Each record's negative ELBO (float64), the mean over ``draws`` draws of z (summed in
    float64, in order), in eval mode without gradients; ``labels``: a CVAE's classes.

    The one seeding rule of every negative-ELBO score (audit, drift score, retraining check):
    draw ``j`` comes from the private generator of ``(seed, j)``, so a record's score depends on
    ``seed`` and ``draws`` only, never on the global RNG or on which other records are scored."""
    xt = _records(x)
    kw = {} if labels is None else {"labels": labels}
    total = np.zeros(len(xt))
    with eval_no_grad(model):
        for j in range(int(draws)):
            total += model.neg_elbo(xt, _generator(seed, j), **kw).double().numpy()
    return total / int(draws)


def cvae_neg_elbos(model, x, *, draws: int, seed: int) -> np.ndarray:
    """``(n, n_classes)``: the conditional VAE's negative ELBO of every record under every class,
    each the mean of ``draws`` seeded draws of z (the same draws for every class)."""
    xt = _records(x)
    return np.stack([neg_elbos(model, xt, draws=draws, seed=seed,
                               labels=torch.full((len(xt),), c, dtype=torch.long))
                     for c in range(model.n_classes)], 1)


def _log_prior(model) -> np.ndarray:
    return np.log(model.class_prior.detach().double().numpy().clip(min=1e-300))


def cvae_marginal_neg_elbo(model, x, *, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label-free ``−log Σ_y π_y exp(−negELBO(x, y))`` per record, and the class posterior
    ``p(y | x) ∝ π_y exp(−negELBO(x, y))`` ``(n, n_classes)`` it implies."""
    from scipy.special import logsumexp, softmax

    joint = _log_prior(model)[None, :] - cvae_neg_elbos(model, x, draws=draws, seed=seed)
    return -logsumexp(joint, axis=1), softmax(joint, axis=1)


def gan_logit(model, x, labels=None) -> np.ndarray:
    """The discriminator's logit per record (float64): with the given labels on a conditional
    GAN, else label-free (the largest logit over the classes, see the module docstring)."""
    xt = _records(x)
    y = record_labels(model, labels, len(xt))
    with eval_no_grad(model):
        if not is_conditional(model):
            return model.discriminate(xt).double().numpy()
        if y is not None:
            return model.discriminate(xt, labels=y).double().numpy()
        per_class = [model.discriminate(xt, labels=torch.full((len(xt),), c, dtype=torch.long))
                     for c in range(model.n_classes)]
        return torch.stack(per_class, 1).amax(1).double().numpy()


def model_representations(model) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The generative model as a drift sensor, every one label-free (production records come
    without labels), ``x -> (n, d)`` float64:

    - VAE: ``latent``, the posterior mean, and ``score``, the negative ELBO (mean of 4 seeded
      draws); a CVAE's latent is ``Σ_y p(y|x) μ(x, y)`` and its score the marginal over classes;
    - GAN: ``score``, the negated discriminator logit (label-free for a conditional one);
    - DDPM: ``score``, the denoising loss at t = T/2 (mean of 4 seeded draws; the null label for
      a conditional one) — high at mid t when the record is unlike what the model denoises well.

    Higher score = less like the training data, for every model."""
    kind = getattr(model, "model_kind", None)
    cond = is_conditional(model)
    reps: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if kind == "vae" and not cond:
        def latent(x):
            with torch.no_grad():
                return model.encode(_records(x))[0].double().numpy()

        def score(x):
            return neg_elbos(model, x, draws=DRIFT_DRAWS, seed=_SCORE_SEED)[:, None]
        reps.update(latent=latent, score=score)
    elif kind == "vae":
        def latent(x):
            xt = _records(x)
            post = torch.from_numpy(cvae_marginal_neg_elbo(model, xt, draws=DRIFT_DRAWS, seed=_SCORE_SEED)[1])
            with eval_no_grad(model):
                mus = torch.stack([model.encode(xt, labels=torch.full((len(xt),), c, dtype=torch.long))[0]
                                   for c in range(model.n_classes)], 1)
            return (post[:, :, None] * mus.double()).sum(1).numpy()

        def score(x):
            return cvae_marginal_neg_elbo(model, x, draws=DRIFT_DRAWS, seed=_SCORE_SEED)[0][:, None]
        reps.update(latent=latent, score=score)
    elif kind == "gan":
        reps["score"] = lambda x: -gan_logit(model, x)[:, None]
    elif kind == "ddpm":
        t = timesteps_at(model, [DRIFT_T_FRACTION])
        reps["score"] = lambda x: denoising_losses(model, x, t, draws=DRIFT_DRAWS, seed=_SCORE_SEED)
    return reps


def vae_bounds(model, x, *, labels=None, k: int = 64, seed: int = 0, batch: int = 256
               ) -> dict[str, np.ndarray]:
    """Per-record negative ELBO (mean over k posterior draws) and IW-NLL bound (k draws), nats.

    log wᵢ = log p(x|zᵢ) + log p(zᵢ) − log q(zᵢ|x); −ELBO ≈ −mean log wᵢ and
    NLL ≤ −log mean exp(log wᵢ). A conditional VAE (CVAE) needs the records' ``labels`` and
    bounds −log p(x|y) (encoder and decoder given y). Draws from a private generator: same seed,
    same numbers."""
    if getattr(model, "model_kind", None) != "vae":
        raise MetricInputError("likelihood bounds need a VAE checkpoint, got model kind "
                               f"{getattr(model, 'model_kind', type(model).__name__)!r}")
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
    y = None if labels is None else torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    log2pi = math.log(2 * math.pi)
    elbo, iw = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(t), batch):
            xb = t[i:i + batch]
            yb = None if y is None else y[i:i + batch]
            mu, logvar = model.encode(xb, labels=yb)
            std = torch.exp(0.5 * logvar)
            eps = torch.randn((k, *mu.shape), generator=gen).to(mu.dtype)
            z = mu + std * eps  # k×B×L
            flat = z.reshape(-1, z.shape[-1])
            out = model._decode_raw(flat, labels=None if yb is None else yb.repeat(k))
            rep = xb.unsqueeze(0).expand(k, *xb.shape).reshape(-1, *xb.shape[1:])
            log_px = -model._nll(out, rep).reshape(k, -1)
            log_pz = -0.5 * (z.pow(2) + log2pi).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + log2pi + logvar.unsqueeze(0)).sum(-1)
            logw = (log_px + log_pz - log_qz).double()
            elbo.append(-logw.mean(0))
            iw.append(-(torch.logsumexp(logw, 0) - math.log(k)))
    return {"neg_elbo": torch.cat(elbo).numpy(), "iw_nll": torch.cat(iw).numpy()}
