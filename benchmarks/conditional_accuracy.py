"""Conditional accuracy: do the class-conditional models generate the class they are asked for?

Each model is trained with ``n_classes=10`` on the digits ``members`` pool (``DataSpec`` seed 0,
``GenDataModule`` batch 64, ``genlab.train.training.fit`` seed 0, class prior = the members' label
shares, as ``01_train`` sets it), then asked for ``--n-per-class`` samples of every digit. The
evaluation classifier of ``02_evaluate`` (``features.train_extractor``: trained on the same
members pool, accuracy measured on the holdouts) labels each sample; the conditional accuracy is
the share it assigns to the requested class. The classifier's own accuracy on real holdout
records is printed beside it as the ceiling. Target: >= 0.8 for every model.

    python benchmarks/conditional_accuracy.py                       # all three, defaults below
    python benchmarks/conditional_accuracy.py --models gan --gan-epochs 100 --threads 2
    python benchmarks/conditional_accuracy.py --quick               # 2 epochs each: a smoke test

Prints one JSON object: per model the overall and per-class accuracy, the worst class, the
training seconds and the settings (epochs, architecture, guidance scale and sampler for the DDPM).
Single process; ``--threads`` intra-op threads (1 is fastest for these small networks on a loaded
machine).

Measured 2026-11-28 (1 thread, a 2-core machine shared with other jobs, load ~4-7; classifier
accuracy on real holdout records 0.967; 100 samples per class):

    model  epochs  train s  accuracy  worst class
    vae    100       18     1.000     1.00 (all)
    gan    150       50     0.956     0.82 (8)      100 epochs: 0.929, worst 0.62 (9)
    ddpm   100      287     0.994     0.98 (2)      w=2, DDIM-50; w=1: 0.888, worst 0.82 (3)
    ddpm   200      561     0.997     0.99 (2)      w=0: 0.106 (label ignored), 1: 0.938, 3 and 4: 1.000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from genlab import data
from genlab.datamodule import GenDataModule
from genlab.evaluate import features
from genlab.models import build_model
from genlab.train.training import TrainConfig, fit, quiet_lightning, seed_everything

# model -> (epochs, build_model hyper-parameters); everything else is the model's default
DEFAULTS = {
    "vae": (100, {"arch": "mlp"}),
    "gan": (150, {"arch": "mlp"}),
    "ddpm": (100, {"arch": "unet"}),
}
DDIM_STEPS = 50  # the deterministic DDIM sampler in 50 steps, the reports' DDPM sampler


def train(kind: str, epochs: int, hparams: dict, ds, spec, ckpt_dir: str):
    """A conditional ``kind`` trained on the digits members; returns (model, seconds)."""
    seed_everything(0)
    model = build_model(kind, list(ds.data_shape), n_classes=int(ds.n_classes), **hparams)
    model.set_class_prior(np.bincount(ds.y[spec.pool("members")], minlength=model.n_classes))
    dm = GenDataModule(ds, spec, batch_size=64)
    t0 = time.perf_counter()
    fit(model, dm, ckpt_dir=ckpt_dir, cfg=TrainConfig(max_epochs=epochs, seed=0))
    return model.eval(), time.perf_counter() - t0


def conditional_accuracy(model, ext, n_classes: int, n_per_class: int, guidance_scale=None) -> dict:
    """Share of samples the classifier assigns to the requested label: overall and per class."""
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    kw = {}
    if model.model_kind == "ddpm":
        kw = {"method": "ddim", "steps": DDIM_STEPS, "guidance_scale": guidance_scale}
    with torch.no_grad():
        x = model.sample(len(labels), seed=0, labels=labels, **kw)
    hit = ext.predict_proba(x.numpy()).argmax(1) == labels.numpy()
    per_class = {str(c): float(hit[labels.numpy() == c].mean()) for c in range(n_classes)}
    worst = min(per_class, key=per_class.get)
    return {"accuracy": float(hit.mean()), "worst_class": int(worst), "worst_accuracy": per_class[worst],
            "per_class": per_class}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vae,gan,ddpm")
    for kind, (epochs, _) in DEFAULTS.items():
        ap.add_argument(f"--{kind}-epochs", type=int, default=epochs)
    ap.add_argument("--guidance-scales", default=None,
                    help="DDPM: comma-separated guidance scales to score (default: the model's)")
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 epochs per model and 20 samples per class")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quiet_lightning()

    ds = data.load_dataset("digits")
    spec = data.DataSpec.build(ds, seed=0)
    ext = features.train_extractor(ds, spec, seed=0)
    n_per_class = 20 if args.quick else args.n_per_class
    out = {"dataset": "digits", "n_per_class": n_per_class, "threads": args.threads,
           "classifier_accuracy_on_holdouts": ext.accuracy, "models": {}}
    for kind in args.models.split(","):
        epochs = 2 if args.quick else getattr(args, f"{kind}_epochs")
        hparams = DEFAULTS[kind][1]
        with tempfile.TemporaryDirectory() as tmp:
            model, seconds = train(kind, epochs, hparams, ds, spec, tmp)
        row = {"epochs": epochs, **hparams, "train_seconds": round(seconds, 1)}
        if kind == "ddpm":  # headline numbers at the model's default guidance scale
            w0 = model.guidance_scale
            scales = sorted({w0, *(float(w) for w in (args.guidance_scales or "").split(",") if w)})
            by_scale = {str(w): conditional_accuracy(model, ext, model.n_classes, n_per_class, w) for w in scales}
            row.update(guidance_scale=w0, sampler=f"ddim-{DDIM_STEPS}", **by_scale[str(w0)],
                       by_guidance_scale=by_scale)
        else:
            row.update(conditional_accuracy(model, ext, model.n_classes, n_per_class))
        out["models"][kind] = row
        print(f"# {kind}: {json.dumps({k: v for k, v in row.items() if k not in ('per_class', 'by_guidance_scale')})}",
              flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
