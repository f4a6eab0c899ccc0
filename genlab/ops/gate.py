"""CI/CD gate: rules over the headline JSON of a run, or of every run of a sweep.

    genlab gate reports/<run> --rule "fd<=2.0" --rule "mia_auc_max<=0.6"
    genlab gate reports/<sweep> -f gate.yaml          # rules: ["fd<=2.0", ...]

Each rule is `<key> <op> <value>` with op one of <= >= < > == !=. A key is a headline key
(`fd`) or, where two notebooks share a key, qualified by the notebook (`02_evaluate.fd`).
A rule naming a missing key, or a key whose value is null, is an error, never a pass: a gate
that silently passes on a report that lost a metric would let exactly the wrong model through.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
       "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*(\w[\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\S.*?)\s*$")
_NOT_HEADLINE = ("timings.json", "summary.json", "sweep.json", "gate.json")


class GateError(ValueError):
    """A rule or a target that cannot be evaluated as written."""


@dataclass(frozen=True)
class Rule:
    key: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> "Rule":
        m = _RULE.match(text)
        if not m:
            raise GateError(f"rule {text!r}: expected '<key> <op> <value>' with op in "
                            f"{list(OPS)}, e.g. 'fd<=2.0'")
        key, op, raw = m.groups()
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if op not in ("==", "!=") and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
            raise GateError(f"rule {text!r}: '{op}' needs a number, got {raw!r}")
        return cls(key, op, value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def load_rules(rules: list[str], files: list[str]) -> list[Rule]:
    texts = list(rules)
    for path in files:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise GateError(f"-f {path}: cannot read rules ({exc})") from None
        items = doc.get("rules") if isinstance(doc, dict) else doc
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise GateError(f"-f {path}: expected a list of rule strings (or 'rules: [...]')")
        texts += items
    if not texts:
        raise GateError("no rules: give --rule '<key><op><value>' or -f rules.yaml")
    return [Rule.parse(t) for t in texts]


def headline_of(run_dir: Path) -> dict[str, Any]:
    """All headline numbers of one run: plain keys, plus `<notebook>.<key>` for every key."""
    flat: dict[str, Any] = {}
    plain: dict[str, list[Any]] = {}
    for path in sorted(run_dir.glob("*.json")):
        if path.name in _NOT_HEADLINE or path.name.endswith(".tables.json"):
            continue
        doc = json.loads(path.read_text())
        for key, value in doc.items():
            if key in ("parameters", "provenance"):
                continue
            flat[f"{path.stem}.{key}"] = value
            plain.setdefault(key, []).append(value)
    for key, values in plain.items():
        if len(values) == 1 or all(v == values[0] for v in values):
            flat[key] = values[0]
    return flat


def find_runs(target: Path) -> list[Path]:
    """The run itself, or every run folder of a sweep (folders holding a headline JSON)."""
    if not target.is_dir():
        raise GateError(f"{target}: not a run or sweep folder")
    if any(p.name[:2].isdigit() for p in target.glob("*.json")):
        return [target]
    runs = sorted(p for p in target.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and any(q.name[:2].isdigit() for q in p.glob("*.json")))
    if not runs:
        raise GateError(f"{target}: no headline JSON here or in its sub-folders")
    return runs


def evaluate(target: Path, rules: list[Rule]) -> list[dict[str, Any]]:
    """One row per (run, rule): status pass / FAIL / ERROR with the value seen."""
    rows = []
    for run in find_runs(Path(target)):
        numbers = headline_of(run)
        for rule in rules:
            row = {"run": run.name, "rule": str(rule), "value": None}
            if rule.key not in numbers:
                ambiguous = [k for k in numbers if k.endswith(f".{rule.key}")]
                row["status"] = "ERROR"
                row["why"] = (f"'{rule.key}' differs between notebooks: use one of {ambiguous}"
                              if ambiguous else f"no headline key '{rule.key}'")
            elif numbers[rule.key] is None:
                reason = numbers.get(f"{rule.key}_na_reason", "no reason given")
                row.update(status="ERROR", why=f"'{rule.key}' is null: {reason}")
            else:
                value = numbers[rule.key]
                row["value"] = value
                try:
                    ok = OPS[rule.op](value, rule.value)
                except TypeError:
                    row.update(status="ERROR", why=f"cannot compare {value!r} {rule.op} "
                                                   f"{rule.value!r}")
                    rows.append(row)
                    continue
                row.update(status="pass" if ok else "FAIL", why="")
            rows.append(row)
    return rows
