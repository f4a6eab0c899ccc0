"""Sweeps: many runs of the notebook chain, executed on Dask distributed.

    genlab sweep sweeps/models.yaml [--workers 2 --threads 1] [--scheduler tcp://HOST:8786]

A sweep file::

    name: models                  # folder under reports/ (default: the file's stem)
    only: [train, evaluate]       # notebooks per run (default: every notebook present)
    base: {max_epochs: 100}       # parameters every run shares
    grid: {model: [vae, gan], seed: [0, 1, 2]}     # cartesian product
    runs: [{dataset: digits}, {dataset: toy}]      # optional explicit list, each crossed with grid

Each run is one `genlab run` (pipeline.run_pipeline) into `reports/<sweep>/<run>/`, executed
on a Dask worker: a LocalCluster of worker processes by default, or an existing cluster
(`--scheduler`), which must share this file system with the client (the run folders are written
by the workers where the client reads them). A worker executes one run at a time; `--threads` is
the compute threads each run's notebook kernel gets (OMP/MKL/torch settings in its environment).

A finished run is skipped on the next invocation when its key — a hash of its parameters, the
notebooks' bytes, the genlab source (uncommitted changes included) and the data fingerprint — is
unchanged. A failed run is recorded with its error (its partial output kept as
`<run>.failed/` by the pipeline) and the others go on. Ctrl-C cancels what is running; finished
runs are already in place (each run folder is renamed into place only when complete).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from genlab import params as P
from genlab.ops.pipeline import Plan, available_notebooks, plan_run, run_pipeline
from genlab.ops.runs import atomic_write_text, project_root, resolve_input

KEY_FILE = ".sweep-key"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GENLAB_THREADS")


@dataclass
class SweepRun:
    name: str
    values: dict[str, Any]
    plan: Plan
    key: str


@dataclass
class Sweep:
    name: str
    only: list[str] | None
    folder: Path
    runs: list[SweepRun]


def expand(base: dict, grid: dict, runs: list[dict]) -> list[dict[str, Any]]:
    """base ∪ run ∪ one point of the grid, for every run × grid point, in file order."""
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise P.ParameterError(f"sweep grid '{name}': expected a non-empty list, "
                                   f"got {values!r}")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    return [{**base, **run, **point} for run in (runs or [{}]) for point in points]


def declared_default(name: str) -> Any:
    """The default a notebook declares for parameter `name` (what a run that leaves it unset
    gets), from the first notebook spec that has it; None for a name no notebook declares."""
    for notebook in P.NOTEBOOK_PARAMS:
        spec = P.spec(notebook)
        if name in spec:
            return spec[name].default
    return None


def with_defaults(value_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's values, with every parameter some other run sets filled in from the notebooks'
    declared defaults: names and groups then show what a run used, never "None" for "unset"."""
    names = list(dict.fromkeys(k for v in value_sets for k in v))
    return [{**{k: declared_default(k) for k in names}, **v} for v in value_sets]


