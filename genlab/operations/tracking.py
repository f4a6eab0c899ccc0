"""Experiment tracking and the model registry on MLflow (the optional extra `ops`).

    genlab run --track ...                    # or GENLAB_TRACK=1: one MLflow run per genlab run
    genlab sweep sweeps/x.yaml --track        # a parent MLflow run, one child per sweep run
    genlab gate reports/<run> --rule ... --promote NAME   # register + move alias `champion`
    genlab serve models:/NAME@champion        # what the alias points to

Where: `MLFLOW_TRACKING_URI` when set (a team's tracking server); otherwise an embedded SQLite
file `mlruns/mlflow.db` with artifacts under `mlruns/artifacts/` in the project (no server).
MLflow is imported only when tracking is asked for, so the command line starts as fast without
it, and a missing extra is one error that names it.

What a tracked run holds: the parameters of every notebook, the headline numbers that are
numbers (`<notebook>.<key>`; bools and strings go to tags), the data fingerprint and the
verdict strings as tags, and under the artifact folder `run/` a copy of the run folder that a
server can load (headline JSON, HTML reports, model card, `artifacts/model.ckpt` and the data
spec). A registered model version points at that `run/` folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from genlab.ops.runs import project_root

TRACK_ENV = "GENLAB_TRACK"
EXPERIMENT = "genlab"
CHAMPION = "champion"
EXTRA = "ops"
RUN_ARTIFACT = "run"  # the artifact folder holding the loadable copy of the run folder
# what goes into `run/`: reports and their numbers, and what a server needs to load the model
_RUN_FILES = ("*.json", "*.html", "model_card.md")
_ARTIFACT_FILES = ("model.ckpt", "data_spec.json", "dp.json", "canaries.json")
_NOT_LOGGED = ("timings.json",)
_MODEL_URI = re.compile(r"^models:/([^/@]+)@([A-Za-z0-9_-]+)$")


class TrackingError(RuntimeError):
    """Tracking or the registry cannot do what was asked (missing extra, bad URI, no model)."""


def mlflow_module():
    """`import mlflow`, or a TrackingError naming the extra that provides it.

    MLflow's uploads import `tqdm.auto`, which in a notebook kernel without ipywidgets warns
    "IProgress not found" on stderr: noise in a report, silenced here for this process."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingError(f"tracking and the model registry need MLflow: install the "
                            f"optional extra '{EXTRA}' (pip install -e '.[{EXTRA}]'); "
                            f"import failed: {exc}") from None
    return mlflow


