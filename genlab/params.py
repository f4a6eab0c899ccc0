"""Notebook parameters: one declared spec per notebook, checked before anything runs.

Every notebook's `parameters` cell holds plain assignments whose values equal the defaults
declared here (a test keeps the two in step). Values then reach a notebook three ways —
JupyterLab edits, `papermill -p`, `genlab run -p/-f` — and all three end in `validate`, so an
unknown name, a wrong type or an out-of-range value stops with one message naming the
parameter, what was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import yaml


class ParameterError(ValueError):
    """A notebook parameter is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: type | tuple[type, ...]  # accepted types; int is accepted where float is
    doc: str
    choices: tuple | None = None
    low: float | None = None  # inclusive bounds
    high: float | None = None
    optional: bool = False  # None allowed

    def expected(self) -> str:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        text = " or ".join(k.__name__ for k in kinds)
        if self.choices:
            text += f" in {list(self.choices)}"
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            text += f" in [{lo}, {hi}]"
        return text + (" or None" if self.optional else "")

    def check(self, value: Any) -> Any:
        """Return the value (int widened to float where a float is expected) or raise."""
        if value is None:
            if self.optional:
                return None
            self._fail(value)
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, bool) and bool not in kinds:
            self._fail(value)  # bool is an int subclass: True is not a valid epoch count
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if int not in kinds else value
        if not isinstance(value, kinds):
            self._fail(value)
        if isinstance(value, float) and not math.isfinite(value):
            self._fail(value)
        if self.choices is not None and value not in self.choices:
            self._fail(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high
            ):
                self._fail(value)
        return value

    def _fail(self, value: Any) -> None:
        raise ParameterError(
            f"parameter '{self.name}': expected {self.expected()}, got {value!r}"
            f" ({type(value).__name__})"
        )


_COMMON = [
    Param("run_dir", "reports/interactive", str,
          "run folder; relative paths resolve against the project root"),
    Param("seed", 0, int, "seed for splits, initialisation and sampling", low=0, high=2**32 - 1),
]

TRAIN = _COMMON + [
    Param("dataset", "digits", str, "'digits', 'toy', or a path to an .npz file or image folder"),
    Param("model", "vae", str, "generative model: VAE, GAN or DDPM (diffusion)",
          choices=("vae", "gan", "ddpm")),
    Param("conditional", False, bool, "class-conditional model (CVAE, projection-discriminator "
          "GAN, classifier-free-guidance DDPM); needs a labelled dataset"),
    Param("arch", "auto", str, "backbone: 'auto' = MLP for the VAE and GAN, U-Net for the DDPM "
          "on images (MLP on flat data); 'conv' = conv nets / U-Net", choices=("auto", "mlp", "conv")),
    Param("latent_dim", 16, int, "VAE/GAN: latent dimension", low=1, high=1024),
    Param("width", None, int, "hidden width (MLP units / conv base channels); None = the "
          "model's default (VAE/GAN 256, DDPM U-Net 32 / MLP 256)", low=4, high=4096, optional=True),
    Param("depth", 2, int, "VAE/GAN: hidden layers / conv blocks", low=1, high=8),
    Param("max_epochs", 100, int, "training epochs", low=1, high=100_000),
    Param("batch_size", 64, int, "mini-batch size", low=1, high=65_536),
    Param("lr", None, float, "learning rate; None = the model's default (GAN: the generator's; "
          "the discriminator's is 4x it, or equal when conditional)", low=1e-7, high=1.0,
          optional=True),
    Param("timesteps", 1000, int, "DDPM: diffusion steps T", low=2, high=100_000),
    Param("schedule", "cosine", str, "DDPM: noise schedule", choices=("linear", "cosine")),
    Param("ema_decay", 0.999, float, "DDPM: decay of the weight average that samples",
          low=0.0, high=0.99999),
    Param("sampler", "ddim", str, "DDPM: the reports' sampler: 'ddim' (deterministic, "
          "sampling_steps) or 'ddpm' (ancestral)", choices=("ddim", "ddpm")),
    Param("sampling_steps", None, int, "DDPM: sampler steps; None = 50 for ddim, T for ddpm",
          low=1, high=100_000, optional=True),
    Param("guidance_scale", 2.0, float, "conditional DDPM: classifier-free guidance scale w "
          "(0 = unconditional, 1 = conditional, > 1 = guided)", low=0.0, high=50.0),
    Param("val_frac", 0.1, float, "share of records in the val pool", low=0.0, high=0.9),
    Param("holdout_a_frac", 0.2, float, "share in holdout_a (audit non-members, drift reference)",
          low=0.0, high=0.9),
    Param("holdout_b_frac", 0.2, float, "share in holdout_b (reference population, production)",
          low=0.0, high=0.9),
    Param("n_train", None, int, "cap on training records (members); None = all that remain",
          low=1, optional=True),
    Param("early_stopping_patience", 0, int, "epochs without val improvement; 0 = off", low=0),
    Param("checkpoint_every_n_epochs", 10, int, "write artifacts/checkpoints/last.ckpt every k "
          "epochs and after the last one (an interrupted run resumes from it, repeating < k "
          "epochs)", low=1, high=100_000),
    Param("resume_from", None, str, "checkpoint to resume an interrupted training from",
          optional=True),
    Param("init_from", None, str, "checkpoint whose weights start a fine-tuning", optional=True),
    Param("accelerator", "cpu", str, "Lightning accelerator (cpu, gpu, auto, ...)"),
    Param("devices", 1, (int, str), "Lightning devices (a count or 'auto')"),
    Param("precision", "32-true", str, "Lightning precision (32-true, bf16-mixed, ...)"),
    Param("strategy", "auto", str, "Lightning strategy (auto, ddp_notebook, ...)"),
    Param("dp", False, bool, "train with DP-SGD (Opacus, Poisson sampling; the VAE on images, "
          "the GAN's discriminator, the DDPM's denoiser)"),
    Param("target_epsilon", 8.0, float, "DP: ε the noise is calibrated to reach after max_epochs",
          low=0.01, high=1000.0),
    Param("target_delta", 1e-5, float, "DP: δ of the guarantee (well below 1/n)", low=1e-12,
          high=0.1),
    Param("max_grad_norm", 1.0, float, "DP: per-sample gradient clipping norm", low=1e-6,
          high=1e6),
    Param("canaries", 0, int, "crafted outlier canaries, each trained on with probability 1/2 "
          "(bits in artifacts/canaries.json; the one-run privacy audit reads them)", low=0,
          high=100_000),
    Param("screen", False, bool, "screen the members before training (cleanlab label issues, "
          "IsolationForest outliers, near duplicates) and show the flags in the data-quality "
          "table; nothing is dropped"),
]

