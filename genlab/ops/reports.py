"""What every report shares: provenance, the headline JSON, tables, figure style, HTML export.

Reproducibility rule: same code, parameters and machine give byte-identical
`.html`, `.json` and `.tables.json`. So nothing here reads a clock; `normalize_notebook` strips
what papermill and nbclient add that changes from run to run (timestamps, durations, paths, the
random id of the injected-parameters cell) before a notebook is saved or exported.
"""

from __future__ import annotations

import html
import json
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from genlab import __version__
from genlab.ops.runs import RunFolder, atomic_write_text, project_root
from genlab.reproducibility import numeric_environment

MAX_TEXT = 200  # headline strings are labels, not payloads


# --------------------------------------------------------------------------- provenance
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance(parameters: Mapping[str, Any], *, dataset: str | None = None,
               data_fingerprint: str | None = None) -> dict[str, Any]:
    """Who made this number: code version, library versions, parameters, seed and data."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit else None
    return {
        "genlab": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "lightning": _version("lightning"),
        "torchmetrics": _version("torchmetrics"),
        "numpy": _version("numpy"),
        "seed": parameters.get("seed"),
        "dataset": dataset,
        "data_fingerprint": data_fingerprint,
        "numeric": numeric_environment(),
        "parameters": dict(parameters),
    }


# --------------------------------------------------------------------------- headline JSON
def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d torch tensor
        return value.item()
    return value


def headline(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """Check and clean the flat headline object (named numbers; see the README's "run folder").

    A number that is NaN/inf becomes null with a `<name>_na_reason`; a null must come with a
    reason; values must be numbers, bools, short strings or null."""
    out: dict[str, Any] = {}
    for key, raw in numbers.items():
        value = _plain(raw)
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            out.setdefault(f"{key}_na_reason", f"not finite ({value})")
            continue
        if value is None:
            if f"{key}_na_reason" not in numbers:
                raise ValueError(f"headline '{key}' is null: give '{key}_na_reason' beside it")
        elif isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise ValueError(f"headline '{key}' is a {len(value)}-character string; "
                                 f"at most {MAX_TEXT} (put larger things in tables)")
        elif not isinstance(value, (bool, int, float)):
            raise ValueError(f"headline '{key}' must be a number, bool, short string or null; "
                             f"got {type(value).__name__}")
        out[key] = value
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False, default=_plain) + "\n"


def write_headline(run: RunFolder, notebook: str, numbers: Mapping[str, Any], *,
                   provenance: Mapping[str, Any], tables: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Write `<notebook>.json` (and `<notebook>.tables.json`) into the run folder."""
    doc = headline(numbers)
    for reserved in ("parameters", "provenance"):
        if reserved in doc:
            raise ValueError(f"headline key '{reserved}' is reserved")
    doc["parameters"] = dict(provenance["parameters"])
    doc["provenance"] = {k: v for k, v in provenance.items() if k != "parameters"}
    atomic_write_text(run.path / f"{notebook}.json", _dumps(doc))
    if tables is not None:
        atomic_write_text(run.path / f"{notebook}.tables.json", _dumps(tables))
    return doc


# --------------------------------------------------------------------------- display
class Table:
    """A table that renders as HTML in reports and as aligned text for nbval and terminals."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], title: str = "", digits: int = 4):
        self.rows = [dict(r) for r in rows]
        self.title = title
        self.digits = digits
        self.columns = list(dict.fromkeys(k for r in self.rows for k in r))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], title: str = "", digits: int = 4) -> "Table":
        """A two-column (name, value) table: readable for long flat records."""
        return cls([{"name": k, "value": v} for k, v in values.items()], title, digits)

    def _cell(self, value: Any) -> str:
        value = _plain(value)
        if isinstance(value, float):
            return f"{value:.{self.digits}g}"
        return "" if value is None else str(value)

    def __repr__(self) -> str:
        body = [[self._cell(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths)))
        lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
        return "\n".join(line.rstrip() for line in lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(self._cell(r.get(c)))}</td>"
                             for c in self.columns) + "</tr>"
            for r in self.rows)
        cap = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance_table(prov: Mapping[str, Any]) -> Table:
    flat = {k: v for k, v in prov.items() if k not in ("parameters", "numeric")}
    numeric = dict(prov.get("numeric", {}))
    switches = numeric.pop("switches", {})
    flat.update({f"numeric.{k}": v for k, v in numeric.items()})
    flat.update({f"numeric.{k}": v for k, v in switches.items() if v is not None})
    flat.update({f"param.{k}": v for k, v in prov["parameters"].items()})
    return Table.from_mapping(flat, title="Provenance")


def use_report_style() -> None:
    """Matplotlib settings that give the same bytes every run (PNG inline; SVG salted)."""
    import matplotlib

    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (6.0, 4.0),
        "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "genlab",
        "font.size": 10,
    })


# --------------------------------------------------------------------------- notebooks → HTML
_VOLATILE_NB_KEYS = ("start_time", "end_time", "duration", "input_path", "output_path",
                     "environment_variables", "exception")


WALL_CLOCK_TAG = "wall-clock"


def normalize_notebook(nb) -> dict[str, Any]:
    """Strip run-to-run noise from an executed notebook in place; return per-cell timings.

    Cells tagged ``wall-clock`` show measured times while a notebook runs interactively; their
    outputs are replaced here by one line saying where the report wrote those measurements
    (outside the reproducible files), so the stored notebook and its HTML stay byte-identical."""
    pm = nb.metadata.get("papermill", {})
    timings = {"cells": [c.metadata.get("papermill", {}).get("duration") for c in nb.cells]}
    for key in _VOLATILE_NB_KEYS:
        pm.pop(key, None)
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if WALL_CLOCK_TAG in cell.metadata.get("tags", []) and cell.get("outputs"):
            cell.outputs = [_wall_clock_note(cell.outputs)]
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
        elif not cell.get("id"):
            cell.id = f"cell-{i}"
    return timings


def _wall_clock_note(outputs) -> dict[str, Any]:
    """The one output a ``wall-clock`` cell keeps: the text line of its own that names the
    files holding the measurements (first line of a stream starting "wall-clock"), or a default."""
    import nbformat

    text = "wall-clock measurements removed from the reproducible report"
    for out in outputs:
        lines = "".join(out.get("text", "")).splitlines() if out.get("output_type") == "stream" else []
        found = [line for line in lines if line.startswith("wall-clock")]
        if found:
            text = found[0]
            break
    return nbformat.v4.new_output("stream", name="stdout", text=text + "\n")


def export_html(nb, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


# --------------------------------------------------------------------------- run front page
def write_index(run_dir: Path, notebooks: Sequence[str], name: str | None = None) -> Path:
    """`index.html` (verdicts, sample thumbnail, key numbers with CI and reference per report)
    and `keys.html` (every headline key), see `genlab.ops.dashboard`.

    `name` is the run's name (the folder may still be a staging folder with another name)."""
    from genlab.ops.dashboard import front_page, keys_page

    name = name or run_dir.name
    atomic_write_text(run_dir / "keys.html", keys_page(run_dir, notebooks, name))
    out = run_dir / "index.html"
    atomic_write_text(out, front_page(run_dir, notebooks, name))
    return out
