"""Glue between the evaluation notebook's parameters and the metric library.

`02_evaluate.ipynb` narrates; this module decides *what is compared with what*:

- the **reference** is `holdout_b` (real, never trained on): every row is "candidate vs
  holdout_b" — FD, KID, precision/recall/density/coverage, C2ST (real `holdout_b` vs candidate)
  and the utility test set;
- rows: the **model** (its samples, n = |holdout_a| by default), the **real-vs-real floor**
  (`holdout_a`, the same n, real data the generator never saw: what "good" looks like) and a
  trivial **baseline** (per-pixel Gaussian noise with the members' mean and std);
- authenticity is measured against the `members` (the data the generator saw);
- every CI metric is computed at the same subsample size m = subsample_frac × n for all rows,
  so rows are comparable; FD at full n and FD∞ stand beside it;
- TSTR uses the records' *own* labels only (a conditional model's requested classes, external
  samples' `y`, real records' true labels); samples without labels get null with a reason and
  the pseudo-label diagnostic (evaluation classifier's predictions as labels), always read
  against the noise row's value; every ECE (TSTR, TRTR) is taken on test subsets of one size;
- the headline carries, beside every fidelity metric, its floor (`<metric>_real_vs_real`) and
  noise row (`<metric>_baseline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from genlab import data as D
from genlab.evaluate import features as F
from genlab.evaluate import sanity
from genlab.evaluate import metrics as M
from genlab.evaluate import classifier_metrics as U
from genlab.models import is_conditional
from genlab.models.scoring import vae_bounds
from genlab.numerics import single_threaded, sq_dists
from genlab.ops.open_run import open_run
from genlab.params import EvaluateParams
from genlab.ops.runs import RunFolder, resolve_input

HEADLINE_METRICS = ("fd", "kid", "inception_score", "precision", "recall", "density",
                    "coverage", "authenticity", "c2st_auc", "tstr_accuracy", "tstr_ece",
                    "conditional_accuracy")
# label sources whose labels say which class a record should be: a conditional model's requested
# classes, or the true classes of real records (the floor row's conditional accuracy is then the
# extractor's own accuracy on real records never trained on)
INTENDED_LABELS = ("requested labels", "true labels")
# the metrics every report sets against the real-vs-real floor and the noise baseline, in the
# headline JSON as `<metric>_real_vs_real` and `<metric>_baseline`
SANITY_METRICS = ("fd", "fd_infinity", "kid", "inception_score", "precision", "recall", "density",
                  "coverage", "authenticity", "c2st_auc")


@dataclass
class Candidate:
    """One row's records: raw x, features, class probabilities and labels (with their origin)."""

    name: str
    x: np.ndarray
    f: np.ndarray
    proba: np.ndarray | None
    labels: np.ndarray | None
    label_source: str


@dataclass
class Context:
    run: RunFolder
    ds: D.Dataset
    spec: D.DataSpec
    model: Any  # None when external samples are evaluated without a checkpoint
    samples_source: str


def load_context(p: EvaluateParams) -> Context:
    """The run folder's data (checked against its spec) and model (or the external samples')."""
    opened = open_run(p, model=True if p.samples is None else None)  # else: the likelihood rows
    source = (f"model.ckpt ({opened.model.model_kind})" if p.samples is None
              else f"external samples {p.samples}")
    return Context(opened.run, opened.ds, opened.spec, opened.model, source)


def extractor_kind(ctx: Context, p: EvaluateParams) -> tuple[str, str]:
    """(the feature space to use, why): 'auto' takes the classifier when the data have labels
    and raw pixels otherwise, so a user's unlabelled images evaluate end to end."""
    if p.feature_extractor != "auto":
        return p.feature_extractor, "chosen by the feature_extractor parameter"
    if ctx.ds.y is None:
        return "pixels", (f"auto: data set {ctx.ds.name!r} has no labels, so no classifier can be "
                          f"trained; raw pixels need none (class slices, conditional accuracy "
                          f"and TSTR are null)")
    return "classifier", f"auto: data set {ctx.ds.name!r} has labels"


