"""The sweep comparison page: `reports/<sweep>/index.html`, `summary.csv`, `summary.json`.

One row per run (its varying parameters and headline numbers, links to its reports), and per
group of runs that differ only in `seed`: mean ± 95% t-interval of every numeric headline key,
clipped to the metric's valid range (`metric_range`). A group of fewer than
`MIN_SEEDS_FOR_INTERVAL` seeds shows its range (min, max) instead: a t-interval from 2 values
(t = 12.7) says nothing. Figures show the metrics a researcher compares first, per group.
Nothing here reads a clock: the same runs give the same bytes (run times go to timings.json).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from genlab.ops.gate import headline_of
from genlab.ops.runs import atomic_write_text

# What a reader compares first, when present; the page shows at most these many panels.
KEY_METRICS = ("final_val_loss", "fd", "tstr_accuracy", "conditional_accuracy", "kid",
               "precision", "recall", "c2st_auc", "mia_auc_max", "epsilon_lower_bound", "dp_epsilon",
               "false_alarm_rate_max", "best_detection_rate_at_n100")
MAX_PANELS = 6


MIN_SEEDS_FOR_INTERVAL = 3

# Valid ranges by name token (a key is split at "_"): probabilities and shares lie in [0, 1];
# distances, divergences, counts, privacy budgets and delays are >= 0. Losses, likelihoods,
# gaps and z-scores can take any sign and are not clipped.
_UNIT_TOKENS = {"accuracy", "auc", "precision", "recall", "coverage", "authenticity", "share",
                "rate", "frac", "tpr", "fpr", "pvalue", "ece", "tv", "nndr"}
_NONNEG_TOKENS = {"fd", "kid", "dcr", "density", "distance", "epsilon", "arl0", "delay",
                  "inception", "epochs", "epoch", "trials", "m"}


def metric_range(key: str) -> tuple[float, float]:
    """The values ``key`` can take: (0, 1), (0, inf) or (-inf, inf) when unknown."""
    tokens = key.lower().split("_")
    if _UNIT_TOKENS.intersection(tokens):
        return 0.0, 1.0
    if tokens[0] == "n" or _NONNEG_TOKENS.intersection(tokens):
        return 0.0, math.inf
    return -math.inf, math.inf


def clip_interval(key: str, mean: float, lo: float, hi: float) -> tuple[float, float]:
    """The interval clipped to ``metric_range(key)``; it always keeps the mean (an unbiased
    estimate such as KID can fall below 0 although the quantity cannot)."""
    low, high = metric_range(key)
    return max(lo, min(low, mean)), min(hi, max(high, mean))


def group_cell(key: str, values: Sequence[float]) -> dict[str, Any]:
    """One metric of one group: mean, n, min, max, and the clipped 95% t-interval when
    n >= MIN_SEEDS_FOR_INTERVAL (else ``ci_low``/``ci_high`` are None)."""
    m, lo, hi = mean_ci(values)
    cell = {"mean": m, "n": len(values), "min": float(min(values)), "max": float(max(values)),
            "ci_low": None, "ci_high": None}
    if len(values) >= MIN_SEEDS_FOR_INTERVAL and not (math.isnan(lo) or math.isnan(hi)):
        cell["ci_low"], cell["ci_high"] = clip_interval(key, m, lo, hi)
    return cell


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval; a single value has no interval (NaN bounds)."""
    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summarize(sweep_dir: Path, runs: Sequence[tuple[str, dict]], statuses: Sequence[dict]
              ) -> dict[str, Any]:
    varying = [k for k in dict.fromkeys(k for _, v in runs for k in v)
               if len({json.dumps(v.get(k), sort_keys=True) for _, v in runs}) > 1]
    rows = []
    for (name, values), status in zip(runs, statuses):
        folder = sweep_dir / name
        numbers = headline_of(folder) if status["status"] != "failed" else {}
        plain = {k: v for k, v in numbers.items() if "." not in k}
        # a run skipped because it had finished is as good as one just run: same page bytes
        state = "ok" if status["status"].startswith("skipped") else status["status"]
        rows.append({"run": name, "status": state,
                     "error": status.get("error", ""),
                     **{f"param.{k}": values.get(k) for k in varying}, **plain})
    group_keys = [k for k in varying if k != "seed"]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        label = ", ".join(f"{k}={row[f'param.{k}']}" for k in group_keys) or "all runs"
        groups.setdefault(label, []).append(row)
    metrics = [k for k in dict.fromkeys(k for r in rows for k in r)
               if not k.startswith("param.") and k not in ("run", "status", "error")
               and any(_numeric(r.get(k)) for r in rows)]
    summary_groups = []
    for label, members in groups.items():
        entry = {"group": label, "n_runs": len(members)}
        for key in metrics:
            vals = [r[key] for r in members if _numeric(r.get(key))]
            if vals:
                entry[key] = group_cell(key, vals)
        summary_groups.append(entry)
    return {"varying": varying, "metrics": metrics, "runs": rows, "groups": summary_groups}


