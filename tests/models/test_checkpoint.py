"""Checkpoint files genlab cannot use stop with genlab's words: which parameter, which file,
what is wrong. Every path that reads a checkpoint (init_from, resume_from, the later notebooks'
load_model) goes through one reader that never runs code carried by a pickle."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlab.models import CheckpointError, build_model, load_model
from genlab.train.training import TrainConfig, fit, init_from_checkpoint, quiet_lightning

quiet_lightning()
pytestmark = [pytest.mark.filterwarnings("ignore:.*LeafSpec"),
              pytest.mark.filterwarnings("ignore:.*no `val_dataloader`")]


class _RunsCode:
    """Unpickling this creates the marker folder: proof that code in the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the words the message must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    def put(name, data, words):
        path = folder / f"{name}.ckpt"
        path.write_bytes(data)
        files[name] = (path, words)

    put("random", os.urandom(4096), "is not a checkpoint")
    put("empty", b"", "is not a checkpoint: the file is empty")
    put("text", b"epochs: 100\n", "is not a checkpoint")
    marker = folder / "code-ran"
    put("pickle_code", pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=2),
        f"holds objects genlab will not unpickle ({os.mkdir.__module__}.mkdir)")
    put("pickle_code_p4", pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=4),
        "holds objects genlab will not unpickle (pickle opcode")
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "extra": _RunsCode(marker)}, buf)
    put("archive_code", buf.getvalue(), f"holds objects genlab will not unpickle ({os.mkdir.__module__}.mkdir)")
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(4000)}}, buf)
    put("truncated", buf.getvalue()[: len(buf.getvalue()) // 2],
        "is a corrupt checkpoint: its zip archive is truncated or damaged")
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory, digits):
    """A real 1-epoch VAE training checkpoint (last.ckpt)."""
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.from_numpy(digits.x[:128])
    loader = DataLoader(TensorDataset(x), batch_size=64)
    model = build_model("vae", [1, 8, 8], width=32, depth=1, latent_dim=4)
    res = fit(model, ckpt_dir=tmp_path_factory.mktemp("vae"), cfg=TrainConfig(max_epochs=1),
              train_dataloaders=loader)
    return res.last_ckpt


def _small_vae():
    return build_model("vae", [1, 8, 8], width=32, depth=1, latent_dim=4)


READERS = {
    "init_from": lambda p: init_from_checkpoint(_small_vae(), p),
    "resume_from": lambda p: fit(_small_vae(), ckpt_dir=p.parent / "out", cfg=TrainConfig(max_epochs=1),
                                 resume_from=p),
    "model.ckpt": lambda p: load_model(p),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("name", ["random", "empty", "text", "pickle_code", "pickle_code_p4",
                                  "archive_code", "truncated"])
def test_unusable_files_name_parameter_file_and_problem(bad, reader, name):
    path, words = bad[name]
    with pytest.raises(CheckpointError) as info:
        READERS[reader](path)
    text = str(info.value)
    lead = f"parameter '{reader}': {path}" if reader != "model.ckpt" else f"checkpoint {path}"
    assert text.startswith(lead), text
    assert words in text, text
    assert "Check the documentation of torch.load" not in text and "weights_only` set to" not in text
    assert not (path.parent / "code-ran").exists()  # nothing in the pickles ran


def test_missing_file_names_the_parameter(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"parameter 'init_from': .*nope.ckpt: checkpoint not found"):
        init_from_checkpoint(_small_vae(), tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match=r"parameter 'resume_from': .*nope.ckpt: checkpoint not found"):
        fit(_small_vae(), ckpt_dir=tmp_path / "o", cfg=TrainConfig(), resume_from=tmp_path / "nope.ckpt")


def test_checkpoints_of_another_kind_or_version(vae_ckpt, tmp_path):
    gan = build_model("gan", [1, 8, 8], width=32, depth=1, latent_dim=4)
    with pytest.raises(CheckpointError, match=r"parameter 'init_from': .*last.ckpt was written for another "
                                              r"model kind: it holds model_kind='vae', the model is a 'gan'"):
        init_from_checkpoint(gan, vae_ckpt)
    with pytest.raises(CheckpointError, match=r"parameter 'resume_from': .*another model kind"):
        fit(gan, ckpt_dir=tmp_path / "o", cfg=TrainConfig(max_epochs=2), resume_from=vae_ckpt)

    ckpt = torch.load(vae_ckpt, weights_only=True)
    newer = tmp_path / "newer.ckpt"  # a hyper-parameter this genlab does not know
    torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "flow_layers": 3}}, newer)
    with pytest.raises(CheckpointError, match=r"checkpoint .*newer.ckpt was written by another genlab "
                                              r"version or model kind: .*flow_layers"):
        load_model(newer)
    renamed = tmp_path / "renamed.ckpt"  # tensors under other names
    torch.save({**ckpt, "state_dict": {f"net.{k}": v for k, v in ckpt["state_dict"].items()}}, renamed)
    with pytest.raises(CheckpointError, match="written by another genlab version"):
        load_model(renamed)
    with pytest.raises(CheckpointError, match=r"parameter 'init_from': .*another genlab version or model "
                                              r"configuration: it lacks"):
        init_from_checkpoint(_small_vae(), renamed)
    no_kind = tmp_path / "no_kind.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, no_kind)
    with pytest.raises(CheckpointError, match="model_kind=None"):
        load_model(no_kind)

    weights_only = tmp_path / "weights.ckpt"  # a state dict alone: fine-tuning yes, resuming no
    torch.save({"state_dict": ckpt["state_dict"], "hyper_parameters": ckpt["hyper_parameters"]}, weights_only)
    init_from_checkpoint(_small_vae(), weights_only)
    with pytest.raises(CheckpointError, match=r"holds weights but no training state .* use init_from="):
        fit(_small_vae(), ckpt_dir=tmp_path / "o", cfg=TrainConfig(max_epochs=2), resume_from=weights_only)
    assert load_model(vae_ckpt).model_kind == "vae"  # the good checkpoint still loads


def test_training_script_reports_a_bad_init_from(bad, tmp_path):
    path, words = bad["pickle_code"]
    proc = subprocess.run([sys.executable, "-m", "genlab.train", "--reports-dir", str(tmp_path),
                           "--name", "ft", "-p", "dataset=toy", "-p", "max_epochs=1",
                           "-p", f"init_from={path}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert f"parameter 'init_from': {path} {words}" in proc.stderr, proc.stderr[-2000:]
    assert "Check the documentation" not in proc.stderr
    assert not (path.parent / "code-ran").exists()