def make_extractor(ctx: Context, p: EvaluateParams):
    kind = extractor_kind(ctx, p)[0]
    if kind == "classifier":
        return F.load_or_train_extractor(ctx.run, ctx.ds, ctx.spec, seed=p.seed)
    if kind == "pixels":
        return F.PixelFeatures(ctx.ds.data_shape)
    return F.InceptionFeatures(ctx.ds.data_shape)


def load_samples(path: str, data_shape) -> tuple[np.ndarray, np.ndarray | None]:
    """External samples: an .npz with `x` (N×… in the run's record shape, in [0, 1] for images)."""
    ext = D.load_dataset(resolve_input(path)) if str(path).endswith(".npz") else None
    if ext is None:
        raise D.DataError(f"samples: expected an .npz file with array 'x', got {path!r}")
    if tuple(ext.data_shape) != tuple(data_shape):
        raise D.DataError(f"samples {path!r}: expected records of shape {tuple(data_shape)} "
                          f"like the run's data, got {tuple(ext.data_shape)}")
    return ext.x, ext.y


def noise_baseline(members_x: np.ndarray, n: int, seed: int, is_image: bool) -> np.ndarray:
    """Per-pixel Gaussian noise with the members' mean and std (clipped to [0, 1] for images)."""
    rng = np.random.default_rng([seed, 7])
    mu, sd = members_x.mean(0), members_x.std(0)
    x = mu + sd * rng.standard_normal((n, *members_x.shape[1:]))
    return (np.clip(x, 0, 1) if is_image else x).astype(np.float32)


GMM_COMPONENTS, GMM_PCA_DIMS = 40, 20
# the ranges the normal subsample intervals are clipped to (see metrics.subsample_ci)
UNIT, NON_NEGATIVE = (0.0, 1.0), (0.0, None)


