"""Online LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles") with
shadow models that *replicate* the audited training.

Why replicas. LiRA asks, per record x: is the audited model's loss on x more like that of models
trained *with* x or *without* x? The answer is only about membership when the shadows differ
from the audited model in nothing but their training sets. Shadows trained on fewer records,
for fewer optimiser steps or without the audited run's DP noise have a different loss level on
every record, and μ_out(x) then carries a record-level term unrelated to membership: in a
simulation such shadows gave an overfit target an AUC of 0.59 ± 0.09 over 15 seeds (min 0.38)
against 0.61 ± 0.02 with matched ones. So each shadow here is built from the audited
checkpoint's own hyper-parameters and trained by :func:`train_shadows` with the run's own
recipe (:class:`ShadowRecipe`, read from ``01_train.json`` and ``artifacts/dp.json``): as many
records as the audited model saw, the same batch size and number of epochs (hence optimiser
steps), and DP-SGD with the same ε, δ, clipping norm and noise calibration when the run used it.

Population and IN/OUT design (:func:`shadow_population`, :func:`inclusion_matrix`). The shadows
train on subsets of a population of 2N records (N = the audited training set's size): the whole
audited training set (members plus included canaries), the scored non-members, the canaries left
out, and filler from the pools never trained on (rest of ``holdout_a``, ``holdout_b``, ``val``,
``excluded``). Each shadow takes exactly N records, chosen so that every record is IN for
⌊K/2⌋ or ⌈K/2⌉ of the K shadows (K even: exactly half) — Carlini et al.'s balanced design —
so every scored record, member or not, has its own IN and OUT losses. Only when the data has
fewer than 2N records is the IN share above ½.

Score (:func:`lira_online`): per record, Gaussians N(μ_in(x), σ_in²) and N(μ_out(x), σ_out²) of
the shadows' losses with the record IN and OUT; the variances are pooled over the population
(the paper's fixed-variance variant for few shadows: with two losses per record a per-record
variance is noise). Score = log N(loss(x); μ_in, σ_in) − log N(loss(x); μ_out, σ_out).

Cost and the default K = 4 (``lira_shadows``): K trainings of the audited model, by far the
audit's largest cost. Four is the fewest shadows for which every record has two IN and two OUT
losses, so that both pooled variances have degrees of freedom, and what fits the audit's
2-minute budget for the default VAE on 2 cores (the shadows 4 × ~12 s idle; the whole audit
measured 113 s with them and 11 s without on a machine loaded 6-8). More shadows sharpen the
per-record means (Carlini et al. use 64-256); ``lira_shadows=0`` skips LiRA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.datamodule import EpochSeededSampler
from genlab.models import is_conditional

__all__ = ["ShadowRecipe", "recipe_from_run", "Population", "shadow_population",
           "inclusion_matrix", "train_shadows", "lira_online", "MIN_SHADOWS"]

MIN_SHADOWS = 4  # >= 2 IN and 2 OUT models per record: the pooled variances need them


@dataclass(frozen=True)
class ShadowRecipe:
    """How the audited model was trained, for its replicas: ``epochs`` of the published
    checkpoint (the best epoch's with early stopping), ``batch_size``, and the DP-SGD settings
    (``target_epsilon``, ``target_delta``, ``max_grad_norm``, ``noise_epochs``: the epochs the
    noise was calibrated for) or None without DP."""

    epochs: int
    batch_size: int
    dp: dict | None = None


def recipe_from_run(run_path: Path) -> ShadowRecipe | str:
    """The audited run's recipe from its ``01_train.json``, or the reason why shadows cannot
    replicate it (a string)."""
    js = Path(run_path) / "01_train.json"
    if not js.exists():
        return "no 01_train.json in the run: the training recipe the shadows replicate is unknown"
    head = json.loads(js.read_text())
    p = head["parameters"]
    if p.get("init_from"):
        return (f"the audited model was fine-tuned from init_from={p['init_from']!r}: shadows "
                f"trained from scratch would not replicate it")
    epochs = int(head["best_epoch"]) + 1 if p.get("early_stopping_patience") else int(head["epochs_run"])
    dp = None
    if p.get("dp"):
        dp = {"target_epsilon": float(p["target_epsilon"]), "target_delta": float(p["target_delta"]),
              "max_grad_norm": float(p["max_grad_norm"]), "noise_epochs": int(p["max_epochs"])}
    return ShadowRecipe(epochs=epochs, batch_size=int(p["batch_size"]), dp=dp)


@dataclass
class Population:
    """The shadows' population: records ``x`` with labels ``y`` (-1: unlabelled), of which the
    first ``n_train`` are the audited training set; ``scored`` maps "mem" / "non" / "can" to the
    positions of the audit's scored records in ``x`` (in the audit's order)."""

    x: torch.Tensor
    y: torch.Tensor
    n_train: int
    scored: dict[str, np.ndarray]


def shadow_population(ds, spec, mem_idx: np.ndarray, non_idx: np.ndarray, canaries=None, *,
                      seed: int, labelled: bool) -> Population:
    """Members (all of them), the included canaries, the scored non-members ``non_idx``, the
    left-out canaries, then seeded filler from the never-trained-on pools up to 2N records."""
    members = spec.pool("members")
    x_all = torch.from_numpy(ds.x)
    y_all = (torch.from_numpy(ds.y).long() if labelled else torch.full((len(ds.x),), -1))
    inc = canaries.included_mask() if canaries is not None else np.zeros(0, bool)
    n_train = len(members) + int(inc.sum())
    taken = set(members.tolist()) | set(non_idx.tolist())
    rest = np.array(sorted(i for name in ("holdout_a", "holdout_b", "val", "excluded")
                           for i in spec.pools.get(name, []) if int(i) not in taken), dtype=np.int64)
    n_fill = max(0, min(len(rest), n_train - len(non_idx) - int((~inc).sum())))  # up to 2N
    fill = np.sort(np.random.default_rng([int(seed), 0x11FA]).choice(rest, n_fill, replace=False))
    parts_x = [x_all[torch.from_numpy(members)]]
    parts_y = [y_all[torch.from_numpy(members)]]
    can_pos = np.zeros(len(inc), np.int64)
    if canaries is not None:
        cx = canaries.x()
        parts_x.append(cx[torch.from_numpy(inc)])
        parts_y.append(torch.full((int(inc.sum()),), -1))
        can_pos[inc] = len(members) + np.arange(int(inc.sum()))
    start_non = n_train
    parts_x.append(x_all[torch.from_numpy(non_idx)])
    parts_y.append(y_all[torch.from_numpy(non_idx)])
    if canaries is not None:
        out = ~inc
        parts_x.append(cx[torch.from_numpy(out)])
        parts_y.append(torch.full((int(out.sum()),), -1))
        can_pos[out] = start_non + len(non_idx) + np.arange(int(out.sum()))
    parts_x.append(x_all[torch.from_numpy(fill)])
    parts_y.append(y_all[torch.from_numpy(fill)])
    pos_in_members = {int(j): k for k, j in enumerate(members)}
    scored = {"mem": np.array([pos_in_members[int(i)] for i in mem_idx], np.int64),
              "non": start_non + np.arange(len(non_idx)), "can": can_pos}
    return Population(torch.cat(parts_x), torch.cat(parts_y), n_train, scored)


def inclusion_matrix(n_pop: int, n_train: int, k: int, seed: int) -> np.ndarray:
    """(k, n_pop) IN bits: each row holds exactly ``n_train`` records, and each record is IN for
    as many shadows as any other give or take one (greedy: each shadow takes the records IN the
    fewest shadows so far, ties broken by a seeded random key)."""
    if not 0 < n_train < n_pop:
        raise ValueError(f"inclusion_matrix: expected 0 < n_train < n_pop, got {n_train}, {n_pop}")
    rng = np.random.default_rng([int(seed), 0x1B5])
    counts = np.zeros(n_pop, np.int64)
    rows = np.zeros((k, n_pop), bool)
    for i in range(k):
        order = np.lexsort((rng.random(n_pop), counts))
        rows[i, order[:n_train]] = True
        counts += rows[i]
    return rows


def train_shadows(model, pop: Population, inclusion: np.ndarray, recipe: ShadowRecipe,
                  out_dir: Path, *, seed: int) -> list:
    """One replica of the audited model per row of ``inclusion``: its class and hyper-parameters
    (from the checkpoint), trained on its IN records by ``recipe`` into ``out_dir/<i>/``.
    A conditional shadow's class prior is its training set's label shares (uniform under DP), as
    01_train sets the audited model's."""
    from genlab.models import build_model
    from genlab.train import dp as dp_mod
    from genlab.train.training import TrainConfig, fit, seed_everything

    hp = dict(model.hparams)
    kind = hp.pop("model_kind")
    shape = list(hp.pop("data_shape"))
    shadows = []
    for i, row in enumerate(np.asarray(inclusion, bool)):
        s = int(seed) * 1000 + 17 + i
        sel = torch.from_numpy(np.flatnonzero(row))
        xs, ys = pop.x[sel], pop.y[sel]
        loader: Any = DataLoader(TensorDataset(xs, ys), batch_size=recipe.batch_size,
                                 sampler=EpochSeededSampler(len(xs), s))
        seed_everything(s)
        shadow = build_model(kind, shape, **hp)
        if is_conditional(shadow) and recipe.dp is None:
            shadow.set_class_prior(torch.bincount(ys, minlength=shadow.n_classes))
        if recipe.dp is not None:
            d = recipe.dp
            loader = dp_mod.make_private(shadow, loader, target_epsilon=d["target_epsilon"],
                                         target_delta=d["target_delta"],
                                         max_grad_norm=d["max_grad_norm"],
                                         epochs=d["noise_epochs"]).train_loader
        fit(shadow, ckpt_dir=Path(out_dir) / str(i),
            cfg=TrainConfig(max_epochs=recipe.epochs, batch_size=recipe.batch_size, seed=s),
            train_dataloaders=loader)
        shadows.append(shadow.eval())
    return shadows