NOTEBOOK_PARAMS: dict[str, list[Param]] = {"train": TRAIN}

# Training parameters that only some models read: a non-default value with another model is a
# mistake worth a message before anything runs, not a silently ignored setting.
MODEL_ONLY = {
    "latent_dim": ("vae", "gan"), "depth": ("vae", "gan"),
    "timesteps": ("ddpm",), "schedule": ("ddpm",), "ema_decay": ("ddpm",),
    "sampler": ("ddpm",), "sampling_steps": ("ddpm",), "guidance_scale": ("ddpm",),
}
_TRAIN_DEFAULTS = {p.name: p.default for p in TRAIN}


def check_train(p: Mapping[str, Any]) -> None:
    """Cross-parameter checks of 01_train's (validated) parameters that need no data."""
    for name, kinds in MODEL_ONLY.items():
        if p[name] != _TRAIN_DEFAULTS[name] and p["model"] not in kinds:
            raise ParameterError(
                f"parameter '{name}' applies to model {' / '.join(kinds)} only, got {name}={p[name]!r} "
                f"with model={p['model']!r}")
    if p["guidance_scale"] != _TRAIN_DEFAULTS["guidance_scale"] and not p["conditional"]:
        raise ParameterError(
            f"parameter 'guidance_scale' applies to conditional=True only, got {p['guidance_scale']!r}")


