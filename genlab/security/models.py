"""Extra models the security study trains, and how it scores their samples.

Every model here is trained *like the run's model* — the architecture and hyper-parameters
stored in the run's `model.ckpt`, its batch size — from fresh seeded weights, on a pool the
study chooses, for a stated number of epochs, into a folder under `artifacts/security/`. The
run's own `model.ckpt` and `checkpoints/` are only read. A run trained with DP-SGD is
retrained here without it (the study asks what poisoning does to the model, not to the
accountant), and the report says so.

Scoring goes through the evaluation: its feature extractor (`genlab.evaluate.features`, the
run's cached classifier; raw pixels for unlabelled data) and its metric library
(`genlab.evaluate.metrics`: FD and precision/recall/coverage with subsample CIs), in one
function, :func:`fidelity`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.evaluate import features as F
from genlab.evaluate import metrics as M
from genlab.models import MODELS, is_conditional, load_model, read_checkpoint
from genlab.numerics import single_threaded
from genlab.ops.runs import RunFolder
from genlab.train import training

STUDY_DIR = "security"


@dataclass(frozen=True)
class RunSettings:
    """What the study copies from the run: model kind and constructor arguments, batch size,
    epochs, whether it was trained with DP-SGD."""

    kind: str
    hparams: dict[str, Any]
    batch_size: int
    max_epochs: int
    dp: bool

    @property
    def conditional(self) -> bool:
        return int(self.hparams.get("n_classes", 0) or 0) > 0


def run_settings(run: RunFolder) -> RunSettings:
    ckpt = read_checkpoint(run.model_ckpt)
    hp = dict(ckpt["hyper_parameters"])
    kind = hp.pop("model_kind")
    params: dict[str, Any] = {}
    train_json = run.path / "01_train.json"
    if train_json.exists():
        params = json.loads(train_json.read_text()).get("parameters", {})
    return RunSettings(kind, hp, int(params.get("batch_size", 64)),
                       int(params.get("max_epochs", 100)), bool(params.get("dp", False)))


def train_like_run(settings: RunSettings, x: np.ndarray, y: np.ndarray | None, *, epochs: int,
                   seed: int, out_dir: Path, epoch_size: int | None = None):
    """A fresh model of the run's kind and hyper-parameters, trained `epochs` epochs on `x`
    (with labels `y` for a conditional model, whose class prior becomes their shares), seeded
    and deterministic; checkpoints in `out_dir`. Returns the model in eval mode.

    `epoch_size` records per epoch (drawn without replacement from `x`, a new draw each epoch):
    models trained on pools of different sizes then make the same number of updates, so a
    poisoned pool is not "better trained" merely for being larger."""
    training.seed_everything(seed)
    model = MODELS[settings.kind](**settings.hparams)
    tensors = [torch.from_numpy(np.ascontiguousarray(x, np.float32))]
    if settings.conditional:
        if y is None:
            raise ValueError("a conditional model needs labels to train on")
        labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
        tensors.append(labels)
        model.set_class_prior(torch.bincount(labels, minlength=model.n_classes))
    else:
        tensors.append(torch.full((len(x),), -1, dtype=torch.long))
    dataset = torch.utils.data.TensorDataset(*tensors)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=epoch_size or len(x),
                                             generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler)
    cfg = training.TrainConfig(max_epochs=int(epochs), batch_size=settings.batch_size, seed=seed)
    with single_threaded():
        result = training.fit(model, train_dataloaders=loader, ckpt_dir=Path(out_dir), cfg=cfg)
    return load_model(result.last_ckpt)


def draw(model, n: int, seed: int, labels: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """`n` samples and, for a conditional model, the classes requested (drawn from its prior
    unless `labels` are given)."""
    with single_threaded():
        if is_conditional(model):
            req = (torch.as_tensor(labels, dtype=torch.long) if labels is not None
                   else model.sample_labels(n, seed=seed))
            return model.sample(n, seed=seed, labels=req).detach().cpu().numpy(), req.numpy()
        return model.sample(n, seed=seed).detach().cpu().numpy(), None


def extractor(run: RunFolder, ds, spec, seed: int):
    """The evaluation's feature space: its cached classifier, or raw pixels without labels."""
    if ds.y is None:
        return F.PixelFeatures(ds.data_shape)
    return F.load_or_train_extractor(run, ds, spec, seed=seed)


def fidelity(ext, samples: np.ndarray, reference: np.ndarray, *, m: int, draws: int, seed: int,
             k: int = 5) -> dict[str, float]:
    """FD, precision, recall and coverage of `samples` against the real `reference`: the
    evaluation's metrics in the evaluation's feature space, each by the evaluation's
    `subsample_ci` (mean over `draws` seeded subsamples of m records per side, the same subsets
    for every metric, with its interval clipped to the metric's range)."""
    with single_threaded():
        fs, fr = ext.features(samples), ext.features(reference)
        m = min(m, len(fs), len(fr))
        kw = dict(draws=draws, seed=seed)
        out = M.subsample_ci(M.frechet_distance, [fs, fr], [m, m], bounds=(0.0, None),
                             **kw).as_dict("fd")
        for name in ("precision", "recall", "coverage"):
            out.update(M.subsample_ci(lambda r, f, name=name: M.prdc(r, f, k)[name], [fr, fs],
                                      [m, m], bounds=(0.0, 1.0), **kw).as_dict(name))
    out["m"] = m
    return out