def _pooled_sd(losses: np.ndarray, mask: np.ndarray, mu: np.ndarray, side: str) -> float:
    cnt = mask.sum(0)
    dof = int((cnt[cnt > 0] - 1).sum())
    if dof < 1:
        raise ValueError(f"lira_shadows: the {side} losses give no degrees of freedom for a "
                         f"variance; expected at least {MIN_SHADOWS} shadows")
    return float(np.sqrt((((losses - mu) ** 2) * mask).sum() / dof))


def lira_online(target_loss, shadow_losses, inclusion) -> np.ndarray:
    """Online LiRA, fixed (pooled) variances: log N(t; μ_in, σ_in) − log N(t; μ_out, σ_out).

    ``target_loss``: (n,) the audited model's loss per record; ``shadow_losses``: (K, n) the
    shadows' losses on the same records; ``inclusion``: (K, n) whether each shadow trained on
    each record. Every record needs at least one IN and one OUT shadow."""
    t = np.asarray(target_loss, np.float64)
    s = np.asarray(shadow_losses, np.float64)
    inc = np.asarray(inclusion, bool)
    if s.ndim != 2 or s.shape[1] != len(t) or inc.shape != s.shape:
        raise ValueError(f"shadow_losses and inclusion: expected shape (K, {len(t)}), got "
                         f"{s.shape} and {inc.shape}")
    n_in, n_out = inc.sum(0), (~inc).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError(f"inclusion: every record needs an IN and an OUT shadow; "
                         f"{int((n_in == 0).sum())} have no IN, {int((n_out == 0).sum())} no OUT")
    mu_in = (s * inc).sum(0) / n_in
    mu_out = (s * ~inc).sum(0) / n_out
    sd_in = max(_pooled_sd(s, inc, mu_in, "IN"), 1e-12)
    sd_out = max(_pooled_sd(s, ~inc, mu_out, "OUT"), 1e-12)
    log_in = -0.5 * ((t - mu_in) / sd_in) ** 2 - np.log(sd_in)
    log_out = -0.5 * ((t - mu_out) / sd_out) ** 2 - np.log(sd_out)
    return log_in - log_out