def gmm_baseline(members_x: np.ndarray, n: int, seed: int, is_image: bool) -> np.ndarray:
    """A classical generator to beat: scikit-learn's GaussianMixture (40 full-covariance
    components) on a 20-d PCA of the members, sampled and mapped back (the recipe of
    scikit-learn's digits density-estimation example). A deep model that does not beat it on
    these data has not earned its cost; fewer components / dimensions on small data."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    flat = members_x.reshape(len(members_x), -1).astype(np.float64)
    dims = max(1, min(GMM_PCA_DIMS, flat.shape[1], len(flat) - 1))
    k = max(1, min(GMM_COMPONENTS, len(flat) // (2 * dims)))
    pca = PCA(n_components=dims, whiten=False, random_state=seed).fit(flat)
    gmm = GaussianMixture(n_components=k, covariance_type="full", random_state=seed,
                          reg_covar=1e-4).fit(pca.transform(flat))
    gmm.random_state = np.random.RandomState([seed, 8])
    z = gmm.sample(n)[0][np.random.default_rng([seed, 9]).permutation(n)]  # sample() groups by component
    x = pca.inverse_transform(z).reshape(n, *members_x.shape[1:])
    return (np.clip(x, 0, 1) if is_image else x).astype(np.float32)


def candidates(ctx: Context, ext, p: EvaluateParams, *, references: bool = True
               ) -> tuple[list[Candidate], Candidate]:
    """(rows: model, real-vs-real floor, noise baseline, GMM baseline; the real reference
    holdout_b).

    With ``references=False`` only the model row (the comparison of several runs computes the
    floor and baseline rows once, for the first run)."""
    ds, spec = ctx.ds, ctx.spec
    a, b, mem = (spec.pool(k) for k in ("holdout_a", "holdout_b", "members"))
    n = p.n_samples or len(a)
    has_proba = ext.n_classes is not None

    def make(name, x, true_y=None, requested=None):
        f, proba = ext.features_and_proba(x) if has_proba else (ext.features(x), None)
        if requested is not None:
            labels, src = np.asarray(requested, dtype=np.int64), "requested labels"
        elif true_y is not None:
            labels, src = true_y, "true labels"
        elif proba is not None:
            labels, src = proba.argmax(1), "extractor pseudo-labels"
        else:
            labels, src = None, "none"
        return Candidate(name, x, f, proba, labels, src)

    if p.samples is None:
        # a conditional model is asked for classes drawn in the members' shares; an unconditional
        # generator is called without labels (it need not accept them)
        wanted = ({"labels": ctx.model.sample_labels(n, seed=p.seed)}
                  if is_conditional(ctx.model) else {})
        gx = ctx.model.sample(n, seed=p.seed, **wanted).detach().cpu().numpy()
        requested = wanted["labels"].numpy() if wanted else None
    else:
        gx, requested = load_samples(p.samples, ds.data_shape)  # an .npz 'y': the requested classes
    rows = [make("model" if p.samples is None else "samples", gx, requested=requested)]
    if references:
        rows += [
            make("real (holdout_a)", ds.x[a], ds.y[a] if ds.y is not None else None),
            make("baseline (noise)", noise_baseline(ds.x[mem], len(gx), p.seed, ds.is_image)),
            make("baseline (GMM)", gmm_baseline(ds.x[mem], len(gx), p.seed, ds.is_image)),
        ]
    ref = make("reference (holdout_b)", ds.x[b], ds.y[b] if ds.y is not None else None)
    return rows, ref


@dataclass
class Evaluation:
    rows: list[dict]                 # one per candidate: metric, CI, m
    fd_curves: dict[str, dict]       # FD(N) curves and FD∞ per row
    reliability: list[dict]
    shares: dict[str, list[float]]   # class shares: reference and each row
    slices: list[dict]
    likelihood: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _subsample_size(c: Candidate, ref: Candidate, frac: float) -> int:
    return max(2, int(round(frac * min(len(c.f), len(ref.f)))))


def row_metrics(c: Candidate, ref: Candidate, members_f: np.ndarray, ref_x_y,
                n_classes: int | None, p: EvaluateParams) -> tuple[dict, dict]:
    """Every metric for one candidate vs the reference, each at subsample size m with a CI."""
    m = _subsample_size(c, ref, p.subsample_frac)
    kw = dict(draws=p.n_draws, seed=p.seed, level=p.ci_level)
    out: dict[str, Any] = {"row": c.name, "n": len(c.f), "m": m}

    def put(name, est: M.Estimate):
        out.update(est.as_dict(name))

    put("fd", M.subsample_ci(M.frechet_distance, [c.f, ref.f], [m, m], **kw, bounds=NON_NEGATIVE))
    out["fd_full_n"] = M.frechet_distance(c.f, ref.f)
    curve = M.fd_infinity(c.f, ref.f, draws=max(3, p.n_draws // 4), seed=p.seed,
                          level=p.ci_level, ci_draws=max(20, p.n_draws))
    out.update({"fd_infinity": curve["fd_infinity"], "fd_infinity_ci_low": curve["ci_low"],
                "fd_infinity_ci_high": curve["ci_high"]})
    put("kid", M.subsample_ci(M.mmd2_poly, [c.f, ref.f], [m, m], **kw))
    if c.proba is not None:
        put("inception_score", M.subsample_ci(M.inception_score, [c.proba], [m], **kw,
                                              bounds=(1.0, None)))
    else:
        out["inception_score"] = None
        out["inception_score_na_reason"] = "no classifier head (feature_extractor='pixels')"
    k = p.nearest_k
    if m <= k:
        for name in ("precision", "recall", "density", "coverage"):
            out[name] = None
            out[f"{name}_na_reason"] = f"subsample size m={m} must exceed nearest_k={k}"
    else:
        for name in ("precision", "recall", "density", "coverage"):
            put(name, M.subsample_ci(lambda r, f, name=name: M.prdc(r, f, k)[name],
                                     [ref.f, c.f], [m, m], **kw,
                                     bounds=NON_NEGATIVE if name == "density" else UNIT))
    put("authenticity", M.subsample_ci(lambda s: M.authenticity(members_f, s), [c.f], [m], **kw,
                                       bounds=UNIT))
    put("c2st_auc", M.subsample_ci(lambda r, f: U.c2st_auc(r, f, seed=p.seed),
                                   [ref.f, c.f], [m, m], **kw, bounds=UNIT))
    if c.proba is not None and c.label_source in INTENDED_LABELS:
        put("conditional_accuracy", M.subsample_ci(U.accuracy, [(c.proba, c.labels)], [m], **kw,
                                                   bounds=UNIT))
    else:
        out["conditional_accuracy"] = None
        out["conditional_accuracy_na_reason"] = (
            "no classifier head (feature_extractor='pixels')" if c.proba is None
            else f"the records have no intended classes ({c.label_source})")
    extra: dict[str, Any] = {"curve": curve}
    out.update(utility_metrics(c, ref_x_y, n_classes, _subsample_size(ref, ref, p.subsample_frac),
                               p, extra))
    return out, extra


TSTR_KEYS = ("tstr_accuracy", "tstr_ece")
PSEUDO_KEYS = ("tstr_pseudo_label_accuracy", "tstr_pseudo_label_ece")


def utility_estimates(proba: np.ndarray, test_y: np.ndarray, mt: int, p: EvaluateParams,
                      prefix: str) -> dict[str, Any]:
    """`<prefix>_accuracy` and `<prefix>_ece` with CIs, both on seeded subsets of mt test records.

    Every utility row (TSTR, its pseudo-label diagnostic, TRTR) goes through here with the same
    mt and seed, hence the same test subsets: ECE is biased upward at small n, so two ECEs are only
    comparable at one n."""
    kw = dict(draws=p.n_draws, seed=p.seed, level=p.ci_level)
    out = M.subsample_ci(U.accuracy, [(proba, test_y)], [mt], **kw,
                         bounds=UNIT).as_dict(f"{prefix}_accuracy")
    out.update(M.subsample_ci(U.ece, [(proba, test_y)], [mt], **kw,
                              bounds=UNIT).as_dict(f"{prefix}_ece"))
    out[f"{prefix}_ece_n"] = mt
    return out


def _no_own_labels_reason(c: Candidate) -> str:
    if c.name == "model":
        return ("unconditional model: samples carry no labels of their own; "
                "see tstr_pseudo_label_accuracy")
    if c.name == "samples":
        return ("external samples without 'y': they carry no labels of their own; "
                "see tstr_pseudo_label_accuracy")
    return f"{c.name}: the records carry no labels of their own; see tstr_pseudo_label_accuracy"


def utility_metrics(c: Candidate, ref_x_y, n_classes: int | None, mt: int, p: EvaluateParams,
                    extra: dict) -> dict[str, Any]:
    """TSTR on the records' own labels, and the pseudo-label diagnostic.

    - `tstr_accuracy`/`tstr_ece`: a classifier trained on the records with *their own* labels
      (a conditional model's requested classes, external samples' `y`, real records' true
      labels), tested on holdout_b. Records without labels of their own get null with a reason:
      labelling them with the evaluation classifier would distil that classifier (per-pixel
      noise labelled so scores far above chance).
    - `tstr_pseudo_label_*`: the same classifier trained on the records labelled by the
      evaluation classifier's predictions. A diagnostic only: read it against the noise row.
    """
    out: dict[str, Any] = {}

    def na(names, reason):
        for name in names:
            out[name] = None
            out[f"{name}_na_reason"] = reason

    test_x, test_y = ref_x_y
    if n_classes is None or test_y is None:
        na(TSTR_KEYS + PSEUDO_KEYS, "no labelled real test data (the data set has no labels)")
        return out

    def fit(labels, prefix, names):
        try:
            proba = U.fit_classifier(c.x, labels, n_classes)(test_x)
        except M.MetricInputError as e:
            na(names, str(e)[:150])
            return None
        out.update(utility_estimates(proba, test_y, mt, p, prefix))
        return proba

    if c.labels is not None and c.label_source in INTENDED_LABELS:
        proba = fit(c.labels, "tstr", TSTR_KEYS)
        if proba is not None:
            extra["test_proba"] = proba
    else:
        na(TSTR_KEYS, _no_own_labels_reason(c))
    if c.proba is not None:
        fit(c.proba.argmax(1), "tstr_pseudo_label", PSEUDO_KEYS)
    else:
        na(PSEUDO_KEYS, "no classifier head (feature_extractor='pixels')")
    return out


SLICE_DRAWS = 5


def class_slices(c: Candidate, ref: Candidate, n_classes: int, p: EvaluateParams,
                 names) -> tuple[list[dict], list[str]]:
    """Per class: shares, and precision/recall/coverage and FD where both slices are big enough.

    FD and the k-NN metrics depend on the sample size (FD is biased upward at small n), so
    every judged class is measured at one size m, the smallest judged slice, as the mean over
    `SLICE_DRAWS` seeded subsamples without replacement: classes then compare with each other."""
    rows, notes, judged = [], [], {}
    for k in range(n_classes):
        rf, cf = ref.f[ref.labels == k], c.f[c.labels == k]
        row: dict[str, Any] = {"class": names[k], "n_real": len(rf), "n_generated": len(cf)}
        if c.label_source == "requested labels" and c.proba is not None:
            hit = c.proba[c.labels == k].argmax(1) == k  # share of the class-k requests judged class k
            row["conditional_accuracy"] = float(hit.mean()) if len(hit) else None
        if min(len(rf), len(cf)) < p.min_slice:
            reason = (f"too small to judge: {len(rf)} real and {len(cf)} generated records, "
                      f"fewer than min_slice={p.min_slice}")
            if len(cf) == 0:
                reason = "no generated records in this class (mode dropped)"
            row.update({"m": None, "precision": None, "recall": None, "coverage": None,
                        "fd": None, "note": reason})
            notes.append(f"class {names[k]}: {reason}")
        else:
            judged[k] = (rf, cf)
        rows.append(row)
    if judged:
        m = min(min(len(rf), len(cf)) for rf, cf in judged.values())
        kk = min(p.nearest_k, m - 1)
        for k, (rf, cf) in judged.items():
            rng = np.random.default_rng([p.seed, 13, k])
            draws = []
            for _ in range(SLICE_DRAWS):
                r_sub = rf[rng.choice(len(rf), m, replace=False)]
                c_sub = cf[rng.choice(len(cf), m, replace=False)]
                d = {key: v for key, v in M.prdc(r_sub, c_sub, kk).items() if key != "density"}
                d["fd"] = M.frechet_distance(c_sub, r_sub)
                draws.append(d)
            rows[k].update({"m": m, **{key: float(np.mean([d[key] for d in draws]))
                                       for key in draws[0]}, "note": ""})
    return rows, notes


def evaluate(ctx: Context, ext, p: EvaluateParams, *, references: bool = True) -> Evaluation:
    """All rows' metrics, TRTR, calibration, class slices and (VAE) likelihoods.

    Runs with one BLAS/torch thread: its matrices are small (m×d with m in the hundreds), where
    thread hand-offs cost more than they save, badly so on a shared, loaded machine."""
    with single_threaded():
        return _evaluate(ctx, ext, p, references)


def _evaluate(ctx: Context, ext, p: EvaluateParams, references: bool = True) -> Evaluation:
    rows_c, ref = candidates(ctx, ext, p, references=references)
    ds, spec = ctx.ds, ctx.spec
    mem = spec.pool("members")
    members_f = ext.features(ds.x[mem])
    n_classes = ds.n_classes if ds.y is not None else None
    ref_xy = (ref.x, ref.labels)
    rows, curves, extras = [], {}, {}
    for c in rows_c:
        r, extra = row_metrics(c, ref, members_f, ref_xy, n_classes, p)
        rows.append(r)
        curves[c.name] = extra["curve"]
        extras[c.name] = extra
    model_row = rows_c[0]
    ev = Evaluation(rows=rows, fd_curves=curves, reliability=[], shares={}, slices=[])
    # TRTR: the same classifier trained on as many real member records, same test set, same
    # test subsets (so trtr_ece and tstr_ece are at one n).
    if n_classes is not None and ref.labels is not None:
        n = min(len(model_row.x), len(mem))
        pick = np.sort(np.random.default_rng([p.seed, 11]).choice(mem, n, replace=False))
        proba = U.fit_classifier(ds.x[pick], ds.y[pick], n_classes)(ref.x)
        trtr = utility_estimates(proba, ref.labels, _subsample_size(ref, ref, p.subsample_frac),
                                 p, "trtr")
        rows[0].update(trtr)
    if n_classes is not None and model_row.labels is not None:
        if "test_proba" in extras[model_row.name]:
            ev.reliability = U.reliability(extras[model_row.name]["test_proba"], ref.labels)
        names = ds.class_names or [str(k) for k in range(n_classes)]
        ev.shares["reference (holdout_b)"] = U.class_shares(ref.labels, n_classes).tolist()
        for c in rows_c:
            ev.shares[c.name] = U.class_shares(c.labels, n_classes).tolist()
        for r, c in zip(rows, rows_c):
            r["class_tv"] = U.total_variation(ev.shares[c.name], ev.shares["reference (holdout_b)"])
        ev.slices, ev.warnings = class_slices(model_row, ref, n_classes, p, names)
    if ctx.model is not None and getattr(ctx.model, "model_kind", "") == "vae":
        ev.likelihood = likelihood(ctx, p)
    return ev


def likelihood(ctx: Context, p: EvaluateParams) -> dict[str, float]:
    """Mean −ELBO and IW-NLL on members vs holdout_a, and their gap (holdout − members).

    For a conditional VAE the bounds are on −log p(x|y), each record with its true label."""
    out: dict[str, float] = {}
    vals = {}
    conditional = is_conditional(ctx.model)
    for pool in ("members", "holdout_a"):
        idx = ctx.spec.pool(pool)
        labels = torch.from_numpy(ctx.ds.y[idx]) if conditional else None
        vals[pool] = vae_bounds(ctx.model, torch.from_numpy(ctx.ds.x[idx]), labels=labels,
                                  k=p.iw_samples, seed=p.seed)
    for key in ("neg_elbo", "iw_nll"):
        out[f"{key}_members"] = float(vals["members"][key].mean())
        out[f"{key}_holdout"] = float(vals["holdout_a"][key].mean())
        out[f"{key}_gap"] = out[f"{key}_holdout"] - out[f"{key}_members"]
    return out


def headline(ev: Evaluation, ext, ctx: Context) -> dict[str, Any]:
    """Flat numbers: the model row with CIs; beside every fidelity metric its real-vs-real floor
    (`<metric>_real_vs_real`) and noise row (`<metric>_baseline`)."""
    model, floor, base, gmm = ev.rows
    out: dict[str, Any] = {"samples_source": ctx.samples_source, "n": model["n"], "m": model["m"]}
    for key in ("fd", "fd_full_n", "fd_infinity", *HEADLINE_METRICS[1:], *PSEUDO_KEYS,
                "trtr_accuracy", "trtr_ece", "class_tv"):
        for suffix in ("", "_ci_low", "_ci_high", "_na_reason"):
            if key + suffix in model:
                out[key + suffix] = model[key + suffix]
    for key in ("trtr_accuracy", "trtr_ece"):
        if key not in out:
            out[key] = None
            out[f"{key}_na_reason"] = "no labelled real data"
    # the test-set size at which each ECE is computed: one n for all (ECE is biased upward at
    # small n, so only ECEs at one n compare)
    for key in ("tstr_ece_n", "tstr_pseudo_label_ece_n", "trtr_ece_n"):
        if model.get(key) is not None:
            out[key] = model[key]
    for row, tag, keys in ((floor, "real_vs_real", (*SANITY_METRICS, "tstr_accuracy",
                                                    "conditional_accuracy", PSEUDO_KEYS[0])),
                           (base, "baseline", (*SANITY_METRICS, PSEUDO_KEYS[0])),
                           (gmm, "gmm", SANITY_METRICS)):
        for key in keys:
            for suffix in ("", "_ci_low", "_ci_high"):
                if row.get(key + suffix) is not None:
                    out[f"{key}_{tag}{suffix}"] = row[key + suffix]
            if row.get(key) is None:
                out[f"{key}_{tag}"] = None
                out[f"{key}_{tag}_na_reason"] = row.get(f"{key}_na_reason", "not computed")
    lift = "tstr_pseudo_label_lift_over_noise"
    if model.get(PSEUDO_KEYS[0]) is not None and base.get(PSEUDO_KEYS[0]) is not None:
        out[lift] = model[PSEUDO_KEYS[0]] - base[PSEUDO_KEYS[0]]
    else:
        out[lift] = None
        out[f"{lift}_na_reason"] = "pseudo-label TSTR missing for the model or the noise row"
    out["fd_ratio_to_floor"] = model["fd"] / floor["fd"] if floor["fd"] > 0 else None
    if out["fd_ratio_to_floor"] is None:
        out["fd_ratio_to_floor_na_reason"] = "the real-vs-real FD is 0"
    out.update(versus_gmm(model, gmm))
    out["extractor"] = ext.name
    out["extractor_accuracy"] = ext.accuracy
    if ext.accuracy is None:
        out["extractor_accuracy_na_reason"] = f"feature extractor {ext.name!r} is not a " \
                                              f"classifier trained here"
    out["n_small_slices"] = len(ev.warnings)
    per_class = [r["conditional_accuracy"] for r in ev.slices if r.get("conditional_accuracy") is not None]
    out["conditional_accuracy_min_class"] = min(per_class) if per_class else None
    if not per_class:
        out["conditional_accuracy_min_class_na_reason"] = model.get(
            "conditional_accuracy_na_reason", "no per-class requests to judge")
    out.update(ev.likelihood)
    out.update(sanity.sanity_headline(out))
    return out


def versus_gmm(model: dict, gmm: dict) -> dict[str, Any]:
    """`fd_ratio_to_gmm` and `beats_gmm`: the model's FD interval lies wholly below the GMM
    baseline's (False when the intervals overlap or the GMM is better)."""
    if gmm.get("fd") is None or gmm["fd"] <= 0:
        reason = "the GMM baseline's FD is missing or 0"
        return {"fd_ratio_to_gmm": None, "fd_ratio_to_gmm_na_reason": reason,
                "beats_gmm": None, "beats_gmm_na_reason": reason}
    return {"fd_ratio_to_gmm": model["fd"] / gmm["fd"],
            "beats_gmm": bool(model["fd_ci_high"] < gmm["fd_ci_low"])}


def nearest_members(ctx: Context, ext, x: np.ndarray) -> np.ndarray:
    """For each record of `x`, the member record nearest to it in feature space (copy check)."""
    mem = ctx.spec.pool("members")
    mf = ext.features(ctx.ds.x[mem])
    xf = ext.features(x)
    return ctx.ds.x[mem[sq_dists(xf, mf).argmin(1)]]


def tables(ev: Evaluation) -> dict[str, Any]:
    curves = {k: {kk: v for kk, v in c.items() if kk != "curves"} for k, c in ev.fd_curves.items()}
    return {"rows": ev.rows, "fd_curves": curves, "reliability": ev.reliability,
            "class_shares": ev.shares, "slices": ev.slices, "slice_warnings": ev.warnings}