def run_names(value_sets: list[dict[str, Any]]) -> list[str]:
    """Folder names from the parameters that vary across the sweep, e.g. `model-gan_seed-1`;
    a run that leaves a parameter unset is named with the notebook's default."""
    value_sets = with_defaults(value_sets)
    varying = [k for k in dict.fromkeys(k for v in value_sets for k in v)
               if len({json.dumps(v.get(k), sort_keys=True) for v in value_sets}) > 1]
    names = []
    for values in value_sets:
        parts = [f"{k}-{Path(str(values.get(k))).stem}" for k in varying] or ["run"]
        names.append(re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(parts)))
    if len(set(names)) != len(names):
        raise P.ParameterError("sweep: two runs have the same parameters "
                               f"({sorted(n for n in names if names.count(n) > 1)[0]})")
    return names


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def source_digest() -> str:
    """The genlab source as it is on disk now (uncommitted changes included)."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(package.rglob("*.py"))
    return _digest(*(f"{p.relative_to(package)}\n".encode() + p.read_bytes() for p in files))


def data_digest(dataset: str) -> str:
    from genlab.data import data_sha256, load_dataset

    return data_sha256(load_dataset(resolve_input(dataset)))


def load_sweep(path: Path, reports_dir: Path | None = None) -> Sweep:
    """Read, expand and validate a sweep file; every run is planned (checked) before any runs."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise P.ParameterError(f"sweep file {path}: cannot read ({exc})") from None
    allowed = {"name", "only", "base", "grid", "runs"}
    if not isinstance(doc, dict) or set(doc) - allowed:
        raise P.ParameterError(f"sweep file {path}: expected a mapping with keys from "
                               f"{sorted(allowed)}, got {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}")
    name = str(doc.get("name") or Path(path).stem)
    only = doc.get("only")
    value_sets = expand(doc.get("base") or {}, doc.get("grid") or {}, doc.get("runs") or [])
    folder = (reports_dir or project_root() / "reports").resolve() / name
    notebooks = available_notebooks()
    code = source_digest()
    book_bytes = {s: p.read_bytes() for s, p in notebooks.items()}
    data_digests: dict[str, str] = {}
    runs = []
    for run_name, values in zip(run_names(value_sets), value_sets):
        plan = plan_run(values, only=only, name=run_name, reports_dir=folder)
        dataset = str({**P.defaults("train"), **values}["dataset"])
        if dataset not in data_digests:
            data_digests[dataset] = data_digest(dataset)
        key = _digest(json.dumps(values, sort_keys=True, default=str).encode(),
                      json.dumps([s.short for s in plan.steps]).encode(),
                      *(book_bytes[s.short] for s in plan.steps), code.encode(),
                      data_digests[dataset].encode())
        runs.append(SweepRun(run_name, values, plan, key))
    return Sweep(name, only, folder, runs)


def is_finished(run: SweepRun) -> bool:
    key_file = run.plan.final_dir / KEY_FILE
    return key_file.is_file() and key_file.read_text().strip() == run.key \
        and (run.plan.final_dir / "index.html").is_file()


def execute_run(plan: Plan, key: str, threads: int) -> dict[str, Any]:
    """One run on a Dask worker. Thread limits go into the environment the kernel inherits."""
    for var in THREAD_ENV:
        os.environ[var] = str(threads)
    started = time.perf_counter()
    try:
        run_pipeline(plan, progress=False, echo=lambda *_: None)
    except Exception as exc:  # recorded, the sweep goes on
        return {"run": plan.name, "status": "failed", "error": str(exc).splitlines()[-1][:300],
                "seconds": round(time.perf_counter() - started, 2)}
    atomic_write_text(plan.final_dir / KEY_FILE, key + "\n")
    return {"run": plan.name, "status": "ok", "error": "",
            "seconds": round(time.perf_counter() - started, 2)}


def run_sweep(sweep: Sweep, *, workers: int = 2, threads: int = 1,
              scheduler: str | None = None, echo: Callable[[str], None] = print
              ) -> list[dict[str, Any]]:
    """Execute the unfinished runs on Dask; write the comparison page; return one row per run."""
    from dask.distributed import Client, LocalCluster, as_completed

    from genlab.ops.sweep_report import write_sweep_report

    results = {r.name: {"run": r.name, "status": "skipped (finished)", "error": "",
                        "seconds": 0.0} for r in sweep.runs if is_finished(r)}
    todo = [r for r in sweep.runs if r.name not in results]
    echo(f"sweep '{sweep.name}': {len(sweep.runs)} runs, {len(results)} already finished, "
         f"{len(todo)} to run -> {sweep.folder}")
    sweep.folder.mkdir(parents=True, exist_ok=True)
    if todo:
        cluster = None if scheduler else LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=50)
        client = Client(scheduler or cluster)
        started = time.perf_counter()
        try:
            futures = [client.submit(execute_run, r.plan, r.key, threads, pure=False,
                                     key=f"genlab-{sweep.name}-{r.name}") for r in todo]
            for done, future in enumerate(as_completed(futures), 1):
                row = future.result()
                results[row["run"]] = row
                echo(f"  [{done}/{len(todo)}] {row['run']}: {row['status']} "
                     f"({row['seconds']:.0f} s, {time.perf_counter() - started:.0f} s elapsed)"
                     + (f" - {row['error']}" if row["error"] else ""))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    rows = [results[r.name] for r in sweep.runs]
    filled = with_defaults([r.values for r in sweep.runs])
    write_sweep_report(sweep.folder, [(r.name, v) for r, v in zip(sweep.runs, filled)], rows)
    echo(f"comparison: {sweep.folder / 'index.html'}")
    return rows