PRIVACY_AUDIT = _COMMON + [
    Param("n_audit", None, int, "scored members and as many holdout_a non-members; None = the "
          "smaller pool's size", low=4, optional=True),
    Param("n_generated", 2000, int, "generated samples for the black-box and memorisation tests",
          low=10, high=1_000_000),
    Param("mc_samples", 8, int, "ELBO / denoising attacks: Monte-Carlo draws of z or ε per "
          "record", low=1, high=1000),
    Param("domias_dims", 5, int, "DOMIAS: PCA dimensions of the density estimates", low=1, high=64),
    Param("ball_quantile", 0.1, float, "MC ε-ball attack: radius = this quantile of the reference "
          "records' distances to their nearest sample", low=1e-4, high=0.9999),
    Param("samples", None, str, "an .npz (array 'x', optional 'y') of samples from any "
          "generator, audited black-box instead of the run's model (white-box parts: null)",
          optional=True),
    Param("lira_shadows", 4, int, "online LiRA: shadow models replicating the audited training "
          "(its data size, batch size, epochs, DP), each costing one training; 0 = off, else >= 4",
          low=0, high=256),
    Param("confidence", 0.95, float, "confidence of intervals and ε lower bounds", low=0.5,
          high=0.9999),
    Param("audit_delta", 1e-5, float, "δ of the ε lower bounds (use the training's target_delta "
          "to compare with the accountant)", low=0.0, high=0.1),
    Param("canary_guess_frac", 0.5, float, "share of canaries guessed (top half of them 'in', "
          "bottom half 'out', the rest abstain); fixed in advance, not tuned", low=0.01, high=1.0),
    Param("ct_cells", 5, int, "data-copying test C_T: k-means cells on the members", low=1,
          high=1000),
    Param("near_dup_quantile", 0.01, float, "near duplicate: closer to a member than this share "
          "of holdout_a records are", low=1e-4, high=0.5),
    Param("verdict_auc_elevated", 0.55, float, "verdict: best-attack AUC (CI low > 0.5) at which "
          "leakage is 'elevated'", low=0.5, high=1.0),
    Param("verdict_auc_high", 0.65, float, "verdict: best-attack AUC at which leakage is 'high'",
          low=0.5, high=1.0),
    Param("verdict_share_high", 0.6, float, "verdict: share of samples closer to members at which "
          "leakage is 'high'", low=0.5, high=1.0),
    Param("verdict_min_distinct_nearest", 30, int, "verdict: the share of samples closer to "
          "members counts only when the samples are nearest to at least this many distinct "
          "records (samples of a model that repeats itself are not independent)", low=1,
          high=100_000),
    Param("verdict_ct_copying", -3.0, float, "verdict: C_T at or below which samples copy "
          "('elevated')", low=-1000.0, high=0.0),
]
NOTEBOOK_PARAMS["privacy_audit"] = PRIVACY_AUDIT

EVALUATE = _COMMON + [
    Param("feature_extractor", "auto", str, "feature space: 'auto' (the classifier when the "
          "data have labels, else raw pixels; the report says which), an offline 'classifier' "
          "trained on the members, raw 'pixels' (no labels needed), or 'inception' (needs "
          "torch-fidelity and cached weights)", choices=("auto", "classifier", "pixels", "inception")),
    Param("n_samples", None, int, "generated records to evaluate; None = as many as holdout_a "
          "(the real-vs-real floor's n)", low=10, high=1_000_000, optional=True),
    Param("samples", None, str, "an .npz (array 'x', optional 'y') of samples from any "
          "generator, evaluated instead of the run's model", optional=True),
    Param("run_dirs", None, (str, list), "several run folders sharing one data fingerprint "
          "(a list, or 'a,b'): the first is narrated as run_dir is, all are compared in one "
          "table written to reports/compare-<runs>/; None = only run_dir", optional=True),
    Param("subsample_frac", 0.5, float, "CI subsample size m as a share of the smaller set",
          low=0.05, high=1.0),
    Param("n_draws", 20, int, "seeded subsamples per confidence interval", low=2, high=10_000),
    Param("ci_level", 0.95, float, "confidence level of the intervals", low=0.5, high=0.999),
    Param("nearest_k", 5, int, "k of precision / recall / density / coverage", low=1, high=100),
    Param("iw_samples", 64, int, "importance samples of the VAE likelihood bound", low=1,
          high=10_000),
    Param("min_slice", 20, int, "records per class below which a slice is not judged", low=3,
          high=100_000),
]
NOTEBOOK_PARAMS["evaluate"] = EVALUATE

