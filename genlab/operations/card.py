"""The model card of a run: `model_card.md` and `model_card.html` in the run folder.

Written from the run's headline JSON (and `gate.json` when a gate ran) only, so the card says
exactly what the reports measured, and changes when they do. Sections: intended use and limits,
data provenance, key metrics with CI and reference, privacy, drift monitoring, gate and registry,
serving, provenance. A registered model version carries the card (it is part of the `run/`
artifact, and its text is the version's description).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from genlab.ops.dashboard import _fmt, key_rows
from genlab.ops.runs import atomic_write_text

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"


def _docs(run_dir: Path) -> dict[str, dict[str, Any]]:
    from genlab.operations.tracking import headline_docs

    return headline_docs(run_dir)


def _v(doc: Mapping[str, Any], key: str) -> str:
    """A value for prose: the number, or `n/a (reason)`."""
    if key not in doc:
        return "not measured"
    if doc[key] is None:
        return f"n/a ({doc.get(f'{key}_na_reason', 'no reason given')})"
    return _fmt(doc[key])


def _metrics_table(stem: str, doc: Mapping[str, Any]) -> list[str]:
    rows = key_rows(stem, doc)
    if not rows:
        return []
    lines = ["| metric | value | 95% CI | reference |", "|---|---|---|---|"]
    for r in rows:
        ci = f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]" if r["ci"] else ""
        value = _fmt(r["value"]) + (f" ({r['na_reason']})" if r["na_reason"] else "")
        lines.append(f"| {r['metric']} | {value} | {ci} | {r['reference']} |")
    return lines


def card_markdown(run_dir: Path, name: str | None = None) -> str:
    """The card's text from the run folder's headline JSON (see module doc); `name` is the run's
    name (default: the folder's, which differs while the pipeline works in a staging folder)."""
    run_dir = Path(run_dir)
    name = name or run_dir.name
    docs = _docs(run_dir)
    if "01_train" not in docs:
        raise FileNotFoundError(f"{run_dir}: no 01_train.json; a model card needs the training "
                                "report (run 'train' first)")
    train = docs["01_train"]
    p = train.get("parameters", {})
    prov = train.get("provenance", {})
    kind = p.get("model", "?") + (" (class-conditional)" if p.get("conditional") else "")
    out = [f"# Model card: {name}", "",
           f"A {kind} generative model trained by genlab on `{train.get('dataset', '?')}` "
           f"with seed {p.get('seed')}, {train.get('epochs_run', '?')} epochs.", "",
           "## Intended use and limits", "",
           f"- Intended: synthetic records that resemble `{train.get('dataset', '?')}` for "
           "research, testing pipelines and augmenting data, at the quality measured below.",
           "- Not intended: decisions about people, or release of samples as anonymised data "
           "beyond what the privacy section supports.",
           "- Its numbers hold for the data it was evaluated on; new data (another source, a "
           "drift) needs a new evaluation. Sample quality is measured against held-out real "
           "records beside a real-vs-real floor and a noise baseline: read a value against them.",
           ""]
    dp = train.get("dp_epsilon")
    privacy = docs.get("03_privacy_audit", {})
    if privacy.get("privacy_verdict") in ("elevated", "high") and dp is None:
        out.append(f"- Privacy risk is {privacy['privacy_verdict']} and the model was trained "
                   "without DP: do not share its samples outside the data's own access rules.")
        out.append("")
    out += ["## Data provenance", "",
            f"- source: `{train.get('dataset', '?')}`; fingerprint "
            f"`{train.get('data_fingerprint', prov.get('data_fingerprint', '?'))}`",
            f"- pools (disjoint, fixed by seed {p.get('seed')}): members {_v(train, 'n_members')}, "
            f"val {_v(train, 'n_val')}, holdout_a {_v(train, 'n_holdout_a')}, holdout_b "
            f"{_v(train, 'n_holdout_b')}; left out by the n_train cap: {_v(train, 'n_excluded')}",
            "- quality checks (shape, finite values, value range, duplicates, constant features, "
            "class balance, sample size): passed — a check in error stops training, so a card "
            "exists only for data that passed; warnings are listed in `01_train.html`",
            f"- canaries inserted: {_v(train, 'n_canaries_included')}", ""]
    out += ["## Key metrics", "", "Values with their 95% CI; the reference is the real-vs-real "
            "floor (best reachable), the noise baseline (worst), a target or chance.", ""]
    for stem, doc in docs.items():
        table = _metrics_table(stem, doc)
        if table:
            out += [f"### {stem}", "", *table, ""]
    out += ["## Privacy", ""]
    if privacy:
        out += [f"- verdict: **{privacy.get('privacy_verdict')}** — "
                f"{privacy.get('privacy_verdict_reason', '')}",
                f"- best membership-inference AUC {_v(privacy, 'mia_auc_max')} "
                f"({privacy.get('mia_best_attack', '?')}); TPR at 1% FPR "
                f"{_v(privacy, 'tpr_at_1pct_fpr_max')}",
                f"- audited ε lower bound: {_v(privacy, 'epsilon_lower_bound')}"]
    else:
        out.append("- not audited (no 03_privacy_audit report)")
    out += [f"- DP-SGD ε (accountant): {_v(train, 'dp_epsilon')}"
            + (f" at δ = {p.get('target_delta')}" if dp is not None else ""), ""]
    drift = docs.get("04_drift_study", {})
    out += ["## Drift monitoring", ""]
    if drift:
        dpar = drift.get("parameters", {})
        out += [f"- stream monitor: windowed MMD on `{dpar.get('monitor_representation')}`, window "
                f"{dpar.get('monitor_window')} records, threshold calibrated to ARL₀ = "
                f"{_v(drift, 'arl0_target')} requests; measured ARL₀ {_v(drift, 'arl0_measured')} "
                f"[{_v(drift, 'arl0_measured_ci_low')}, {_v(drift, 'arl0_measured_ci_high')}]",
                f"- mean detection delay over the study's shifts: "
                f"{_v(drift, 'mean_detection_delay')} records",
                f"- batch tests at α = {_v(drift, 'alpha')}: worst false-alarm rate "
                f"{_v(drift, 'false_alarm_rate_max')} ({drift.get('false_alarm_rate_max_method', '')})",
                f"- retraining rule: {drift.get('retrain_rule', 'n/a')}; production data: "
                f"{_v(drift, 'production_drift')}"]
    else:
        out.append("- no drift study for this run (04_drift_study)")
    monitored = next((d for d in docs.values() if "drift_alarm" in d), None)
    if monitored is not None:
        out.append(f"- production monitor: drift alarm {_v(monitored, 'drift_alarm')} "
                   f"({monitored.get('drift_alarm_reason', '')}); detection delay "
                   f"{_v(monitored, 'detection_delay_requests')} requests")
    out.append("")
    gate_path = run_dir / "gate.json"
    out += ["## Gate and registry", ""]
    if gate_path.exists():
        gate = json.loads(gate_path.read_text())
        out.append(f"- gate {'passed' if gate.get('passed') else 'FAILED'}: "
                   + "; ".join(f"`{r['rule']}` {r['status']}" for r in gate.get("results", [])))
        promoted = gate.get("promoted")
        if promoted:
            out.append(f"- registered as {promoted['name']} version {promoted['version']}, "
                       f"alias `{promoted['alias']}`")
        elif gate.get("passed") and gate.get("model"):
            out.append(f"- registered as model {gate['model']} with alias `{gate['alias']}` "
                       "(this card travels with that version; its number is the registry's)")
        else:
            out.append("- not registered" + (f": alias `{gate['alias']}` of {gate['model']} left "
                                             "where it was" if gate.get("model") else ""))
    else:
        out.append("- no gate has run on this run")
    served = next((d for d in docs.values() if d.get("served_variant")), None)
    out += ["", "## Serving", "",
            f"- served variant: {served['served_variant']}" if served else
            "- not served by a recorded scenario yet", "",
            "## Provenance", "",
            f"- genlab {prov.get('genlab')}, commit `{prov.get('git_commit')}`"
            + (" (uncommitted changes)" if prov.get("git_dirty") else ""),
            f"- python {prov.get('python')}, torch {prov.get('torch')}, lightning "
            f"{prov.get('lightning')}", ""]
    return "\n".join(out)


def card_html(markdown_text: str, title: str) -> str:
    import html

    import mistune  # nbconvert's Markdown renderer, already a dependency

    body = mistune.create_markdown(plugins=["table"])(markdown_text)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;"
            "max-width:56em;margin:2em auto;color:#1f2328}td,th{padding:2px 10px;text-align:left}"
            "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}</style>"
            "</head><body><p><a href='index.html'>front page</a></p>" + body
            + "</body></html>\n")


def write_model_card(run_dir: Path, name: str | None = None) -> Path:
    """Write `model_card.md` and `model_card.html` into the run folder; return the .md path."""
    run_dir = Path(run_dir)
    name = name or run_dir.name
    text = card_markdown(run_dir, name)
    atomic_write_text(run_dir / CARD_MD, text)
    atomic_write_text(run_dir / CARD_HTML, card_html(text, f"Model card: {name}"))
    return run_dir / CARD_MD
