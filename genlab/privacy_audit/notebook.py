"""Glue between `03_privacy_audit.ipynb` and the library: :class:`AuditReport` is the notebook's
sections, one method each, and the audit's figures; the audit itself is
:func:`genlab.privacy_audit.audit.run_audit`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance_table, write_headline
from genlab.params import PrivacyAuditParams
from genlab.privacy_audit.audit import AuditResult, load_canaries, run_audit
from genlab.privacy_audit.lira import recipe_from_run

EPSILON_KEYS = ["epsilon_lower_bound", "epsilon_lower_bound_cap", "dp_epsilon_accountant",
                "audit_gap", "epsilon_indicative_records"]


class AuditReport:
    """`03_privacy_audit.ipynb`, one method per section."""

    def __init__(self, p: PrivacyAuditParams):
        self.p = p
        # external samples are audited black-box: the run's model is not needed
        self.opened = open_run(p, model=True if p.samples is None else None)
        self.run, self.ds = self.opened.run, self.opened.ds
        self.canaries = load_canaries(self.run.artifacts)
        self.samples = None
        if p.samples is not None:
            from genlab.evaluate.evaluation import load_samples

            self.samples = load_samples(p.samples, self.ds.data_shape)[0]

    def provenance(self) -> Table:
        self.prov = self.opened.provenance()
        return provenance_table(self.prov)

    def attacks(self) -> Table:
        o = self.opened
        self.audit = run_audit(o.model, o.ds, o.spec, self.run.artifacts, self.p,
                               canaries=self.canaries, recipe=recipe_from_run(self.run.path),
                               samples=self.samples)
        self.audit.numbers["samples_source"] = (
            f"external samples {self.p.samples}" if self.samples is not None
            else f"model.ckpt ({self.opened.model.model_kind})")
        return Table([{k: v for k, v in r.items() if not k.endswith("na_reason")}
                      for r in self.audit.attacks],
                     title="Attacks (evaluation half; thresholds from the selection half; "
                           "empty TPR = FPR below 1/n, not measurable)", digits=3)

    def roc(self) -> None:
        roc_figure(self.audit)

    def canary_bound(self) -> Table:
        n = self.audit.numbers
        if self.audit.canary is not None:
            canary_figure(self.audit)
        return Table.from_mapping({k: n[k] if n.get(k) is not None else n.get(f"{k}_na_reason", "n/a")
                                   for k in EPSILON_KEYS},
                                  title="ε lower bounds and the accountant's ε", digits=3)

    def dcr(self) -> None:
        dcr_figure(self.audit)

    def copying(self) -> Table:
        if self.ds.is_image:
            gallery_figure(self.audit, self.ds.data_shape)
        ct = self.audit.ct
        return Table(ct["cells"], title=f"C_T per cell: C_T = {ct['data_copying_ct']}", digits=3)

    def headline(self) -> Table:
        numbers = self.audit.numbers
        write_headline(self.run, "03_privacy_audit", numbers, provenance=self.prov,
                       tables=self.audit.tables)
        return Table.from_mapping(numbers, title="Headline", digits=4)


# ----------------------------------------------------------------------------------- figures
def roc_figure(audit: AuditResult):
    """ROC curves on log-log axes (the low-FPR region is what matters, Carlini et al. 2022)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    n_non = audit.numbers["n_eval_nonmembers"]
    for r in audit.attacks:
        fpr, tpr = audit.roc[r["attack"]]
        keep = (fpr > 0) & (tpr > 0)
        ax.plot(fpr[keep], tpr[keep], label=f"{r['attack']} (AUC {r['auc']:.3f})")
    grid = np.logspace(np.log10(1 / n_non), 0, 50)
    ax.plot(grid, grid, "k:", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1 / n_non, 1), ylim=(1 / n_non, 1.05),
           xlabel="false positive rate", ylabel="true positive rate",
           title=f"Membership inference, evaluation half (n={n_non} non-members)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def dcr_figure(audit: AuditResult):
    m = audit.memo
    fig, ax = plt.subplots()
    bins = np.linspace(0, max(m["d_members"].max(), m["d_holdout"].max()), 40)
    ax.hist(m["d_members"], bins, alpha=0.6, label="to members (size-matched)")
    ax.hist(m["d_holdout"], bins, alpha=0.6, label="to holdout_a")
    ax.set(xlabel="distance from a generated sample to its closest record", ylabel="samples",
           title=f"DCR: {m['dcr_share_closer_to_members']:.1%} closer to members")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gallery_figure(audit: AuditResult, data_shape):
    """Most copied-looking samples (top) above their nearest members (bottom)."""
    from genlab.plots import image_grid

    g = audit.memo["gallery"]
    samples = np.stack([audit.generated[s] for s, _, _ in g]).reshape(len(g), *data_shape)
    nearest = np.stack([audit.members_x[m] for _, m, _ in g]).reshape(len(g), *data_shape)
    return image_grid(np.concatenate([samples, nearest]),
                      "Closest samples (top) and their nearest members (bottom)", ncols=len(g))


def canary_figure(audit: AuditResult):
    c = audit.canary
    fig, ax = plt.subplots()
    s, inc = c["scores"], c["included"]
    bins = np.linspace(s.min(), s.max() + 1e-9, 30)
    ax.hist(s[inc], bins, alpha=0.6, label=f"included ({inc.sum()})")
    ax.hist(s[~inc], bins, alpha=0.6, label=f"left out ({(~inc).sum()})")
    ax.set(xlabel=f"score ({audit.numbers['mia_best_attack']})", ylabel="canaries",
           title=f"Canaries: {c['v']} of {c['r']} guesses right, ε ≥ {c['bound']:.2f} (cap {c['cap']:.2f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
