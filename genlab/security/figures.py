"""The security report's figures (each returns its matplotlib Figure)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt


def _band(ax, xs, rows, key, label, **kw):
    ys = [r[key] for r in rows]
    ax.plot(xs, ys, marker="o", label=label, **kw)
    if all(r.get(f"{key}_ci_low") is not None for r in rows):
        ax.fill_between(xs, [r[f"{key}_ci_low"] for r in rows], [r[f"{key}_ci_high"] for r in rows],
                        alpha=0.15, color=ax.lines[-1].get_color())


def poisoning_curves(rows: Sequence[dict], kinds: Sequence[str]):
    """Trigger rate (backdoor) and FD (every kind) against the poison rate; rate 0 = clean."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    clean = next(r for r in rows if r["kind"] == "clean")
    for kind in kinds:
        rs = [clean] + [r for r in rows if r["kind"] == kind]
        xs = [r["rate"] for r in rs]
        if kind == "backdoor":
            _band(a, xs, rs, "trigger_rate", "all samples")
            if "trigger_rate_target" in clean:
                _band(a, xs, rs, "trigger_rate_target", "target class")
        _band(b, xs, rs, "fd", kind)
    a.set(xlabel="poison rate", ylabel="share of samples with the trigger", title="Backdoor",
          ylim=(0, 1))
    b.set(xlabel="poison rate", ylabel="FD vs holdout_b", title="Fidelity")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def attack_curves(panels: Sequence[tuple[str, Sequence[dict], Sequence[tuple[str, str]]]]):
    """One panel per attack: value against ε, each (key, label) with its interval."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, rows, keys) in zip(axes[0], panels):
        xs = [r["eps"] for r in rows]
        for key, label in keys:
            _band(ax, xs, rows, key, label)
        ax.set(xlabel="ε (L∞, data range [0, 1])", title=title, ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loop_curves(rows: Sequence[dict], modes: Sequence[str]):
    """FD and recall per generation, one line per loop mode."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for mode in modes:
        rs = [r for r in rows if r["mode"] == mode]
        xs = [r["generation"] for r in rs]
        _band(a, xs, rs, "fd", mode)
        _band(b, xs, rs, "recall", mode)
    a.set(xlabel="generation", ylabel="FD vs holdout_b", title="Fidelity over generations")
    b.set(xlabel="generation", ylabel="recall", title="Diversity over generations", ylim=(0, 1))
    a.legend(fontsize=8)
    fig.tight_layout()
    return fig
