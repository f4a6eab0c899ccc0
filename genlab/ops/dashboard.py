"""The run's front page (`index.html`) and its full key list (`keys.html`).

The front page is what a team reads in half a minute: verdict badges (privacy, drift, gate,
served variant), a thumbnail of the sample grid, and per notebook the few numbers that matter
with their 95% CI beside their reference (real-vs-real floor, noise baseline, target or chance).
Every other headline key is one click away on `keys.html`. Both pages are built from the run
folder's files only (headline JSON, `gate.json`, the executed training notebook's sample-grid
PNG), with no clock, so the same run gives the same bytes.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

# Per notebook: the keys that matter, in order. A key may name alternatives ("a|b": the first
# that is not null); keys missing from a run are left out. Notebooks not listed here show the
# keys that carry a CI (up to KEYS_WITHOUT_LIST) and their verdict strings.
KEY_NUMBERS: dict[str, tuple[str, ...]] = {
    "01_train": ("final_val_loss", "n_members", "dp_epsilon"),
    "02_evaluate": ("fd", "precision", "recall", "coverage", "c2st_auc",
                    "conditional_accuracy|tstr_accuracy|tstr_pseudo_label_accuracy"),
    "03_privacy_audit": ("mia_auc_max", "tpr_at_1pct_fpr_max", "epsilon_lower_bound"),
    "04_drift_study": ("arl0_measured", "mean_detection_delay", "false_alarm_rate_max",
                       "fd_after_retrain"),
    "06_operations": ("detection_delay_requests", "monitor_arl0_measured",
                      "fd_production_candidate", "canary_decision",
                      "broken_requests_before_rollback", "failed_requests_total"),
}
KEYS_WITHOUT_LIST = 6
# references that are not a `<key>_real_vs_real` / `<key>_baseline` row
OTHER_REFERENCE: dict[str, tuple[str, str | float]] = {
    "arl0_measured": ("target", "arl0_target"),
    "monitor_arl0_measured": ("target", "monitor_arl0_target"),
    "fd_production_candidate": ("champion", "fd_production_champion"),
    "mia_auc_max": ("chance", 0.5),
    "false_alarm_rate_max": ("level α", "alpha"),
    "fd_after_retrain": ("before", "fd_before_retrain"),
    "dp_epsilon": ("audit lower bound", "epsilon_lower_bound"),
}
_GOOD, _WARN, _BAD, _NONE = "#1a7f37", "#9a6700", "#cf222e", "#57606a"
VERDICT_COLOURS = {"low": _GOOD, "elevated": _WARN, "high": _BAD}


def headline_docs(run_dir: Path, notebooks: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {stem: json.loads((run_dir / f"{stem}.json").read_text()) for stem in notebooks
            if (run_dir / f"{stem}.json").exists()}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _pick(doc: Mapping[str, Any], spec: str) -> str | None:
    names = [n for n in spec.split("|") if n in doc]
    return next((n for n in names if doc[n] is not None), names[0] if names else None)


def key_rows(stem: str, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The key numbers of one notebook: metric, value, CI, reference text, n/a reason."""
    listed = KEY_NUMBERS.get(stem)
    if listed is None:
        keys = [k for k in doc if f"{k}_ci_low" in doc][:KEYS_WITHOUT_LIST]
    else:
        keys = [k for k in (_pick(doc, spec) for spec in listed) if k is not None]
    rows = []
    for key in keys:
        value = doc[key]
        ci = (doc.get(f"{key}_ci_low"), doc.get(f"{key}_ci_high"))
        refs = []
        if doc.get(f"{key}_real_vs_real") is not None:
            refs.append(f"floor {_fmt(doc[f'{key}_real_vs_real'])}")
        if doc.get(f"{key}_baseline") is not None:
            refs.append(f"noise {_fmt(doc[f'{key}_baseline'])}")
        if key in OTHER_REFERENCE:
            label, ref = OTHER_REFERENCE[key]
            ref_value = ref if not isinstance(ref, str) else doc.get(
                ref, doc.get("parameters", {}).get(ref))
            if ref_value is not None:
                refs.append(f"{label} {_fmt(ref_value)}")
        rows.append({"metric": key, "value": value,
                     "ci": None if None in ci else ci, "reference": " · ".join(refs),
                     "na_reason": doc.get(f"{key}_na_reason") if value is None else None})
    return rows


def verdicts(docs: Mapping[str, Mapping[str, Any]], gate: Mapping[str, Any] | None
             ) -> list[tuple[str, str, str, str]]:
    """(label, text, colour, explanation) badges from the headline JSON and `gate.json`."""
    out = []
    privacy = docs.get("03_privacy_audit", {})
    if privacy.get("privacy_verdict"):
        v = privacy["privacy_verdict"]
        out.append(("privacy", v, VERDICT_COLOURS.get(v, _NONE),
                    privacy.get("privacy_verdict_reason", "")))
    drift = docs.get("04_drift_study", {})
    monitored = next((d for d in docs.values() if d.get("drift_alarm") is not None), {})
    if monitored:
        alarm = monitored["drift_alarm"]
        out.append(("drift (monitor)", "alarm" if alarm else "no alarm",
                    _BAD if alarm else _GOOD, monitored.get("drift_alarm_reason", "")))
    elif "production_drift" in drift:
        v = drift["production_drift"]
        text = "not checked" if v is None else ("alarm" if v else "no alarm")
        out.append(("drift (production)", text, _NONE if v is None else (_BAD if v else _GOOD),
                    drift.get("production_drift_na_reason") or ""))
    if gate is not None:
        n_fail = sum(r["status"] != "pass" for r in gate.get("results", []))
        promoted = gate.get("promoted")
        text = "passed" if gate.get("passed") else f"failed ({n_fail} of {len(gate['results'])})"
        if promoted:
            text += f" → {promoted['name']} v{promoted['version']} @{promoted['alias']}"
        out.append(("gate", text, _GOOD if gate.get("passed") else _BAD,
                    "; ".join(gate.get("rules", []))))
    served = next((d for d in docs.values() if d.get("served_variant")), None)
    if served is not None:
        out.append(("served", served["served_variant"], _NONE, ""))
    return out


