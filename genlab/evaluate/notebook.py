"""Glue between `02_evaluate.ipynb` and the library: :class:`EvaluateReport` is the notebook's
sections, one method each; the numbers come from :mod:`genlab.evaluate.evaluation`."""

from __future__ import annotations

from typing import Any

from IPython.display import display

from genlab import plots
from genlab.evaluate import compare_runs, evaluation, sanity
from genlab.ops.reports import Table, provenance, provenance_table, write_headline
from genlab.params import EvaluateParams

# the metric rows of the comparison tables, in the order they are read
METRIC_ROWS = ["n", "m", "fd", "fd_full_n", "fd_infinity", "kid", "inception_score", "precision",
               "recall", "density", "coverage", "authenticity", "c2st_auc", "tstr_accuracy",
               "tstr_ece", "tstr_pseudo_label_accuracy", "tstr_pseudo_label_ece", "trtr_accuracy",
               "trtr_ece", "tstr_ece_n", "trtr_ece_n", "conditional_accuracy", "class_tv"]


def format_ci(row: dict[str, Any], key: str) -> Any:
    """`value [ci_low, ci_high]` to 3 significant digits where the row has a CI, else the value."""
    if row.get(key) is None:
        return None
    if f"{key}_ci_low" in row:
        return f"{row[key]:.3g} [{row[key + '_ci_low']:.3g}, {row[key + '_ci_high']:.3g}]"
    return row[key]


def metrics_table(rows: list[dict], title: str) -> Table:
    """One column per row (model, floor, baseline, or one per compared run), one line per metric."""
    return Table([{"metric": c, **{r["row"]: format_ci(r, c) for r in rows}} for c in METRIC_ROWS],
                 title=title)


def pseudo_label_note(rows: list[dict]) -> str:
    """The pseudo-label TSTR diagnostic, always beside the noise row's value and the lift."""
    model, base = rows[0], next((r for r in rows if r["row"] == "baseline (noise)"), None)
    own = model.get("tstr_accuracy")
    lines = [f"TSTR on the samples' own labels: "
             + (f"{own:.3g}" if own is not None else f"n/a ({model.get('tstr_accuracy_na_reason')})")]
    pm = model.get("tstr_pseudo_label_accuracy")
    pb = base.get("tstr_pseudo_label_accuracy") if base else None
    if pm is not None and pb is not None:
        lines.append(f"TSTR with the evaluation classifier's pseudo-labels (a diagnostic, not utility): "
                     f"model {pm:.3g}, noise baseline {pb:.3g}, lift over noise {pm - pb:+.3g}")
    return "\n".join(lines)


def gmm_note(rows: list[dict]) -> str:
    """Plainly: does the model beat the classical GMM baseline on FD (intervals apart)?"""
    model, gmm = rows[0], next((r for r in rows if r["row"] == "baseline (GMM)"), None)
    if gmm is None or gmm.get("fd") is None:
        return "GMM baseline: not computed"
    v = evaluation.versus_gmm(model, gmm)
    verdict = ("beats it" if v["beats_gmm"] else
               "does NOT beat it: a Gaussian mixture on a PCA of the members does as well or better")
    return (f"Classical baseline (GaussianMixture, {evaluation.GMM_COMPONENTS} components, "
            f"{evaluation.GMM_PCA_DIMS}-d PCA of the members): FD {gmm['fd']:.3g} "
            f"[{gmm['fd_ci_low']:.3g}, {gmm['fd_ci_high']:.3g}]; the model's FD {model['fd']:.3g} "
            f"[{model['fd_ci_low']:.3g}, {model['fd_ci_high']:.3g}] is {v['fd_ratio_to_gmm']:.2f}x "
            f"it: the model {verdict}")


class EvaluateReport:
    """`02_evaluate.ipynb`, one method per section."""

    def __init__(self, p: EvaluateParams):
        if p.run_dirs:  # several models: the first is narrated, all compared at the end
            p = p.replace(run_dir=compare_runs.parse_run_dirs(p.run_dirs)[0])
        self.p = p
        self.ctx = evaluation.load_context(p)

    def provenance(self) -> Table:
        ctx = self.ctx
        self.prov = provenance(self.p, dataset=ctx.ds.name, data_fingerprint=ctx.spec.fingerprint)
        return provenance_table(self.prov)

    def feature_space(self) -> Table:
        self.ext = ext = evaluation.make_extractor(self.ctx, self.p)
        return Table.from_mapping({"extractor": ext.name,
                                   "chosen": evaluation.extractor_kind(self.ctx, self.p)[1],
                                   "num_features": ext.num_features,
                                   "n_classes": ext.n_classes,
                                   "accuracy_pools": "+".join(ext.accuracy_pools) or "-",
                                   "samples": self.ctx.samples_source}, title="Feature extractor")

    def metrics(self) -> Table:
        self.ev = evaluation.evaluate(self.ctx, self.ext, self.p)
        print(pseudo_label_note(self.ev.rows))
        print(gmm_note(self.ev.rows))
        return metrics_table(self.ev.rows, "Model vs real-vs-real floor vs noise and GMM "
                                           "baselines (reference: holdout_b)")

    def fd_curves(self) -> None:
        plots.fd_vs_inverse_n(self.ev.fd_curves)

    def samples(self) -> None:
        p, ctx = self.p, self.ctx
        ds, spec = ctx.ds, ctx.spec
        gen = (ctx.model.sample(64, seed=p.seed).numpy() if p.samples is None
               else evaluation.load_samples(p.samples, ds.data_shape)[0][:64])
        plots.samples(gen, ds.x[spec.pool("holdout_b")], title="Generated samples")
        if ds.is_image:
            plots.image_grid(ds.x[spec.pool("holdout_b")][:64], title="Real records (holdout_b)")
            plots.nearest_pairs(gen[:12], evaluation.nearest_members(ctx, self.ext, gen[:12]))

    def utility(self) -> None:
        ev, ds = self.ev, self.ctx.ds
        plots.reliability_diagram(ev.reliability)
        if ev.shares:
            plots.class_share_bars(ev.shares, ds.class_names or [str(k) for k in range(ds.n_classes)])
        model_row = ev.rows[0]
        if model_row.get("conditional_accuracy") is not None and ev.slices:
            plots.conditional_accuracy_bars(ev.slices, model_row["conditional_accuracy"])
        display(Table(ev.slices, title="Per-class slices (model samples vs holdout_b)"))
        for note in ev.warnings:
            print("warning:", note)

    def headline(self) -> Table:
        numbers = evaluation.headline(self.ev, self.ext, self.ctx)
        checks = sanity.sanity_checks(numbers)
        failed = [r for r in checks if not r["passed"]]
        print(f"Sanity rows: {len(checks) - len(failed)} of {len(checks)} checks pass (floor best, "
              f"noise worst, intervals apart)" + "".join(f"\n  FAILS {r['detail']}" for r in failed))
        write_headline(self.ctx.run, "02_evaluate", numbers, provenance=self.prov,
                       tables={**evaluation.tables(self.ev), "sanity_checks": checks})
        return Table.from_mapping(numbers, title="Headline", digits=4)

    def compare(self) -> None:
        """With run_dirs: every run in one table, written to reports/compare-<runs>/."""
        if not self.p.run_dirs:
            return
        cmp = compare_runs.compare_runs(self.p, first=(self.ctx, self.ext, self.ev))
        compare_runs.write_comparison(cmp, self.prov)
        display(metrics_table(cmp.rows, f"Model comparison (reference: holdout_b; fingerprint "
                                         f"{cmp.fingerprint[:12]})"))
        print("comparison written to", cmp.out_dir)
