"""The operations scenario's timeline: the production monitor's statistic per request with its
threshold, the shift and the alarm; then each canary round's requests by arm, with the moment
the decision was applied."""

from __future__ import annotations

from typing import Any

import numpy as np


def timeline_figure(stream, round_a: dict[str, Any] | None, round_b: dict[str, Any] | None):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8.0, 7.0))
    ax = axes[0]
    steps = np.arange(1, len(stream.statistic) + 1)
    ax.plot(steps, stream.statistic, lw=1, label="windowed MMD (production records)")
    ax.axhline(stream.threshold, color="k", ls="--", lw=1, label="threshold (ARL₀ calibrated)")
    ax.axvline(stream.shift_at + 1, color="tab:orange", lw=1.5, label="shift begins")
    if stream.alarm_at is not None:
        ax.axvline(stream.alarm_at + 1, color="tab:red", lw=1.5, label="alarm")
    ax.set(xlabel="production request", ylabel="MMD²", title="Production drift monitor")
    ax.legend(fontsize=7, loc="upper left")
    for ax, r, title in ((axes[1], round_a, "Canary of the fine-tuned candidate"),
                         (axes[2], round_b, "Canary of the broken candidate")):
        if r is None:
            ax.set_axis_off()
            ax.set_title(f"{title}: not run")
            continue
        # requests before the decision (deterministic: one client, seeded ids); the switch
        # traffic's arms depend on when the swap lands, so it is summarised, not plotted
        rows = [x for x in r["rows"] if not x["request_id"].startswith("switch")]
        arm = np.array([1 if x.get("version") == "candidate" else 0 for x in rows])
        ok = np.array([x.get("status") == 200 for x in rows])
        idx = np.arange(1, len(rows) + 1)
        ax.scatter(idx[ok], arm[ok], s=6, c=np.where(arm[ok] == 1, "tab:purple", "tab:blue"))
        if (~ok).any():
            ax.scatter(idx[~ok], arm[~ok], s=30, marker="x", c="tab:red", label="failed")
        ax.axvline(len(rows) + 0.5, color="tab:green", lw=1.5,
                   label=f"{r['decision']['action']} applied under traffic")
        ax.set(yticks=[0, 1], yticklabels=["champion", "candidate"], xlabel="request",
               title=f"{title}: {r['decision']['action']} ({r['requests_during_switch']} "
                     f"requests during the switch, {r['failed_requests_during_switch']} failed)",
               ylim=(-0.5, 1.5), xlim=(0, len(rows) + 10))
        ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
