"""Gated promotion: `genlab gate <run> --rule ... --promote NAME`.

The gate's rules run over the run's headline JSON; only when every rule passes is the run
registered as a new version of model NAME and alias `champion` moved to it. A failing gate (or a
rule that cannot be evaluated) registers nothing and leaves the alias where it was. Either way
the result is recorded in the run folder as `gate.json` (rules, per-rule status and value, what
was registered), and the model card and front page are rewritten to show it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from genlab.ops.gate import Rule, evaluate, find_runs, GateError
from genlab.ops.runs import atomic_write_text

GATE_FILE = "gate.json"


def _write_gate(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(run_dir / GATE_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _refresh_pages(run_dir: Path) -> None:
    from genlab.operations.card import write_model_card
    from genlab.ops.pipeline import NOTEBOOKS
    from genlab.ops.reports import write_index

    if (run_dir / "01_train.json").exists():
        write_model_card(run_dir)
    write_index(run_dir, list(NOTEBOOKS.values()))


def gate_and_promote(target: Path, rules: Sequence[Rule], model_name: str | None, *,
                     alias: str = "champion", mc=None) -> tuple[list[dict[str, Any]], dict | None]:
    """Evaluate `rules` on one run; when `model_name` is given and every rule passes, register
    the run and point `alias` at the new version. Returns the gate rows and what was registered
    (None when nothing was)."""
    target = Path(target)
    if model_name is not None:
        runs = find_runs(target)
        if runs != [target]:
            raise GateError(f"--promote: expected one run folder, got {target} with "
                            f"{len(runs)} runs (gate a sweep without --promote)")
        if not (target / "artifacts" / "model.ckpt").is_file():
            raise GateError(f"--promote: {target} holds no artifacts/model.ckpt to register")
        from genlab.operations.tracking import client

        mc = mc or client()  # fails here, before the gate, when the extra is missing
    rows = evaluate(target, list(rules))
    passed = all(r["status"] == "pass" for r in rows)
    if model_name is None:
        return rows, None
    record = {"rules": [str(r) for r in rules], "passed": passed, "results": rows,
              "promoted": None, "model": model_name, "alias": alias}
    _write_gate(target, record)
    _refresh_pages(target)  # the card that gets registered shows the gate's result
    if not passed:
        return rows, None
    from genlab.operations.card import card_markdown
    from genlab.operations.tracking import register

    card = card_markdown(target) if (target / "01_train.json").exists() else ""
    promoted = register(target, model_name, alias=alias, mc=mc, description=card)
    record["promoted"] = promoted
    _write_gate(target, record)
    _refresh_pages(target)
    return rows, promoted
