"""Training recipes of one model on digits: FD, FD / real-vs-real floor and training seconds.

Each recipe trains the digits model (GAN or VAE) exactly as `01_train.ipynb` does (same pools,
data loaders, Trainer, seed and 100 epochs; only the model's constructor arguments differ) and
is evaluated as `02_evaluate.ipynb` does (the classifier feature space, FD at the evaluation's
default m with its CI, against the real-vs-real floor). Recipes run one after another in one
process, so the training seconds of a loaded machine are comparable only side by side.

    python benchmarks/model_recipe.py [--model gan] [--recipes "old;hinge;default"] [--seeds 0,1,2]
        [--conditional] [--json out.json]
    python benchmarks/model_recipe.py --model vae --recipes "beta1;beta0.5;default"
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from genlab import data, params
from genlab.evaluate import evaluation
from genlab.models import build_model
from genlab.ops.runs import RunFolder
from genlab.reproducibility import configure
from genlab.train import notebook as experiment
from genlab.train import training

OLD = dict(loss="non_saturating", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, ema_decay=0.0)
NEW = dict(loss="hinge", beta1=0.0, beta2=0.9, ema_decay=0.999)
# every recipe spelled out, so each row stays what it was when the defaults move
GAN_RECIPES: dict[str, dict] = {
    "old": OLD,  # the recipe before hinge / betas (0, 0.9) / EMA became the default
    "hinge": {**OLD, "loss": "hinge"},
    "old+ema": {**OLD, "ema_decay": 0.999},
    "hinge+ema": {**OLD, "loss": "hinge", "ema_decay": 0.999},
    "hinge+ttur1e-4": {**NEW, "lr_g": 1e-4, "lr_d": 4e-4, "ema_decay": 0.0},
    "hinge+ttur1e-4+ema": {**NEW, "lr_g": 1e-4, "lr_d": 4e-4},
    "hinge+ttur1e-4+ema0.99": {**NEW, "lr_g": 1e-4, "lr_d": 4e-4, "ema_decay": 0.99},
    "hinge+ttur1e-4+ema+betas0.5": {**NEW, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.5, "beta2": 0.999},
    "hinge+one-rate2e-4+ema": {**NEW, "lr_g": 2e-4, "lr_d": 2e-4},  # the conditional default
    "hinge+ttur2e-4+ema": {**NEW, "lr_g": 2e-4, "lr_d": 8e-4},  # the unconditional default
    "default": {},  # the constructor's defaults (lr_d resolved by conditioning)
}
VAE_RECIPES: dict[str, dict] = {
    "beta1": {"beta": 1.0},  # the true ELBO as objective, the default before β = 0.25
    "beta0.5": {"beta": 0.5},
    "default": {},
}
RECIPES = {"gan": GAN_RECIPES, "vae": VAE_RECIPES}
COMPARED = {"gan": "old;default", "vae": "beta1;default"}  # --recipes when not given


def run_recipe(model_name: str, name: str, seed: int, conditional: bool, root: Path) -> dict:
    """Train as the training notebook does with the recipe's model, then evaluate as 02 does."""
    run_dir = root / f"{model_name}-{name}-s{seed}{'-cond' if conditional else ''}"
    p = params.typed("train", model=model_name, seed=seed, conditional=conditional, run_dir=str(run_dir))
    run = RunFolder(p.run_dir)
    ds = data.load_dataset(p.dataset)
    spec = data.DataSpec.build(ds, seed=p.seed, val_frac=p.val_frac, holdout_a_frac=p.holdout_a_frac,
                               holdout_b_frac=p.holdout_b_frac, n_train=p.n_train)
    spec.save(run.data_spec)
    training.seed_everything(p.seed)
    model = build_model(model_name, list(ds.data_shape), latent_dim=p.latent_dim, depth=p.depth,
                        arch="mlp", n_classes=ds.n_classes if conditional else 0,
                        **RECIPES[model_name][name])
    dm = experiment.datamodule(ds, spec, run, p)
    t0 = time.perf_counter()
    result, _ = experiment.train(model, dm, run, p)
    train_s = time.perf_counter() - t0
    experiment.publish_model(result, run, p)

    pe = params.typed("evaluate", run_dir=str(run_dir), seed=seed)
    ctx = evaluation.load_context(pe)
    ext = evaluation.make_extractor(ctx, pe)
    numbers = evaluation.headline(evaluation.evaluate(ctx, ext, pe), ext, ctx)
    keys = ("fd", "fd_ci_low", "fd_ci_high", "fd_real_vs_real", "fd_ratio_to_floor")
    row = {"recipe": name, "seed": seed, "conditional": conditional, **{k: numbers[k] for k in keys},
           "train_s": round(train_s, 1)}
    if conditional:
        row["conditional_accuracy"] = numbers.get("conditional_accuracy")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gan", choices=sorted(RECIPES))
    ap.add_argument("--recipes", help="separated by ';' (default: the old recipe and the default), of "
                    + "; ".join(f"{m}: {sorted(r)}" for m, r in RECIPES.items()))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--conditional", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = (args.recipes or COMPARED[args.model]).split(";")
    recipes = RECIPES[args.model]
    unknown = [n for n in names if n not in recipes]
    if unknown:
        ap.error(f"--recipes: unknown {args.model} recipe {unknown[0]!r}; expected names from "
                 f"{sorted(recipes)}")
    configure()  # one thread and the portable kernels, as `genlab run` trains: before any tensor op
    training.quiet_lightning()
    rows = []
    cond = " conditional accuracy |" if args.conditional else ""
    print(f"| recipe | seed | FD [95% CI] | FD / floor | training s |{cond}\n|---|---|---|---|---|"
          f"{'---|' if cond else ''}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in names:
                r = run_recipe(args.model, name, seed, args.conditional, Path(tmp))
                rows.append(r)
                print(f"| {name} | {seed} | {r['fd']:.3g} [{r['fd_ci_low']:.3g}, {r['fd_ci_high']:.3g}] | "
                      f"{r['fd_ratio_to_floor']:.2f} | {r['train_s']:.1f} |"
                      + (f" {r['conditional_accuracy']:.3f} |" if cond else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