def tracking_requested(flag: bool = False) -> bool:
    """`--track`, or GENLAB_TRACK set to 1/true/yes/on."""
    return flag or os.environ.get(TRACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the project's embedded SQLite file."""
    given = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if given:
        return given
    folder = project_root() / "mlruns"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def client():
    """An MlflowClient on `tracking_uri()` (tracking and registry on the same store)."""
    mlflow_module()
    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401  (MLflow's SQL store migrates with them)
            import sqlalchemy  # noqa: F401
        except ImportError as exc:
            raise TrackingError(f"the embedded SQLite tracking store needs sqlalchemy and "
                                f"alembic: install the optional extra '{EXTRA}' "
                                f"(pip install -e '.[{EXTRA}]'); {exc}") from None
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no migration chatter per command
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(mc) -> str:
    exp = mc.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = None
    if mc.tracking_uri.startswith("sqlite:///"):  # artifacts beside the database, not in cwd
        location = (Path(mc.tracking_uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return mc.create_experiment(EXPERIMENT, artifact_location=location)


# ------------------------------------------------------------------------ what a run holds
_HEADLINE_NAME = re.compile(r"^\d\d_\w+\.json$")  # not .tables.json, .timings.json


def headline_paths(run_dir: Path) -> list[Path]:
    """The run folder's `<notebook>.json` files (numbered; not tables or timings)."""
    return [p for p in sorted(Path(run_dir).glob("[0-9]*.json")) if _HEADLINE_NAME.match(p.name)]


def headline_docs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """`<notebook>.json` of a run folder by notebook stem."""
    return {p.stem: json.loads(p.read_text()) for p in headline_paths(run_dir)}


def run_record(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Parameters, numeric metrics and tags of one run folder, from its headline JSON only."""
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {"genlab.run": Path(run_dir).name}
    for stem, doc in headline_docs(run_dir).items():
        for key, value in doc.get("parameters", {}).items():
            params.setdefault(key, json.dumps(value) if not isinstance(value, str) else value)
        prov = doc.get("provenance", {})
        for key in ("data_fingerprint", "dataset", "git_commit", "genlab"):
            if prov.get(key) is not None:
                tags[f"genlab.{key}"] = str(prov[key])
        for key, value in doc.items():
            if key in ("parameters", "provenance") or value is None:
                continue
            if isinstance(value, bool) or isinstance(value, str):
                tags[f"{stem}.{key}"] = str(value)
            elif isinstance(value, (int, float)):
                metrics[f"{stem}.{key}"] = float(value)
    return {"params": params, "metrics": metrics, "tags": tags}


def stage_run_copy(run_dir: Path, into: Path) -> Path:
    """Copy what a tracked run keeps of the run folder into `into/run/` (see module doc)."""
    run_dir = Path(run_dir)
    dest = into / RUN_ARTIFACT
    (dest / "artifacts").mkdir(parents=True)
    for pattern in _RUN_FILES + ("model_card.html",):
        for path in sorted(run_dir.glob(pattern)):
            if path.name not in _NOT_LOGGED:
                shutil.copy2(path, dest / path.name)
    for name in _ARTIFACT_FILES:
        if (run_dir / "artifacts" / name).is_file():
            shutil.copy2(run_dir / "artifacts" / name, dest / "artifacts" / name)
    return dest


def _log(mc, run_id: str, run_dir: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    rec = run_record(run_dir)
    items = [Param(k, v[:6000]) for k, v in sorted(rec["params"].items())]
    metrics = [Metric(k, v, 0, 0) for k, v in sorted(rec["metrics"].items())]
    tags = [RunTag(k, v[:5000]) for k, v in sorted(rec["tags"].items())]
    for start in range(0, max(len(items), len(metrics), len(tags)), 100):  # MLflow's batch cap
        mc.log_batch(run_id, metrics=metrics[start:start + 100], params=items[start:start + 100],
                     tags=tags[start:start + 100])
    with tempfile.TemporaryDirectory(prefix="genlab-track-") as tmp:
        mc.log_artifacts(run_id, str(stage_run_copy(run_dir, Path(tmp))), RUN_ARTIFACT)


def log_run(run_dir: Path, *, parent_run_id: str | None = None, mc=None,
            extra_tags: dict[str, str] | None = None) -> str:
    """One MLflow run for one genlab run folder; returns its MLflow run id."""
    run_dir = Path(run_dir)
    if not headline_docs(run_dir):
        raise TrackingError(f"{run_dir}: no headline JSON (<notebook>.json) to track")
    mc = mc or client()
    tags = {"genlab.run_dir": str(run_dir.resolve()), **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = mc.create_run(_experiment_id(mc), run_name=run_dir.name, tags=tags)
    try:
        _log(mc, run.info.run_id, run_dir)
    except BaseException:
        mc.set_terminated(run.info.run_id, "FAILED")
        raise
    mc.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def log_sweep(folder: Path, run_dirs: list[Path], *, mc=None) -> str:
    """A parent MLflow run for the sweep (its summary as artifacts), one child per run folder."""
    mc = mc or client()
    parent = mc.create_run(_experiment_id(mc), run_name=Path(folder).name,
                           tags={"genlab.sweep": Path(folder).name,
                                 "genlab.run_dir": str(Path(folder).resolve())})
    pid = parent.info.run_id
    for run_dir in run_dirs:
        log_run(run_dir, parent_run_id=pid, mc=mc)
    for name in ("index.html", "summary.json", "summary.csv"):
        if (Path(folder) / name).is_file():
            mc.log_artifact(pid, str(Path(folder) / name), "sweep")
    mc.set_terminated(pid, "FINISHED")
    return pid


# ------------------------------------------------------------------------ registry
def content_digest(run_dir: Path) -> str:
    """sha256 of the model checkpoint and the headline JSON: what a registered version is."""
    h = hashlib.sha256()
    for path in [Path(run_dir) / "artifacts" / "model.ckpt", *headline_paths(run_dir)]:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def register(run_dir: Path, name: str, *, alias: str = CHAMPION, description: str = "",
             mc=None) -> dict[str, Any]:
    """Log the run folder as a new MLflow run, register its `run/` artifact as a new version of
    model `name`, and point `alias` at it. Call only after the gate passed."""
    run_dir = Path(run_dir)
    if not (run_dir / "artifacts" / "model.ckpt").is_file():
        raise TrackingError(f"{run_dir}: no artifacts/model.ckpt to register")
    mc = mc or client()
    from mlflow.exceptions import MlflowException

    run_id = log_run(run_dir, mc=mc, extra_tags={"genlab.registered_as": name,
                                                 "genlab.content_sha256": content_digest(run_dir)})
    try:
        mc.get_registered_model(name)
    except MlflowException:
        mc.create_registered_model(name, description="genlab generative model")
    artifact_uri = mc.get_run(run_id).info.artifact_uri
    version = mc.create_model_version(name, source=f"{artifact_uri}/{RUN_ARTIFACT}",
                                      run_id=run_id, description=description[:5000],
                                      tags={"genlab.run": run_dir.name})
    mc.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "alias": alias, "mlflow_run_id": run_id}


def alias_version(name: str, alias: str = CHAMPION, *, mc=None) -> int | None:
    """The version `alias` points to, or None when the model or the alias does not exist."""
    mc = mc or client()
    from mlflow.exceptions import MlflowException

    try:
        return int(mc.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def is_model_uri(source: str) -> bool:
    return str(source).startswith("models:/")


def resolve_model_uri(uri: str, *, mc=None) -> Path:
    """`models:/NAME@alias` → a local run folder (artifacts/model.ckpt, headline JSON) holding
    the version the alias points to now."""
    m = _MODEL_URI.match(str(uri))
    if not m:
        raise TrackingError(f"model URI: expected 'models:/NAME@alias', got {uri!r}")
    name, alias = m.groups()
    mc = mc or client()
    from mlflow.exceptions import MlflowException

    try:
        version = mc.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise TrackingError(f"{uri}: no version of model {name!r} has alias {alias!r} in "
                            f"{mc.tracking_uri} ({str(exc).splitlines()[0]})") from None
    mlflow = mlflow_module()
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source,
                                                     tracking_uri=mc.tracking_uri))
    if not (local / "artifacts" / "model.ckpt").is_file():
        raise TrackingError(f"{uri} (version {version.version}): {local} holds no "
                            f"artifacts/model.ckpt")
    return local


@contextlib.contextmanager
def model_resolver():
    """While open, `genlab serve` (and `resolve_source`) serve `models:/NAME@alias`: the version
    the alias points to when the server starts (a later alias move needs the admin endpoints or
    a restart). The previous resolver, if any, is back afterwards."""
    mlflow_module()
    from genlab.serve import sampler

    previous = sampler._RESOLVERS.get("models:/")
    sampler.register_resolver("models:/", resolve_model_uri)
    try:
        yield
    finally:
        if previous is None:
            sampler._RESOLVERS.pop("models:/", None)
        else:
            sampler.register_resolver("models:/", previous)
