"""Glue between `07_security.ipynb` and the library: :class:`SecurityReport` is the notebook's
sections, one method each. Poisoning and screens live in :mod:`.poisoning`, :mod:`.screens`
and :mod:`.study`, attacks in :mod:`.adversarial`, feedback loops in :mod:`.feedback`; the
headline numbers are assembled in :mod:`.headline`.

Every model the study trains goes to `artifacts/security/` (emptied first); the run's
`model.ckpt` is read, never written.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import numpy as np
from IPython.display import display

from genlab import plots
from genlab.drift_study.study import pca_representation
from genlab.evaluate import classifier_metrics as U
from genlab.evaluate.evaluation import noise_baseline
from genlab.numerics import MetricInputError
from genlab.models import is_conditional
from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance_table, write_headline
from genlab.ops.runs import atomic_write_text
from genlab.params import ParameterError, SecurityParams
from genlab.security import adversarial as ADV
from genlab.security import figures
from genlab.security import headline as H
from genlab.security import poisoning as PZ
from genlab.security.feedback import LOOP_MODES, class_spread, run_loops
from genlab.security.models import STUDY_DIR, draw, extractor, fidelity, run_settings
from genlab.security.study import StudySetup, kinds_for, poisoning_study, screening_study

EPS_GRID = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3)
DEFAULT_RATES, FULL_RATES = [0.02, 0.1], [0.005, 0.02, 0.1]
DEFAULT_EPOCHS, FULL_GENERATIONS, FULL_DRIFT_TRIALS = 30, 5, 50


def parse_rates(value: Any, full: bool) -> list[float]:
    """`poison_rates` as a sorted list of shares in (0, 0.5]: a list, 'a,b' text or one number."""
    if value is None:
        return list(FULL_RATES if full else DEFAULT_RATES)
    items = (value.split(",") if isinstance(value, str)
             else [value] if isinstance(value, (int, float)) else list(value))
    try:
        rates = sorted({float(v) for v in items})
    except (TypeError, ValueError):
        rates = []
    if not rates or not all(0 < r <= 0.5 for r in rates):
        raise ParameterError(f"parameter 'poison_rates': expected shares in (0, 0.5] (a list or "
                             f"'0.02,0.1'), got {value!r}")
    return rates


class SecurityReport:
    """`07_security.ipynb`, one method per section."""

    def __init__(self, p: SecurityParams):
        self.started = time.perf_counter()  # wall-clock goes to timings.json only
        self.seconds: dict[str, float] = {}
        self.p = p
        self.opened = o = open_run(p)
        self.run, self.ds, self.spec, self.model = o.run, o.ds, o.spec, o.model
        self.settings = run_settings(o.run)
        self.rates = parse_rates(p.poison_rates, p.full)
        self.epochs = p.epochs or (self.settings.max_epochs if p.full
                                   else min(DEFAULT_EPOCHS, self.settings.max_epochs))
        self.generations = max(p.generations, FULL_GENERATIONS) if p.full else p.generations
        self.drift_trials = max(p.drift_trials, FULL_DRIFT_TRIALS) if p.full else p.drift_trials
        ds, spec = self.ds, self.spec
        n_classes = ds.n_classes if ds.y is not None else None
        if is_conditional(self.model) and not 0 <= p.target_class < n_classes:
            raise ParameterError(f"parameter 'target_class': expected a class in [0, {n_classes}), "
                                 f"got {p.target_class}")
        self.bounds = ADV.IMAGE_RANGE if ds.is_image else ADV.FLAT_RANGE
        self.out_dir = o.run.artifacts / STUDY_DIR
        shutil.rmtree(self.out_dir, ignore_errors=True)
        mem = spec.pool("members")
        self.reference = ds.x[spec.pool("holdout_b")]
        self.ext = extractor(o.run, ds, spec, p.seed)
        n = p.n_samples or len(self.reference)
        self.setup_ = StudySetup(
            self.settings, ds.x[mem], None if ds.y is None else ds.y[mem], self.reference,
            ds.x[spec.pool("holdout_a")], self.ext, n_classes, ds.is_image, self.epochs, n,
            max(2, n // 2), p.n_draws, p.seed, p.target_class, p.duplicate_sources, self.out_dir)
        self.kinds, self.skipped = kinds_for(self.settings.conditional, ds.y is not None)

    def _timed(self, name: str, t0: float) -> None:
        self.seconds[name] = time.perf_counter() - t0

    def provenance(self) -> Table:
        self.prov = self.opened.provenance()
        return provenance_table(self.prov)

    def setup(self) -> Table:
        """What is trained how, and the trigger detector against its reference rows."""
        s, det = self.setup_, self.setup_.detector
        noise = noise_baseline(s.members_x, len(self.reference), self.p.seed, self.ds.is_image)
        stamped = PZ.stamp_trigger(self.reference, PZ.trigger_value(s.members_x, self.ds.is_image))
        self.detector_rows = [
            {"records": "real (holdout_b)", **ADV.rate_row("trigger_rate", det(self.reference))},
            {"records": "noise baseline", **ADV.rate_row("trigger_rate", det(noise))},
            {"records": "holdout_b with the trigger stamped", **ADV.rate_row("trigger_rate", det(stamped))}]
        display(Table.from_mapping({
            "model": self.settings.kind + (" (conditional)" if self.settings.conditional else ""),
            "epochs per trained model": self.epochs, "run's max_epochs": self.settings.max_epochs,
            "reduced": self.epochs < self.settings.max_epochs,
            "run trained with DP-SGD (retrained here without)": self.settings.dp,
            "poison rates": ", ".join(f"{r:g}" for r in self.rates),
            "poison kinds": ", ".join(self.kinds),
            "samples per model": s.n_samples, "CI subsample m": s.m,
            "trigger threshold (patch mean)": s.threshold}, title="Study set-up"))
        return Table(self.detector_rows, title="Trigger detector on records without a model", digits=3)

    def poison_examples(self) -> None:
        """Eight poisoned records of each kind that injects records (largest rate)."""
        if not self.ds.is_image:
            return
        kinds = [k for k in self.kinds if k != "label_flip"]
        rows = [self.setup_.poison(k, max(self.rates)) for k in kinds]
        plots.image_grid(np.concatenate([pl.x[pl.poisoned][:8] for pl in rows]),
                         title="Rows: " + ", ".join(kinds), ncols=8)

    def poisoning(self) -> Table:
        t0 = time.perf_counter()
        self.poisoned = poisoning_study(self.setup_, self.kinds, self.rates)
        self._timed("poisoning_s", t0)
        return Table(H.poisoning_table(self.poisoned["rows"]), digits=3,
                     title=f"Clean and poisoned models ({self.epochs} epochs each)")

    def poisoning_plot(self) -> None:
        figures.poisoning_curves(self.poisoned["rows"], self.kinds)

    def screens(self) -> Table:
        t0 = time.perf_counter()
        self.screened = screening_study(self.setup_, self.poisoned["pools"], self.poisoned["rows"])
        self._timed("screens_s", t0)
        display(Table(self.screened["screens"], digits=3,
                      title=f"Screens on each poisoned pool (rate {max(self.rates):g})"))
        return Table(self.screened["retrained"], digits=3,
                     title="Retrained on the records no screen flagged")

    def adversarial(self) -> Table:
        """The VAE latent attack and the robust accuracy of TSTR vs TRTR classifiers."""
        t0 = time.perf_counter()
        p, ds, spec = self.p, self.ds, self.spec
        self.vae_rows, self.vae_reason = [], None
        self.robust, self.robust_reasons = {}, {}
        if ds.y is None:
            self.vae_reason = "no labels: nothing judges the class"
            self.robust_reasons = {k: self.vae_reason for k in ("real (TRTR)", "synthetic (TSTR)")}
            self._timed("adversarial_s", t0)
            return Table([], title=self.vae_reason)
        rng = np.random.default_rng([p.seed, 0xAD7])
        a, b = spec.pool("holdout_a"), spec.pool("holdout_b")
        src = np.sort(rng.choice(a, min(p.n_adversarial, len(a)), replace=False))
        y = ds.y[src]
        if self.settings.kind == "vae":
            k = ds.n_classes
            target_y = (y + 1 + rng.integers(0, k - 1, len(y))) % k
            pick = np.array([rng.choice(b[ds.y[b] == t]) for t in target_y])
            self.vae_rows = ADV.vae_latent_attack(self.model, ds.x[src], y, ds.x[pick], target_y,
                                                  self.ext.predict_proba, EPS_GRID,
                                                  steps=p.pgd_steps, seed=p.seed, bounds=self.bounds)
        else:
            self.vae_reason = (f"a {self.settings.kind.upper()} has no encoder to attack "
                               "(the latent attack needs q(z|x))")
        test_x, test_y = ds.x[b][: p.n_adversarial], ds.y[b][: p.n_adversarial]
        mem = spec.pool("members")
        n = self.setup_.n_samples
        real = np.sort(rng.choice(mem, min(n, len(mem)), replace=False))
        gx, req = draw(self.model, n, p.seed)
        self.synthetic_labels = "requested classes" if req is not None else "extractor pseudo-labels"
        gy = req if req is not None else self.ext.predict_proba(gx).argmax(1)
        self.classifiers = {}
        for name, (cx, cy) in (("real (TRTR)", (ds.x[real], ds.y[real])),
                               ("synthetic (TSTR)", (gx, gy))):
            try:
                self.classifiers[name] = clf = U.fit_classifier(cx, cy, ds.n_classes)
            except MetricInputError as exc:  # samples of a single class: nothing to train on
                self.robust_reasons[name] = f"{name} classifier not trained: {exc}"[:190]
                continue
            self.robust[name] = ADV.robust_accuracy(clf.estimator, test_x, test_y, EPS_GRID,
                                                    steps=p.pgd_steps, seed=p.seed,
                                                    bounds=self.bounds)
        self._timed("adversarial_s", t0)
        rows = [{"eps": r["eps"], "vae_success": r["success"], "vae_noise_success": r["noise_success"]}
                for r in self.vae_rows] or [{"eps": e} for e in EPS_GRID]
        for name, reason in self.robust_reasons.items():
            print(reason)
        for name, rs in self.robust.items():
            for row, r in zip(rows, rs):
                row[f"accuracy {name}"] = r["accuracy"]
                row[f"noise accuracy {name}"] = r["noise_accuracy"]
        if self.vae_reason:
            print(f"VAE latent attack not run: {self.vae_reason}")
        return Table(rows, digits=3, title=f"Attacks against ε ({p.n_adversarial} records, "
                                           f"{p.pgd_steps} PGD steps; TSTR labels: "
                                           f"{self.synthetic_labels})")

    def adversarial_plot(self) -> None:
        panels = []
        if self.vae_rows:
            panels.append(("VAE latent attack", self.vae_rows,
                           [("success", "PGD"), ("noise_success", "sign noise")]))
        for name, rs in self.robust.items():
            panels.append((f"Classifier on {name}", rs,
                           [("accuracy", "PGD"), ("noise_accuracy", "sign noise")]))
        if panels:
            figures.attack_curves(panels)

    def drift_evasion(self) -> Table:
        t0 = time.perf_counter()
        p, ds, spec = self.p, self.ds, self.spec
        self.evasion, self.evasion_reason = [], None
        if ds.y is None:
            self.evasion_reason = "no labels: no classifier to attack"
            return Table([], title=self.evasion_reason)
        b = spec.pool("holdout_b")
        rng = np.random.default_rng([p.seed, 0xE7A])
        self.drift_batch_size = size = min(p.drift_batch, len(b))
        batches = [(ds.x[i], ds.y[i]) for i in
                   (np.sort(rng.choice(b, size, replace=False)) for _ in range(self.drift_trials))]
        rep = pca_representation(ds.x[spec.pool("members")], 10)
        self.evasion = ADV.drift_evasion(
            self.classifiers["real (TRTR)"].estimator, rep(ds.x[spec.pool("holdout_a")]), rep,
            batches, EPS_GRID, alpha=p.alpha, n_permutations=p.n_permutations, steps=p.pgd_steps,
            seed=p.seed, bounds=self.bounds)
        self._timed("drift_evasion_s", t0)
        return Table(self.evasion, digits=3, title=f"Drift tests (PCA-10 of members) on "
                                                   f"{self.drift_trials} perturbed batches of {size}")

    def feedback(self) -> Table:
        t0 = time.perf_counter()
        s, p = self.setup_, self.p

        def score(x):
            out = fidelity(self.ext, x, self.reference, m=s.m, draws=p.n_draws, seed=p.seed)
            if self.ds.y is not None:
                out.update(class_spread(self.ext.predict_proba(x).argmax(1), self.ds.n_classes,
                                        seed=p.seed))
            return out

        self.loops = run_loops(self.settings, s.members_x, s.members_y,
                               self.poisoned["clean_model"], generations=self.generations,
                               epochs=self.epochs, seed=p.seed, out_dir=self.out_dir / "loops",
                               score=score)
        H.add_rarest_class_share(self.loops)
        self._timed("feedback_s", t0)
        return Table(H.loop_table(self.loops), digits=3,
                     title=f"Self-consuming loops ({self.generations} generations, "
                           f"{self.epochs} epochs each)")

    def feedback_plot(self) -> None:
        figures.loop_curves(self.loops, LOOP_MODES)

    def headline(self) -> Table:
        numbers, tables = H.numbers(self)
        write_headline(self.run, "07_security", numbers, provenance=self.prov, tables=tables)
        return Table.from_mapping(numbers, title="Headline", digits=4)

    def timings(self) -> None:
        """Section runtimes merged into timings.json (outside the reproducible reports)."""
        path = self.run.path / "timings.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current["07_security_sections"] = {
            **{k: round(v, 3) for k, v in self.seconds.items()},
            "notebook_body_s": round(time.perf_counter() - self.started, 3)}
        atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True) + "\n")
