"""Several runs of one data fingerprint evaluated in one feature space against one reference
(`02_evaluate` with `run_dirs`): one table, written to `reports/compare-<run>-<run>.../`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from genlab import data as D
from genlab.evaluate import evaluation as E
from genlab.ops.runs import RunFolder
from genlab.params import EvaluateParams


@dataclass
class Comparison:
    """Several runs of one data fingerprint, measured in one feature space against holdout_b."""

    names: list[str]                 # one per run (the run folder's name, made unique)
    run_dirs: list[str]
    fingerprint: str
    rows: list[dict]                 # one per model, then the floor and baseline rows
    headlines: dict[str, dict]       # run name -> headline numbers (with the shared references)
    out_dir: Any = None              # pathlib.Path of the comparison's report folder


def parse_run_dirs(value: Any) -> list[str]:
    """`run_dirs` as a list, or as text: 'a,b' or '[a, b]' (what `-p run_dirs=[a,b]` gives)."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.strip().strip("[]").split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise D.DataError(f"run_dirs: expected a list of run folders, got {value!r}")
    out = [str(v).strip().strip("'\"") for v in items]
    out = [v for v in out if v]
    if len(out) < 2:
        raise D.DataError(f"run_dirs: name at least two run folders to compare, got {out}")
    return out


def _final_path(run_dir: str):
    """The run folder's own path (not the pipeline's staging copy it is being written to)."""
    from pathlib import Path

    from genlab.ops.runs import project_root

    path = Path(run_dir).expanduser()
    return (path if path.is_absolute() else project_root() / path).resolve()


def comparison_dir(run_dirs: list[str]):
    """`reports/compare-<run>-<run>...` beside the first run (its own report folder)."""
    first = _final_path(run_dirs[0])
    return first.parent / ("compare-" + "-".join(_final_path(d).name for d in run_dirs))


def compare_runs(p: EvaluateParams, first: tuple | None = None) -> Comparison:
    """Evaluate every run of `p.run_dirs` in the first run's feature space; one table.

    All runs must share one data fingerprint (same records in the same pools), else the
    comparison would set numbers against different references: a `DataError` names both
    fingerprints. The floor and baseline rows are computed once (for the first run; every model
    row has the same n by default). `first` = (ctx, ext, ev) of the first run when the notebook
    already evaluated it."""
    dirs = parse_run_dirs(p.run_dirs)
    if p.samples is not None:
        raise D.DataError("run_dirs compares the runs' own models; drop samples= or run_dirs=")
    ctxs = [first[0] if first is not None and i == 0 else E.load_context(p.replace(run_dir=d))
            for i, d in enumerate(dirs)]
    fp0 = ctxs[0].spec.fingerprint
    for d, c in zip(dirs[1:], ctxs[1:]):
        if c.spec.fingerprint != fp0:
            raise D.DataError(
                f"run_dirs: runs must share one data fingerprint to be compared; {dirs[0]!r} has "
                f"{fp0!r} but {d!r} has {c.spec.fingerprint!r} (train them on the same data "
                f"with the same seed and pool fractions)")
    ext = first[1] if first is not None else E.make_extractor(ctxs[0], p)
    evs = [first[2] if first is not None else E.evaluate(ctxs[0], ext, p)]
    evs += [E.evaluate(c, ext, p, references=False) for c in ctxs[1:]]
    names: list[str] = []
    for d in dirs:
        name = _final_path(d).name
        while name in names:
            name += "'"
        names.append(name)
    rows = []
    for name, ev, c in zip(names, evs, ctxs):
        kind = getattr(c.model, "model_kind", "model")
        rows.append({**ev.rows[0], "row": f"{name} ({kind})"})
    rows += [dict(r) for r in evs[0].rows[1:]]
    references = evs[0].rows[1:]  # floor, noise, GMM: computed once, for the first run
    heads = {}
    for name, ev, c in zip(names, evs, ctxs):
        full = dataclasses.replace(ev, rows=[ev.rows[0], *references])
        heads[name] = E.headline(full, ext, c)
    return Comparison(names, dirs, fp0, rows, heads, comparison_dir(dirs))


def write_comparison(cmp: Comparison, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """`02_evaluate_compare.json` (per run: headline numbers) and `.tables.json` (the rows)."""
    from genlab.ops import reports

    folder = RunFolder(cmp.out_dir)
    numbers = {f"{name}.{k}": v for name, h in cmp.headlines.items() for k, v in h.items()}
    numbers["data_fingerprint"] = cmp.fingerprint
    prov = {**provenance, "run_dirs": cmp.run_dirs}
    return reports.write_headline(folder, "02_evaluate_compare", numbers, provenance=prov,
                                  tables={"runs": dict(zip(cmp.names, cmp.run_dirs)),
                                          "rows": cmp.rows})
