"""Self-consuming training loops: generation k+1 learns from what generation k generated.

Three ways data flow back (Shumailov et al. 2024, Nature; Alemohammad et al. 2023, "Self-
consuming generative models go MAD"; Gerstgrasser et al. 2024, "Is model collapse
inevitable?"):

- ``replace``: generation k+1 trains only on n samples of generation k (the fully synthetic
  loop: quality and diversity are expected to decay generation after generation);
- ``mix``: on n/2 fresh real members (a new random half each generation) and n/2 samples of
  generation k (Alemohammad's "fresh data" loop: decay is expected to be held back);
- ``accumulate``: on all real members plus the samples of every earlier generation (the data
  grow; Gerstgrasser et al. find the error stays bounded: no collapse).

Generation 0 is a model trained on the real members. Every generation is trained like the run
(:func:`genlab.security.models.train_like_run`) for the same number of epochs over its own pool
(as Gerstgrasser et al. do: an accumulating generation k sees (k+1)·n records per epoch, so it
also makes k+1 times the updates); a conditional
model's samples carry their requested classes, which become the next generation's labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from genlab.security.models import RunSettings, draw, train_like_run

LOOP_MODES = ("replace", "mix", "accumulate")


def next_pool(mode: str, members_x: np.ndarray, members_y: np.ndarray | None,
              history: list[tuple[np.ndarray, np.ndarray | None]], rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """The training pool of the next generation from the real members and the samples of the
    generations so far (`history`, oldest first; the last is the newest generation's)."""
    sx, sy = history[-1]
    n = len(members_x)
    if mode == "replace":
        return sx[:n], None if sy is None else sy[:n]
    if mode == "mix":
        half = n // 2
        real = np.sort(rng.choice(n, n - half, replace=False))
        x = np.concatenate([members_x[real], sx[:half]])
        y = None if members_y is None or sy is None else np.concatenate([members_y[real], sy[:half]])
        return x, y
    if mode == "accumulate":
        x = np.concatenate([members_x, *[h[0] for h in history]])
        y = (None if members_y is None or any(h[1] is None for h in history)
             else np.concatenate([members_y, *[h[1] for h in history]]))
        return x, y
    raise ValueError(f"loop mode: expected one of {list(LOOP_MODES)}, got {mode!r}")


def run_loops(settings: RunSettings, members_x: np.ndarray, members_y: np.ndarray | None,
              gen0, *, generations: int, epochs: int, seed: int, out_dir: Path,
              score: Callable[[np.ndarray], dict[str, Any]]) -> list[dict]:
    """For each mode, generations 1..`generations` trained in turn from `gen0` (trained on the
    members); one row per (mode, generation) with `score(samples)`, generation 0 scored once
    and repeated in each mode's rows."""
    if generations < 1:
        raise ValueError(f"generations: expected an int >= 1, got {generations!r}")
    n = len(members_x)
    cond = settings.conditional
    first = draw(gen0, n, seed)
    base = {"generation": 0, "n_train": n, **score(first[0])}
    rows = []
    for mi, mode in enumerate(LOOP_MODES):
        rng = np.random.default_rng([seed, mi, 0xFEED])
        history = [first]
        rows.append({"mode": mode, **base})
        for g in range(1, generations + 1):
            x, y = next_pool(mode, members_x, members_y if cond else None, history, rng)
            model = train_like_run(settings, x, y if cond else None, epochs=epochs,
                                   seed=seed + 1000 * g + mi, out_dir=Path(out_dir) / f"{mode}-gen{g}")
            history.append(draw(model, n, seed + g))
            rows.append({"mode": mode, "generation": g, "n_train": len(x), **score(history[-1][0])})
    return rows


def class_spread(pred: np.ndarray, n_classes: int, *, seed: int, n_boot: int = 1000) -> dict:
    """Class shares of predicted labels, and their spread (largest − smallest share) with a
    bootstrap 95% interval over the samples: an imbalance that grows over generations shows as
    a growing spread."""
    pred = np.asarray(pred)
    shares = np.bincount(pred, minlength=n_classes) / len(pred)
    rng = np.random.default_rng([seed, 0xC1A55])
    counts = rng.multinomial(len(pred), shares, size=n_boot) / len(pred)
    boots = counts.max(1) - counts.min(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"class_shares": shares.tolist(), "class_spread": float(shares.max() - shares.min()),
            "class_spread_ci_low": float(lo), "class_spread_ci_high": float(hi)}
