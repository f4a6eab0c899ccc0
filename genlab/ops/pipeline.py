"""Execute the report notebooks of one run with papermill: `genlab run` calls `run_pipeline`.

    plan_run(...)      -> which notebooks, with which checked parameters (fails before any work)
    run_pipeline(...)  -> executes them into reports/.staging/..., exports HTML + index.html,
                          then renames the staging folder over reports/<name>/

A failed or interrupted run never touches the earlier good `reports/<name>/`: its staging folder
is kept as `reports/<name>.failed/` with the failed notebook saved as `<notebook>.failed.ipynb`.
A run stopped by a full disk keeps only that notebook: the rest of its partial output is
deleted, and the error says how much the run had written and how much space was left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from genlab import params as P
from genlab.ops.reports import export_html, normalize_notebook, write_index
from genlab.ops.runs import STAGING_ENV, atomic_write_text, project_root, replace_dir
from genlab.reproducibility import kernel_environment

# Short names (`--only`) → notebook file stems, in execution order.
NOTEBOOKS = {
    "train": "01_train",
    "evaluate": "02_evaluate",
    "privacy_audit": "03_privacy_audit",
    "drift_study": "04_drift_study",
    "cost_latency": "05_cost_latency",
    "operations": "06_operations",
    "security": "07_security",
}


# The kernel's own start-up warnings (loopback TCP transport) would break into the progress line;
# its errors still show, and the notebook's outputs are unaffected.
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


class PipelineError(RuntimeError):
    """A notebook failed; the message says which, where its output was kept, and the error."""


@dataclass
class Step:
    short: str
    stem: str
    source: Path
    parameters: dict[str, Any]


@dataclass
class Plan:
    name: str
    run_dir_param: str  # as the notebooks see it: relative to the project root when inside it
    final_dir: Path
    steps: list[Step] = field(default_factory=list)


def available_notebooks(root: Path | None = None) -> dict[str, Path]:
    folder = (root or project_root()) / "notebooks"
    return {s: folder / f"{stem}.ipynb" for s, stem in NOTEBOOKS.items()
            if (folder / f"{stem}.ipynb").exists()}


def default_run_name(values: Mapping[str, Any]) -> str:
    dataset = Path(str(values.get("dataset", "digits"))).stem or "data"
    return f"{values.get('model', 'vae')}-{dataset}-seed{values.get('seed', 0)}"


def plan_run(values: Mapping[str, Any], *, only: list[str] | None = None,
             name: str | None = None, reports_dir: Path | None = None) -> Plan:
    """Check names, notebooks and every parameter before anything executes."""
    root = project_root()
    found = available_notebooks(root)
    selected = only or list(found)
    for short in selected:
        if short not in NOTEBOOKS:
            raise P.ParameterError(f"--only: unknown notebook {short!r}; "
                                   f"expected names from {list(NOTEBOOKS)}")
        if short not in found:
            raise P.ParameterError(f"--only: notebook {short!r} ({NOTEBOOKS[short]}.ipynb) "
                                   f"is not in {root / 'notebooks'}")
    selected = [s for s in NOTEBOOKS if s in selected]
    if "run_dir" in values:
        raise P.ParameterError("parameter 'run_dir' is set by the pipeline: use --name NAME "
                               "(and --reports-dir) instead")
    specs = {s: P.spec(s) for s in selected}
    unknown = sorted(k for k in values if not any(k in sp for sp in specs.values()))
    if unknown:
        known = sorted({k for sp in specs.values() for k in sp} - {"run_dir"})
        raise P.ParameterError(f"unknown parameter(s) {unknown} for notebooks {selected}; "
                               f"known: {known}")

    name = name or default_run_name({**P.defaults("train"), **values})
    if not name or name.startswith(".") or "/" in name or name.endswith(".failed"):
        raise P.ParameterError(f"--name: expected a folder name (no '/', not starting with '.',"
                               f" not ending in '.failed'), got {name!r}")
    reports = (reports_dir or root / "reports").resolve()
    final = reports / name
    rel = os.path.relpath(final, root) if final.is_relative_to(root) else str(final)
    plan = Plan(name=name, run_dir_param=rel, final_dir=final)
    for short in selected:
        mine = {k: v for k, v in values.items() if k in specs[short]}
        checked = P.validate(short, {**mine, "run_dir": rel}, partial=True)
        if short == "train":
            P.check_train(checked)
        # Inject what the user gave (and run_dir); the rest stays as the notebook writes it.
        plan.steps.append(Step(short, NOTEBOOKS[short], found[short],
                               {k: checked[k] for k in (*mine, "run_dir")}))
    return plan


def _execute(step: Step, staging: Path, root: Path, progress: bool) -> dict[str, Any]:
    import nbformat
    import papermill as pm

    out = staging / f"{step.stem}.ipynb"
    started = time.perf_counter()
    try:
        nb = pm.execute_notebook(str(step.source), str(out), parameters=step.parameters,
                                 kernel_name="python3", progress_bar=progress, cwd=str(root),
                                 log_output=False, extra_arguments=list(KERNEL_ARGS))
    except BaseException as exc:  # keep the executed notebook, whatever stopped it
        if out.exists():
            out.rename(staging / f"{step.stem}.failed.ipynb")
        raise PipelineError(_failure_text(step, exc)) from exc
    executed = time.perf_counter() - started
    timings = normalize_notebook(nb)
    atomic_write_text(out, nbformat.writes(nb))
    t0 = time.perf_counter()
    atomic_write_text(staging / f"{step.stem}.html", export_html(nb, step.stem))
    cells = [c for c in timings["cells"] if c is not None]
    return {"execute_s": round(executed, 3), "cells_s": round(sum(cells), 3),
            "kernel_start_and_overhead_s": round(executed - sum(cells), 3),
            "html_export_s": round(time.perf_counter() - t0, 3), "cell_s": timings["cells"]}


def _failure_text(step: Step, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    detail = "\n".join(lines[-6:]) if lines else type(exc).__name__
    return f"notebook '{step.short}' ({step.stem}.ipynb) failed:\n{detail}"


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# a kernel's error reaches us as text (papermill's exception carries the traceback's lines)
_DISK_FULL_TEXT = re.compile(r"\[Errno (?:%d|%d)\]|No space left on device|Disk quota exceeded"
                             % _DISK_FULL_ERRNOS)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if _DISK_FULL_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(n: float) -> str:
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def discard_after_disk_full(staging: Path, failed: Path | None, name: str) -> str:
    """A run stopped by a full disk: delete its partial output (keep only the failed notebooks,
    ``*.failed.ipynb``, in ``failed``; nothing when ``failed`` is None) and return one line
    saying how much the run had written and how much space was left."""
    written = _folder_bytes(staging) if staging.exists() else 0
    free_then = shutil.disk_usage(staging if staging.exists() else staging.parent).free
    kept: list[str] = []
    if failed is not None and staging.exists():
        shutil.rmtree(failed, ignore_errors=True)
        staging.rename(failed)  # a rename needs no space; then everything else goes
        for path in failed.iterdir():
            if path.name.endswith(".failed.ipynb"):
                kept.append(path.name)
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if not kept:
            shutil.rmtree(failed, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    free_now = shutil.disk_usage(staging.parent).free
    where = f"kept {', '.join(kept)} in {failed}" if kept else "kept nothing"
    return (f"disk full: run '{name}' needed more than {_size(written + free_then)}: it had "
            f"written {_size(written)} to {staging} when {_size(free_then)} were left free; its "
            f"partial output was deleted ({where}), {_size(free_now)} are free now; free more "
            "space or use --reports-dir on a larger disk, then run again")


def run_pipeline(plan: Plan, *, progress: bool = True, echo=print) -> Path:
    """Execute the plan; return the final run folder. Raises PipelineError on failure."""
    root = project_root()
    reports = plan.final_dir.parent
    staging = reports / ".staging" / f"{plan.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    trains = any(s.short == "train" for s in plan.steps)
    if not trains and not plan.final_dir.exists():
        raise PipelineError(f"{plan.final_dir} does not exist: run 'train' for run "
                            f"'{plan.name}' first (genlab run --only train --name {plan.name})")
    if trains:  # training rewrites the whole run folder
        staging.mkdir(parents=True)
    else:  # later notebooks add to an existing run: work on a copy of it
        try:
            shutil.copytree(plan.final_dir, staging, ignore=shutil.ignore_patterns("*.failed.ipynb"))
        except OSError as exc:
            if not is_disk_full(exc):
                shutil.rmtree(staging, ignore_errors=True)
                raise
            raise PipelineError(f"copying {plan.final_dir} to work on failed: {exc}\n"
                                + discard_after_disk_full(staging, None, plan.name)) from exc

    timings: dict[str, Any] = {}
    with _kernel_environment({STAGING_ENV: json.dumps({str(plan.final_dir): str(staging)})}):
        try:
            for i, step in enumerate(plan.steps, 1):
                echo(f"[{i}/{len(plan.steps)}] {step.short}: {step.source.relative_to(root)} "
                     f"-> {plan.run_dir_param}/{step.stem}.html")
                timings[step.stem] = _execute(step, staging, root, progress)
                echo(f"      done in {timings[step.stem]['execute_s']:.1f} s")
            if (staging / "01_train.json").exists():
                from genlab.operations.card import write_model_card

                write_model_card(staging, plan.name)
            write_index(staging, list(NOTEBOOKS.values()), name=plan.name)
        except BaseException as exc:
            failed = reports / f"{plan.name}.failed"
            if is_disk_full(exc):
                space = discard_after_disk_full(staging, failed, plan.name)
                echo(f"run '{plan.name}' failed: disk full; partial output deleted; "
                     f"{plan.final_dir} left as it was")
                text = (str(exc).strip() if isinstance(exc, PipelineError)
                        else f"{type(exc).__name__}: {exc}")
                raise PipelineError(f"{text}\n{space}") from exc
            shutil.rmtree(failed, ignore_errors=True)
            staging.rename(failed)
            echo(f"run '{plan.name}' failed; partial output kept in {failed}; "
                 f"{plan.final_dir} left as it was")
            raise

    replace_dir(staging, plan.final_dir)
    shutil.rmtree(reports / f"{plan.name}.failed", ignore_errors=True)
    _merge_timings(plan.final_dir / "timings.json", timings)
    echo(f"report: {plan.final_dir / 'index.html'}")
    return plan.final_dir


@contextlib.contextmanager
def _kernel_environment(extra: Mapping[str, str] | None = None):
    """The environment the notebook kernels inherit (threads, numeric switches, `extra`) set
    for the duration, and the caller's restored after."""
    values = {**kernel_environment(), **(extra or {})}
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value



def _merge_timings(path: Path, new: Mapping[str, Any]) -> None:
    """Wall-clock times live outside the reproducible set, merged per notebook."""
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(new)
    current["python"] = sys.version.split()[0]
    atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True) + "\n")


def refresh_golden(source: Path, *, progress: bool = True) -> None:
    """Re-execute a committed notebook with its own defaults and store its outputs in place.

    Its papermill metadata is dropped whole: the golden record holds outputs, not a run log."""
    import nbformat
    import papermill as pm

    with _kernel_environment():
        nb = pm.execute_notebook(str(source), str(source), kernel_name="python3",
                                 progress_bar=progress, cwd=str(source.parent), log_output=False,
                                 extra_arguments=list(KERNEL_ARGS))
    normalize_notebook(nb)
    nb.metadata.pop("papermill", None)
    atomic_write_text(source, nbformat.writes(nb))
