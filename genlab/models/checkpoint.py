"""Reading checkpoint files: the one place genlab calls ``torch.load`` on a model checkpoint.

Every read is ``torch.load(..., weights_only=True)``: tensors and plain Python values only, so no
code carried by a pickle ever runs. What torch says when it refuses a file is about torch; the
:class:`CheckpointError` raised here instead names the parameter (or the role) and the file and
says what is wrong with it: not a checkpoint, corrupt, holding objects genlab will not unpickle,
or written by another genlab version or model kind.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["CheckpointError", "read_checkpoint", "checkpoint_label", "check_fits"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch.save's archive (empty archive: end record)
_PICKLE_MAGIC = b"\x80"  # a raw pickle: torch's legacy format or pickle.dump


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the parameter/role and the file."""


def checkpoint_label(path: Path, param: str | None) -> str:
    return f"parameter '{param}': {path}" if param else f"checkpoint {path}"


def _refused_object(message: str) -> str:
    """The object torch's weights-only reader refused, from its (long) message."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    found = re.search(r"Unsupported operand (\d+)", message)
    return f"pickle opcode {found.group(1)}" if found else message.strip().splitlines()[-1][:120]


def read_checkpoint(ckpt_path, *, param: str | None = None) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with genlab's messages.

    ``param`` names the parameter that gave the path (``init_from``, ``resume_from``); without
    it the message names the file as "checkpoint <path>". A missing file raises
    FileNotFoundError, anything unreadable :class:`CheckpointError`."""
    path = Path(ckpt_path)
    label = checkpoint_label(path, param)
    if not path.is_file():
        raise FileNotFoundError(f"{label}: checkpoint not found")
    with open(path, "rb") as fh:
        head = fh.read(16)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{label} is not a checkpoint: the file is empty (0 bytes)")
    is_zip = head.startswith(_ZIP_MAGIC)
    if not is_zip and not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{label} is not a checkpoint: a checkpoint is a torch.save archive, this file is "
            f"neither a zip archive nor a pickle (it starts with bytes {head[:8].hex(' ')})")
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{label} is a corrupt checkpoint: its zip archive is truncated or damaged "
            f"({size} bytes, no readable end record); copy it again or use another checkpoint")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write
            warnings.filterwarnings("ignore", message=r".*Detected pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _refused_object(str(exc))
        kind = "archive" if is_zip else "pickle (not a torch.save archive)"
        raise CheckpointError(
            f"{label} holds objects genlab will not unpickle ({what}): checkpoints are read with "
            f"torch.load(weights_only=True), which accepts tensors and plain Python values only, "
            f"so nothing in this {kind} ran; use a checkpoint written by genlab (artifacts/"
            "model.ckpt, artifacts/checkpoints/last.ckpt)") from None
    except Exception as exc:  # noqa: BLE001 - zip/pickle/storage errors all mean a damaged file
        raise CheckpointError(
            f"{label} is a corrupt checkpoint: reading it failed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else 'no detail'}); "
            "copy it again or use another checkpoint") from None


def check_fits(model: torch.nn.Module, state: Mapping[str, Any], path: Path,
               param: str | None = None) -> None:
    """Raise CheckpointError unless ``state`` has every tensor of ``model`` with its shape."""
    label = checkpoint_label(Path(path), param)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(
            f"{label} was written by another genlab version or model configuration: it lacks "
            f"{len(missing)} tensor(s) of the model, e.g. {missing[:5]}")
    for k, v in own.items():
        theirs = getattr(state[k], "shape", None)
        if theirs is None or tuple(theirs) != tuple(v.shape):
            raise CheckpointError(
                f"{label} does not fit the model: shape mismatch for {k!r}: model has "
                f"{tuple(v.shape)}, checkpoint {Path(path).name} has "
                f"{None if theirs is None else tuple(theirs)}")