def _figure(summary: dict[str, Any]) -> str | None:
    """Per-group mean ± CI of the key metrics, as an embedded PNG (None when nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = [k for k in KEY_METRICS if k in summary["metrics"]][:MAX_PANELS]
    if not keys:
        return None
    groups = summary["groups"]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(5.0, 3.2 * len(keys)), 3.4),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, g in enumerate(groups):
            cell = g.get(key)
            if not cell:
                continue
            interval = cell["ci_low"] is not None
            lo, hi = (cell["ci_low"], cell["ci_high"]) if interval else (cell["min"], cell["max"])
            err = [[cell["mean"] - lo], [hi - cell["mean"]]]
            ax.errorbar([i], [cell["mean"]], yerr=err, fmt="o" if interval else "s",
                        mfc=None if interval else "none", capsize=4)
        ax.set_xticks(range(len(groups)), [g["group"] for g in groups], rotation=30,
                      ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
    fig.suptitle(f"mean and 95% CI across seeds, per group (hollow squares: min-max of fewer "
                 f"than {MIN_SEEDS_FOR_INTERVAL} seeds)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def few_seeds_note(summary: dict[str, Any]) -> str:
    """The page's sentence on groups too small for an interval ('' when there are none)."""
    seeds = {g["group"]: max((c["n"] for c in g.values() if isinstance(c, dict)), default=0)
             for g in summary["groups"]}
    few = {label: n for label, n in seeds.items() if 0 < n < MIN_SEEDS_FOR_INTERVAL}
    if not few:
        return ""
    names = "; ".join(f"{label} ({n} seed{'s' * (n > 1)})" for label, n in few.items())
    return html.escape(
        f"Fewer than {MIN_SEEDS_FOR_INTERVAL} seeds with results in {len(few)} of {len(seeds)} "
        f"group(s): {names}. With so few seeds a t-interval means nothing (from 2 values it is "
        "the mean ± 12.7 standard errors); those groups show the range of their values instead. "
        "Add seeds for intervals.")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _links(sweep_dir: Path, row: dict) -> str:
    folder = sweep_dir / row["run"]
    if row["status"] == "failed":
        failed = sorted((sweep_dir / f"{row['run']}.failed").glob("*.failed.ipynb"))
        return " ".join(f'<a href="{html.escape(p.relative_to(sweep_dir).as_posix())}">'
                        f"{html.escape(p.name)}</a>" for p in failed)
    reports = sorted(folder.glob("[0-9][0-9]_*.html"))
    return " ".join([f'<a href="{row["run"]}/index.html">index</a>'] + [
        f'<a href="{row["run"]}/{p.name}">{p.stem.split("_", 1)[1]}</a>' for p in reports])


def write_sweep_report(sweep_dir: Path, runs: Sequence[tuple[str, dict]],
                     statuses: Sequence[dict]) -> dict[str, Any]:
    summary = summarize(sweep_dir, runs, statuses)
    atomic_write_text(sweep_dir / "summary.json",
                      json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    columns = list(dict.fromkeys(k for r in summary["runs"] for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["runs"])
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())

    shown = [k for k in KEY_METRICS if k in summary["metrics"]] or summary["metrics"][:8]
    params = [f"param.{k}" for k in summary["varying"]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", "status", *params, *shown,
                                                          "reports"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>"
                         for c in ["run", "status", *params, *shown])
        + f"<td>{_links(sweep_dir, r)}</td></tr>" for r in summary["runs"])
    ghead = "".join(f"<th>{html.escape(c)}</th>" for c in ["group", "runs", *shown])

    def cell(g: dict, key: str) -> str:
        c = g.get(key)
        if not c:
            return ""
        if c["ci_low"] is not None:
            return f"{c['mean']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}]"
        if c["n"] == 1:
            return f"{_fmt(c['mean'])} (1 seed)"
        return f"{c['mean']:.4g} (range {c['min']:.4g} to {c['max']:.4g}, {c['n']} seeds)"

    gbody = "".join("<tr>" + f"<td>{html.escape(g['group'])}</td><td>{g['n_runs']}</td>"
                    + "".join(f"<td>{html.escape(cell(g, k))}</td>" for k in shown) + "</tr>"
                    for g in summary["groups"])
    png = _figure(summary)
    figure = f'<img alt="metrics per group" src="data:image/png;base64,{png}">' if png else ""
    failed = sum(r["status"] == "failed" for r in summary["runs"])
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>genlab sweep {html.escape(sweep_dir.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}img{max-width:100%}</style></head><body>"
        f"<h1>genlab sweep: {html.escape(sweep_dir.name)}</h1>"
        f"<p>{len(summary['runs'])} runs, {failed} failed. Varying: "
        f"{html.escape(', '.join(summary['varying']) or 'nothing')}. "
        '<a href="summary.csv">summary.csv</a> <a href="summary.json">summary.json</a></p>'
        "<h2>Groups (runs differing only in seed)</h2>"
        f"<p id='intervals'>mean [95% Student-t interval across seeds], clipped to the metric's "
        "valid range ([0, 1] for accuracies, AUCs, shares, precision, recall, coverage; &ge; 0 "
        "for distances, FD, KID, counts). "
        f"{few_seeds_note(summary)}</p>"
        f"<table id='groups'><thead><tr>{ghead}"
        f"</tr></thead><tbody>{gbody}</tbody></table>{figure}"
        f"<h2>Runs</h2><table id='runs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
        "</table></body></html>\n")
    atomic_write_text(sweep_dir / "index.html", page)
    return summary