_DRIFT_REPS = ("pixels", "pca", "latent", "score", "softmax", "features")
DRIFT_STUDY = _COMMON + [
    Param("full", False, bool, "full setting: >= 100 trials per cell, every shift intensity, "
          "delta in {0.1, 0.5, 1}, n up to the pools' size, 200 monitor streams"),
    Param("alpha", 0.05, float, "significance level of every test", low=0.001, high=0.5),
    Param("trials", 20, int, "trials per study cell (full: at least 100; no-shift cells: at "
          "least 50 / 200)", low=5, high=100_000),
    Param("n_permutations", 100, int, "MMD permutations (p = (b+1)/(B+1))", low=19, high=100_000),
    Param("pca_components", 10, int, "PCA representation size (fitted on members)", low=1,
          high=4096),
    Param("arl0_target", 200, int, "stream monitor: target mean records to a false alarm",
          low=20, high=100_000),
    Param("monitor_window", 50, int, "windowed MMD monitor: window length", low=5, high=10_000),
    Param("monitor_streams", 200, int, "no-drift streams measuring ARL0 (at least 50; 200 "
          "puts its CI at about +-14% of the target)",
          low=10, high=100_000),
    Param("monitor_representation", "pca", str, "representation of the windowed MMD monitor",
          choices=_DRIFT_REPS),
    Param("drift_start", 100, int, "monitor: step at which drift begins", low=1, high=1_000_000),
    Param("retrain_detector", "mmd", str, "retraining rule: test",
          choices=("mmd", "ks_bonferroni", "ks_fdr", "c2st", "chi2")),
    Param("retrain_representation", "pca", str, "retraining rule: representation",
          choices=_DRIFT_REPS),
    Param("retrain_threshold", 0.01, float, "retraining rule: p-value at or below which to "
          "retrain", low=1e-6, high=0.5),
    Param("retrain_min_window", 50, int, "retraining rule: production records needed", low=10,
          high=1_000_000),
    Param("retrain_shift", "transform:medium", str, "shift of the retraining scenario "
          "(kind[:intensity], see genlab.drift_study.shifts)"),
    Param("retrain_epochs", 30, int, "fine-tuning epochs after drift", low=1, high=100_000),
    Param("production", None, str, "your own production data (.npz / image folder) to test "
          "against the reference", optional=True),
]
NOTEBOOK_PARAMS["drift_study"] = DRIFT_STUDY

COST_LATENCY = _COMMON + [
    Param("full", False, bool, "full setting: distillation from DDIM-64 with 1500 iterations per "
          "stage, 3000 decoder-student iterations, throughput at every power of 2 up to 256, "
          "100 latency rounds"),
    Param("variants", None, (str, list), "variants to build and compare (a list, or 'a,b'); "
          "None = every one that applies to the model (see genlab.cost_latency.variants)",
          optional=True),
    Param("distill_iters", 150, int, "DDPM: progressive-distillation iterations per halving "
          "stage (full: at least 1500)", low=1, high=1_000_000),
    Param("start_steps", 16, int, "DDPM: DDIM steps of the first teacher; each stage halves "
          "them down to 4 (full: 64)", low=8, high=100_000),
    Param("decoder_iters", 600, int, "VAE/GAN: iterations of the student decoder (full: at "
          "least 3000)", low=1, high=1_000_000),
    Param("student_width_ratio", 0.25, float, "VAE/GAN: student width as a share of the "
          "teacher's", low=0.01, high=1.0),
    Param("feature_extractor", "classifier", str, "feature space of the quality rows, as in "
          "02_evaluate", choices=("classifier", "pixels", "inception")),
    Param("subsample_frac", 0.5, float, "CI subsample size m as a share of n (as in 02_evaluate)",
          low=0.05, high=1.0),
    Param("n_draws", 20, int, "seeded subsamples per confidence interval", low=2, high=10_000),
    Param("ci_level", 0.95, float, "confidence level of the intervals", low=0.5, high=0.999),
    Param("latency_reps", 30, int, "latency rounds at batch 1 (full: at least 100)", low=3,
          high=100_000),
    Param("latency_budget_s", 6.0, float, "seconds after which latency rounds stop (at least 3 "
          "rounds) per thread setting", low=0.1, high=3600.0),
    Param("timings", True, bool, "measure wall-clock latency, throughput and memory (False: "
          "cost proxy and quality only)"),
]
NOTEBOOK_PARAMS["cost_latency"] = COST_LATENCY

