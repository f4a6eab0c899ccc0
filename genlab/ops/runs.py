"""The run folder (`reports/<run-name>/`) and how files get into it without damaging a good run.

A run folder ties the notebooks of one run together: training writes `artifacts/`, the other
notebooks read it. `genlab run` executes into a staging folder and renames it into place at the
end; the notebooks see the *final* path in their `run_dir` parameter (so reports and headline
JSON carry a stable name) while `resolve_run_dir` maps it to the staging folder through the
`GENLAB_STAGING` environment variable that the pipeline sets for the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

STAGING_ENV = "GENLAB_STAGING"  # JSON {"<final abs path>": "<staging abs path>"}
_UMASK = os.umask(0)  # read once (there is no getter), restored at once
os.umask(_UMASK)


def project_root(start: Path | None = None) -> Path:
    """The genlab project: the nearest folder at or above `start` (default: cwd) holding genlab's
    pyproject.toml, else the checkout genlab is installed from (editable install), else cwd.

    Notebooks run with cwd = notebooks/ in JupyterLab, with cwd = the project root under
    `genlab run`, and anywhere under a hand-run papermill; resolving relative run folders
    against the root puts all of them in the project's `reports/`."""
    here = (start or Path.cwd()).resolve()
    checkout = Path(__file__).resolve().parents[2]
    for folder in (*(here, *here.parents), checkout):
        toml = folder / "pyproject.toml"
        if toml.is_file() and 'name = "genlab"' in toml.read_text(errors="replace"):
            return folder
    return here


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """Absolute folder to write the run into (the staging folder while the pipeline runs)."""
    path = Path(run_dir).expanduser()
    if not path.is_absolute():
        path = project_root() / path
    path = path.resolve()
    staging = json.loads(os.environ.get(STAGING_ENV, "{}"))
    return Path(staging.get(str(path), path))


class RunFolder:
    """Paths of one run. `artifacts/` holds checkpoints, the data spec and caches."""

    def __init__(self, run_dir: str | os.PathLike, *, create: bool = True):
        self.given = str(run_dir)
        self.path = resolve_run_dir(run_dir)
        if create:
            self.artifacts.mkdir(parents=True, exist_ok=True)

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def checkpoints(self) -> Path:
        return self.artifacts / "checkpoints"

    @property
    def model_ckpt(self) -> Path:
        """The run's model, as the later notebooks audit it (copied from last/best by training)."""
        return self.artifacts / "model.ckpt"

    @property
    def data_spec(self) -> Path:
        return self.artifacts / "data_spec.json"

    def require(self, path: Path, made_by: str) -> Path:
        """A file an earlier notebook should have written, or a message saying which one."""
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found: run '{made_by}' for run_dir={self.given!r} first"
            )
        return path


def replace_dir(staging: Path, final: Path) -> None:
    """Put a finished staging folder in place of `final` (two renames on one file system).

    The old folder is moved aside first and deleted only after the new one is in place; a
    leftover aside-folder from an earlier crash is cleared so the first rename cannot fail."""
    aside = staging.with_name(staging.name + ".old")
    shutil.rmtree(aside, ignore_errors=True)
    if final.exists():
        final.rename(aside)
    staging.rename(final)
    shutil.rmtree(aside, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and `os.replace`: never a half file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; reports are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_input(path: str | None) -> str | None:
    """An input path (data, checkpoint) as given, else relative to the project root.

    `reports/x/artifacts/model.ckpt` then works from JupyterLab (cwd notebooks/) as from the
    command line. A path found nowhere comes back unchanged, so the error names what was given."""
    if path is None or Path(path).expanduser().exists() or Path(path).is_absolute():
        return path
    candidate = project_root() / path
    return str(candidate) if candidate.exists() else path