def sample_thumbnail(run_dir: Path) -> str | None:
    """The first PNG the training notebook's sample cell (`report.samples()`) displayed, as
    base64, or None (no training notebook, or no image)."""
    path = run_dir / "01_train.ipynb"
    if not path.exists():
        return None
    nb = json.loads(path.read_text())
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") != "code" or "report.samples()" not in source:
            continue
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                return "".join(png).replace("\n", "")
    return None


_STYLE = ("body{font-family:sans-serif;max-width:64em;margin:2em auto;color:#1f2328}"
          "td,th{padding:3px 10px;text-align:left;vertical-align:top}"
          "tr:nth-child(even){background:#f4f4f4}th{border-bottom:1px solid #ccc}"
          ".badge{display:inline-block;margin:0 .6em .4em 0;padding:.25em .7em;border-radius:1em;"
          "color:#fff;font-size:.95em}.badge b{font-weight:600}.why{color:#57606a;font-size:.85em}"
          ".top{display:flex;gap:2em;align-items:flex-start}.num{font-variant-numeric:tabular-nums}"
          "section{margin-top:1.5em}h2{margin-bottom:.3em;font-size:1.2em}")


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + body + "</body></html>\n")


def _key_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p class='why'>(no key numbers)</p>"
    body = []
    for r in rows:
        ci = (f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]" if r["ci"] else "")
        value = html.escape(_fmt(r["value"]))
        if r["na_reason"]:
            value += f" <span class='why'>({html.escape(r['na_reason'])})</span>"
        body.append(f"<tr><td>{html.escape(r['metric'])}</td><td class='num'>{value}</td>"
                    f"<td class='num'>{html.escape(ci)}</td>"
                    f"<td class='num'>{html.escape(r['reference'])}</td></tr>")
    return ("<table><thead><tr><th>metric</th><th>value</th><th>95% CI</th>"
            "<th>reference</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def front_page(run_dir: Path, notebooks: Sequence[str], name: str) -> str:
    docs = headline_docs(run_dir, notebooks)
    gate_path = run_dir / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
    badges = "".join(
        f"<span class='badge' style='background:{colour}' title='{html.escape(why, quote=True)}'>"
        f"{html.escape(label)}: <b>{html.escape(text)}</b></span>"
        for label, text, colour, why in verdicts(docs, gate))
    thumb = sample_thumbnail(run_dir)
    img = (f"<a href='01_train.html'><img alt='generated samples' width='260' "
           f"src='data:image/png;base64,{thumb}'></a>" if thumb else "")
    first = docs.get("01_train", {})
    facts = [f"model: {first.get('parameters', {}).get('model', '?')}"
             + (" (conditional)" if first.get("parameters", {}).get("conditional") else ""),
             f"data: {first.get('dataset', '?')}",
             f"fingerprint: {str(first.get('data_fingerprint', '?'))[:12]}"] if first else []
    links = ["<a href='keys.html'>all headline keys</a>"]
    if (run_dir / "model_card.html").exists():
        links.insert(0, "<a href='model_card.html'>model card</a>")
    sections = []
    for stem in notebooks:
        if not (run_dir / f"{stem}.html").exists():
            continue
        table = _key_table(key_rows(stem, docs[stem])) if stem in docs else \
            "<p class='why'>(no headline numbers)</p>"
        sections.append(f"<section><h2><a href='{stem}.html'>{html.escape(stem)}</a></h2>"
                        f"{table}</section>")
    body = (f"<h1>genlab run: {html.escape(name)}</h1>"
            f"<div class='top'><div>{badges or '<span class=why>(no verdicts yet)</span>'}"
            f"<p>{html.escape(' · '.join(facts))}</p><p>{' · '.join(links)}</p></div>{img}</div>"
            + "".join(sections))
    return _page(f"genlab run {name}", body)


def keys_page(run_dir: Path, notebooks: Sequence[str], name: str) -> str:
    """Every headline key of every notebook: the long list, one table per notebook."""
    from genlab.ops.reports import Table

    sections = []
    for stem, doc in headline_docs(run_dir, notebooks).items():
        rows = [{"metric": k, "value": v} for k, v in doc.items()
                if k not in ("parameters", "provenance")]
        sections.append(f"<h2 id='{stem}'><a href='{stem}.html'>{html.escape(stem)}</a></h2>"
                        + Table(rows)._repr_html_())
    body = (f"<h1>All headline keys: {html.escape(name)}</h1>"
            "<p><a href='index.html'>back to the front page</a></p>" + "".join(sections))
    return _page(f"genlab run {name}: all keys", body)