OPERATIONS = _COMMON + [
    Param("model_name", "genlab-model", str, "registry model name the scenario registers under "
          "(in a temporary registry of its own, never the team's)"),
    Param("drift_shift", "knockout", str, "the production shift (kind[:intensity], see "
          "genlab.drift_study.shifts)"),
    Param("shift_at_request", 100, int, "production request at which the shift begins", low=1,
          high=100_000),
    Param("stream_requests", 400, int, "production requests monitored (one record each)",
          low=20, high=1_000_000),
    Param("monitor_arl0", 500, int, "production monitor: target requests to a false alarm",
          low=20, high=100_000),
    Param("production_window", 50, int, "production monitor: windowed-MMD window", low=5,
          high=10_000),
    Param("arl0_streams", 100, int, "no-drift streams measuring ARL0 on the other pool",
          low=10, high=100_000),
    Param("finetune_epochs", 30, int, "fine-tuning epochs from the champion after the alarm",
          low=1, high=100_000),
    Param("canary_share", 0.2, float, "share of requests the candidate answers", low=0.01,
          high=0.99),
    Param("canary_requests", 300, int, "requests before the canary decision", low=10,
          high=1_000_000),
    Param("request_size", 16, int, "records per request", low=1, high=1024),
    Param("online_arl0", 1000, int, "served-output monitor: target records to a false alarm",
          low=20, high=100_000),
    Param("canary_alpha", 0.05, float, "level of the canary tests", low=0.001, high=0.49),
    Param("canary_margin", 0.05, float, "canary non-inferiority margin", low=0.0, high=0.5),
    Param("broken_noise", 2.0, float, "broken candidate: weight noise in units of each "
          "tensor's standard deviation", low=0.0, high=100.0),
]
NOTEBOOK_PARAMS["operations"] = OPERATIONS

SECURITY = _COMMON + [
    Param("full", False, bool, "full setting: poison rates 0.005/0.02/0.1, the run's own epochs, "
          "5 loop generations, 50 drift batches per budget"),
    Param("poison_rates", None, (list, str, float), "poison rates (shares of the members, each in (0, 0.5]); "
          "None = [0.02, 0.1] (full: [0.005, 0.02, 0.1])", optional=True),
    Param("epochs", None, int, "epochs of every model the study trains (clean, poisoned, "
          "screened, loop generations); None = 30 (full: the run's max_epochs)", low=1,
          high=100_000, optional=True),
    Param("target_class", 0, int, "backdoor: the class triggered records are relabelled to "
          "(conditional models)", low=0),
    Param("duplicate_sources", 10, int, "near-duplicate poison: members that are copied",
          low=1, high=10_000),
    Param("n_samples", None, int, "samples drawn per model; None = as many as holdout_b",
          low=20, high=1_000_000, optional=True),
    Param("n_draws", 10, int, "seeded subsamples per FD/recall interval", low=2, high=10_000),
    Param("adversarial_eps", 0.1, float, "the L-infinity budget the headline reports attacks "
          "at (one of the grid 0, 0.025, 0.05, 0.1, 0.2, 0.3 of the [0, 1] range)",
          choices=(0.0, 0.025, 0.05, 0.1, 0.2, 0.3)),
    Param("n_adversarial", 100, int, "records attacked per budget", low=10, high=100_000),
    Param("pgd_steps", 20, int, "PGD steps", low=1, high=10_000),
    Param("alpha", 0.05, float, "significance level of the drift tests", low=0.001, high=0.5),
    Param("drift_batch", 100, int, "production batch size of the drift-evasion test", low=10,
          high=100_000),
    Param("drift_trials", 10, int, "production batches per budget (full: at least 50)", low=2,
          high=10_000),
    Param("n_permutations", 100, int, "MMD permutations", low=19, high=100_000),
    Param("evasion_max_detection", 0.5, float, "a budget evades the drift tests when both flag "
          "at most this share of the batches", low=0.0, high=1.0),
    Param("generations", 3, int, "feedback loops: generations after generation 0 (full: 5)",
          low=1, high=100),
]
NOTEBOOK_PARAMS["security"] = SECURITY

# Names a kernel defines by itself; everything else at top level after the parameters cell is
# a parameter (or a typo of one).
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def spec(notebook: str) -> dict[str, Param]:
    if notebook not in NOTEBOOK_PARAMS:
        raise ParameterError(
            f"unknown notebook {notebook!r}; expected one of {sorted(NOTEBOOK_PARAMS)}"
        )
    return {p.name: p for p in NOTEBOOK_PARAMS[notebook]}


def defaults(notebook: str) -> dict[str, Any]:
    return {name: p.default for name, p in spec(notebook).items()}


