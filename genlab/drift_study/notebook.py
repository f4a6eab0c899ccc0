"""Glue between `04_drift_study.ipynb` and the library: :class:`DriftReport` is the notebook's
sections, one method each; the study, monitor and retraining live in :mod:`.study`,
:mod:`.monitor` and :mod:`.retrain`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from IPython.display import display

from genlab import data, plots
from genlab.drift_study import monitor
from genlab.drift_study import retrain as drift_retrain
from genlab.drift_study import study as drift_study
from genlab.drift_study.shifts import Pool, Shift
from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance_table, write_headline
from genlab.ops.runs import resolve_input
from genlab.params import DriftStudyParams


class DriftReport:
    """`04_drift_study.ipynb`, one method per section. The reference is holdout_a; production
    records come from holdout_b (with the model's samples for the contamination shift)."""

    def __init__(self, p: DriftStudyParams):
        self.started = time.perf_counter()  # wall-clock goes to timings.json only
        self.p = p
        self.opened = o = open_run(p)
        self.run, self.ds = o.run, o.ds
        self.reference = o.ds.x[o.spec.pool("holdout_a")]
        self.calibration = o.ds.x[o.spec.pool("val")]  # the monitor's thresholds, never measured on
        prod_idx = o.spec.pool("holdout_b")
        generated = o.model.sample(len(prod_idx), seed=p.seed).numpy()
        self.pool = Pool(o.ds.x[prod_idx], None if o.ds.y is None else o.ds.y[prod_idx], generated)

    def provenance(self) -> Table:
        self.prov = self.opened.provenance()
        return provenance_table(self.prov)

    def representations(self) -> Table:
        o = self.opened
        self.reps, notes = drift_study.build_representations(
            o.model, o.ds, o.spec, self.run, seed=self.p.seed, pca_components=self.p.pca_components)
        return Table([{"representation": k, "dim": int(f(self.reference[:2]).shape[1])}
                      for k, f in self.reps.items()]
                     + [{"representation": "extractor", "dim": notes["extractor"]}],
                     title="Representations")

    def shifts(self) -> None:
        """One production sample per shift at δ = 1 (first 8 records), images only."""
        if not self.ds.is_image:
            return
        names = [(k, i) for k, i in drift_study.catalogue(True) if k != "none"]
        rows = [Shift(k, i, 1.0).draw(self.pool, 8, np.random.default_rng([self.p.seed, j]))
                for j, (k, i) in enumerate(names) if Shift(k, i).applicable(self.pool) is None]
        plots.image_grid(np.concatenate(rows), title="Rows: " + ", ".join(
            k if i == "-" else f"{k}:{i}" for k, i in names), ncols=8)

    def study(self) -> None:
        self.cfg = cfg = drift_study.StudyConfig.from_params(self.p, len(self.reference),
                                                             len(self.pool.x))
        self.result = drift_study.run_study(self.reference, self.pool, self.reps, cfg)
        print(f"{len(self.result.rows)} cells, sizes {cfg.sizes}, deltas {cfg.deltas}, "
              f"{cfg.trials} trials per shift cell, {cfg.null_trials} per no-shift cell")

    def false_alarms(self) -> Table:
        self.false_alarm_rows = drift_study.false_alarm_table(self.result.rows)
        n = max(self.cfg.sizes)
        return Table([r for r in self.false_alarm_rows if r["n"] == n],
                     title=f"False alarms without shift (alpha={self.p.alpha}, n={n})", digits=3)

    def detection_by_size(self) -> Table:
        self.by_size = drift_study.detection_by_size(self.result.rows)
        return Table(self.by_size, digits=3, title="Mean detection rate over all shifts, by "
                                                   "sample size (Failing Loudly Table 1)")

    def detection_plot(self) -> None:
        plots.detection_vs_size(self.by_size)

    def heatmap(self) -> None:
        plots.drift_heatmap(self.result.rows, max(s for s in self.cfg.sizes if s <= 100))

    def border_artefact(self) -> Table:
        return Table(drift_study.border_artefact(self.reference, self.pool, alpha=self.p.alpha,
                                                 trials=self.cfg.trials, n=100, seed=self.p.seed),
                     title="KS on pixels, σ = 1/255 noise")

    def monitor(self) -> None:
        p = self.p
        self.mon = mon = monitor.run_monitor(self.reference, self.pool, self.reps,
                                             monitor.MonitorConfig.from_params(p), self.calibration)
        det, (ex_shift, ex_path) = "window_mmd", mon.examples["window_mmd"]
        plots.monitor_path(ex_path, mon.thresholds[det], p.drift_start,
                           title=f"windowed MMD, one stream, drift = {ex_shift}")

    def monitor_tables(self) -> Table:
        mon = self.mon
        display(Table([{"detector": k, "threshold": mon.thresholds[k], **v} for k, v in mon.arl0.items()],
                      title=f"ARL0 measured on no-drift production streams (holdout_b), "
                            f"thresholds calibrated on val (target {self.p.arl0_target})", digits=4))
        display(Table(mon.calibration_sizes, digits=3,
                      title="How much calibration data: ARL0 on holdout_b streams with thresholds "
                            "calibrated on random subsets of val"))
        return Table(mon.delays, title="Detection delay after drift onset (records)", digits=4)

    def retrain(self) -> Table:
        self.retrained = drift_retrain.retrain_scenario(self.run, self.reference, self.pool,
                                                        self.reps, self.p)
        return Table.from_mapping(self.retrained, title="Retraining", digits=4)

    def production(self) -> None:
        """With production=path: every test on every representation against the reference."""
        p = self.p
        self.production_rows, self.production_numbers = None, {}
        if not p.production:
            self.production_numbers = {"production_drift": None,
                                       "production_drift_na_reason": "no production data given"}
            return
        prod = data.load_dataset(resolve_input(p.production))
        rows = drift_retrain.production_check(self.reference, prod.x, self.reps, p)
        primary = f"{p.retrain_detector}@{p.retrain_representation}"
        main = next(r for r in rows if r["method"] == primary)
        self.production_rows = rows
        self.production_numbers = {"production_n": len(prod.x), "production_method": primary,
                                   "production_pvalue": main["p_value"],
                                   "production_drift": main["drift"],
                                   "production_methods_detecting": sum(r["drift"] for r in rows)}
        display(Table(rows, title=f"Production {prod.name} (n={len(prod.x)}) vs reference", digits=4))

    def timings(self) -> None:
        drift_study.write_test_timings(self.run, self.result,
                                       {"notebook_body_s": time.perf_counter() - self.started})

    def headline(self) -> Table:
        numbers, tables = self.numbers()
        write_headline(self.run, "04_drift_study", numbers, provenance=self.prov, tables=tables)
        return Table.from_mapping(numbers, title="Headline", digits=4)

    def numbers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The headline numbers and the tables of `04_drift_study.json` / `.tables.json`."""
        rows, retrain, mon = self.result.rows, self.retrained, self.mon
        numbers = {**drift_study.study_headline(rows, self.p.alpha),
                   "trials_per_cell": self.cfg.trials, "trials_per_null_cell": self.cfg.null_trials,
                   **monitor.monitor_headline(mon, self.p.arl0_target),
                   **{k: v for k, v in retrain.items()
                      if not isinstance(v, str) or k.endswith("_na_reason")},
                   "retrain_rule": retrain["retrain_rule"], "retrain_shift": retrain["retrain_shift"],
                   "fd_feature_space": retrain["fd_feature_space"], **self.production_numbers}
        tables = {"detection": rows, "false_alarms": self.false_alarm_rows,
                  "detection_by_size": self.by_size, "monitor_arl0": mon.arl0,
                  "monitor_thresholds": mon.thresholds, "monitor_delays": mon.delays,
                  "monitor_calibration_sizes": mon.calibration_sizes,
                  "production": self.production_rows}
        return numbers, tables
