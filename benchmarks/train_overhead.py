"""Training-loop overhead: an epoch of the default VAE under the notebook's Trainer vs plain PyTorch.

Both sides train the same model class on the same digits members pool with the same data loaders
(batch 64) and then run the same validation pass; the Trainer side uses `training.build_trainer`
with the training notebook's TrainConfig (`train_config` of the default parameters: a checkpoint
every `checkpoint_every_n_epochs` epochs and after the last). Blocks of epochs alternate between
the sides so machine load hits them alike; a block of the default 10 epochs writes one checkpoint
at its end, the cadence of a default run. The ratio is the median over blocks of
(Trainer epoch time / plain epoch time) within a block. A third arm runs the same
Trainer without checkpoints, to show what they cost. Threads as in the notebooks
(`reproducibility.configure`: GENLAB_THREADS, default 1).

    python benchmarks/train_overhead.py [--blocks 7 --block-epochs 10] [--checkpoint-every K] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from genlab.datamodule import GenDataModule
from genlab import data, params, reproducibility
from genlab.train import notebook as experiment
from genlab.train import training

VAL_SEED = 10_000


class EpochTimer(L.Callback):
    """Epoch wall times, start to start: validation and the per-epoch checkpoint included."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.stamps.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module):
        self.stamps.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def plain_epoch(model, optimizer, train_loader, val_loader, epoch: int) -> float:
    """The same work as VAE.training_step / validation_step, without a framework."""
    t0 = time.perf_counter()
    train_loader.sampler.set_epoch(epoch)
    model.train()
    total, count = torch.zeros(()), 0
    for x, _ in train_loader:
        rec, kl = model.loss_terms(x)
        loss = (rec + model.hparams.beta * kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(x)
        count += len(x)
    model.eval()
    with torch.no_grad():
        val = torch.zeros(())
        for i, (x, _) in enumerate(val_loader):
            gen = torch.Generator().manual_seed(VAL_SEED + i)
            rec, kl = model.loss_terms(x, gen)
            val += (rec + model.hparams.beta * kl).mean() * len(x)
    float(total / count), float(val)  # one sync per epoch, as the Lightning side logs once
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=7, help="alternating blocks per side")
    ap.add_argument("--block-epochs", type=int, default=10)
    ap.add_argument("--checkpoint-every", type=int, help="checkpoint_every_n_epochs (default: "
                    "the training notebook's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    reproducibility.configure()
    training.quiet_lightning()

    p = params.TrainParams(**({} if args.checkpoint_every is None else
                              {"checkpoint_every_n_epochs": args.checkpoint_every}))
    ds = data.load_dataset(p.dataset)
    spec = data.DataSpec.build(ds, seed=p.seed)
    dm = GenDataModule(ds, spec, batch_size=p.batch_size)
    dm.setup("fit")
    steps = len(dm.train_dataloader())

    training.seed_everything(0)
    lit_model = experiment.model_from_params(p, ds.data_shape)
    training.seed_everything(0)
    plain_model = experiment.model_from_params(p, ds.data_shape)
    optimizer = plain_model.configure_optimizers()
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()

    training.seed_everything(0)
    bare_model = experiment.model_from_params(p, ds.data_shape)

    lit_times, bare_times, plain_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for block in range(args.blocks):  # alternate blocks of epochs between the three sides
            end = (block + 1) * args.block_epochs
            cfg = dataclasses.replace(experiment.train_config(p), max_epochs=end)
            for model, ckpt_dir, times in ((lit_model, Path(tmp) / "nb", lit_times),
                                           (bare_model, Path(tmp) / "bare", bare_times)):
                timer = EpochTimer()
                # the notebook's Trainer; "bare" = the same without checkpoints
                trainer = training.build_trainer(cfg, ckpt_dir if model is lit_model else None,
                                                 callbacks=[timer])
                ckpt = ckpt_dir / "last.ckpt"
                if model is bare_model:  # resume by hand: no checkpoint callback writes one
                    ckpt_dir.mkdir(exist_ok=True)
                trainer.fit(model, datamodule=dm, weights_only=True,
                            ckpt_path=str(ckpt) if ckpt.exists() else None)
                if model is bare_model:
                    trainer.save_checkpoint(ckpt)
                times.append(timer.times[1:])  # an epoch right after a restore is not typical
            plain_times.append([plain_epoch(plain_model, optimizer, train_loader, val_loader, e)
                                for e in range(end - args.block_epochs, end)][1:])
    # Per block, the mean epoch time of each side (a checkpoint written once per k epochs is a
    # cost spread over k epochs, which a median of epochs would drop); the ratio is the median
    # over blocks of the per-block ratios: the three sides of one block ran within seconds of
    # each other, so a change of machine load between blocks cancels out.
    def block_ratios(side):
        return [statistics.mean(a) / statistics.mean(b) for a, b in zip(side, plain_times)]

    lit, bare, plain = (statistics.mean(sum(t, [])) for t in (lit_times, bare_times, plain_times))
    result = {
        "steps_per_epoch": steps, "epochs_timed": sum(map(len, lit_times)),
        "lightning_ms_per_step": round(1000 * lit / steps, 3),
        "lightning_without_checkpoint_ms_per_step": round(1000 * bare / steps, 3),
        "plain_ms_per_step": round(1000 * plain / steps, 3),
        "ratio": round(statistics.median(block_ratios(lit_times)), 3),
        "ratio_without_checkpoint": round(statistics.median(block_ratios(bare_times)), 3),
        "block_ratios": [round(r, 3) for r in block_ratios(lit_times)],
        "ratio_of_means": round(lit / plain, 3),
        "threads": torch.get_num_threads(),
        "checkpoint_every_n_epochs": p.checkpoint_every_n_epochs,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