def validate(notebook: str, values: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Check `values` against the notebook's spec; return the full, checked parameter dict.

    With `partial=True` missing names take their defaults (the pipeline's case); otherwise a
    missing name is an error too (a notebook whose parameters cell lost a line)."""
    known = spec(notebook)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {unknown} for notebook '{notebook}'; "
            f"known: {sorted(known)}"
        )
    out = {}
    for name, p in known.items():
        if name in values:
            out[name] = p.check(values[name])
        elif partial:
            out[name] = p.default
        else:
            raise ParameterError(f"parameter '{name}' is missing from notebook '{notebook}'")
    return out


def from_namespace(notebook: str, namespace: Mapping[str, Any]) -> "Params":
    """Validate the parameters a notebook kernel holds right after the parameters cell; return
    them as the notebook's typed parameter object.

    Collects every top-level name that is not private, not the kernel's own and not a module,
    function or class: a misspelt `-p max_epoch 3` from papermill is then caught here."""
    found = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _KERNEL_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, type, Params))
    }
    return PARAMS[notebook](**validate(notebook, found))


# --------------------------------------------------------------------------- typed parameters
class Params:
    """Base of the typed, frozen parameter objects generated from the specs above (one class per
    notebook, one field per declared parameter, same names and defaults). Constructing one checks
    every value as `validate` does; `p.max_epochs` reads a value. Read-only mapping methods
    (`p["seed"]`, `keys`, `get`, `dict(p)`) serve code that records all parameters (provenance)."""

    notebook: ClassVar[str]

    def __post_init__(self) -> None:
        known = spec(self.notebook)
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, known[f.name].check(getattr(self, f.name)))

    def replace(self, **changes: Any) -> "Params":
        """A copy with `changes` (checked; an unknown name is a ParameterError)."""
        validate(self.notebook, changes, partial=True)
        return dataclasses.replace(self, **changes)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, name: str) -> Any:
        if name not in spec(self.notebook):
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in spec(self.notebook) else default

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}


def _params_class(notebook: str, name: str) -> type[Params]:
    def annotation(p: Param) -> Any:
        kinds = p.kind if isinstance(p.kind, tuple) else (p.kind,)
        return kinds[0] if len(kinds) == 1 and not p.optional else Any

    cls = dataclasses.make_dataclass(
        name, [(p.name, annotation(p), dataclasses.field(default=p.default))
               for p in NOTEBOOK_PARAMS[notebook]],
        bases=(Params,), frozen=True, namespace={"notebook": notebook})
    cls.__doc__ = f"The parameters of the {notebook!r} notebook (see `genlab params {notebook}`)."
    cls.__module__ = __name__
    return cls


TrainParams = _params_class("train", "TrainParams")
EvaluateParams = _params_class("evaluate", "EvaluateParams")
PrivacyAuditParams = _params_class("privacy_audit", "PrivacyAuditParams")
DriftStudyParams = _params_class("drift_study", "DriftStudyParams")
CostLatencyParams = _params_class("cost_latency", "CostLatencyParams")
OperationsParams = _params_class("operations", "OperationsParams")
SecurityParams = _params_class("security", "SecurityParams")
PARAMS: dict[str, type[Params]] = {"train": TrainParams, "evaluate": EvaluateParams,
                                   "privacy_audit": PrivacyAuditParams,
                                   "drift_study": DriftStudyParams,
                                   "cost_latency": CostLatencyParams,
                                   "operations": OperationsParams, "security": SecurityParams}


def typed(notebook: str, values: Mapping[str, Any] | None = None, **kw: Any) -> Params:
    """The notebook's typed parameters from `values` and `kw`, defaults for the rest; the checks
    and messages of `validate` (unknown names included)."""
    return PARAMS[notebook](**validate(notebook, {**(values or {}), **kw}, partial=True))


def parse_assignment(text: str) -> tuple[str, Any, str]:
    """`key=value` from the command line → (key, value, raw text).

    The value is read as YAML scalars are (20 → int, 0.5 → float, true → bool, null/None → None);
    anything YAML reads as a container, or cannot read, stays the literal text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ParameterError(f"-p expects key=value with a parameter name as key, got {text!r}")
    if raw.strip() == "None":
        return key, None, raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or (value is None and raw.strip() == ""):
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as text
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value, raw


def restore_text(param: Param | None, value: Any, raw: str) -> Any:
    """A str-typed parameter keeps its literal text: `-p dataset=2024` names a file, not 2024."""
    if param is not None and param.kind is str and value is not None and not isinstance(value, str):
        return raw
    return value
