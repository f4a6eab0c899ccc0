"""Glue between `06_operations.ipynb` and the library: :class:`OperationsReport` runs the scripted
scenario against a real `genlab serve` process on loopback, one method per notebook section.

Scenario A: the run's model is gated and registered as champion and served from the registry →
production drifts (`drift_shift` from request `shift_at_request`) → the production monitor
alarms → a candidate is fine-tuned from the champion on the drifted records → checked against
the champion on held-out drifted records → gated and registered (alias `candidate`) → canary at
`canary_share` → the canary rule decides → the decision is applied under traffic (and the
registry's `champion` alias follows a promotion).
Scenario B: a broken candidate (the champion with damaged weights) meets the same gate, and — as
if deployed without it — the same canary round.

The registry is a temporary one of the scenario's own (a scripted scenario must not move a
team's aliases); candidates and request logs go to `artifacts/operations/`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any


from genlab.operations import production, scenario
from genlab.operations.promotion import gate_and_promote
from genlab.ops.gate import Rule
from genlab.ops.open_run import open_run
from genlab.ops.reports import Table, provenance_table, write_headline
from genlab.ops.runs import RunFolder
from genlab.params import OperationsParams

CHAMPION_RULES = ("fd_ratio_to_floor<=10", "privacy_verdict!=high")
# a candidate must be at least as good as the champion on the drifted production data (FD)
CANDIDATE_RULES = ("fd_production_candidate_vs_champion<=1.0",)


class OperationsReport:
    def __init__(self, p: OperationsParams):
        from genlab.evaluate.features import load_or_train_extractor

        self.p = p
        self.opened = o = open_run(p)
        self.run, self.ds, self.spec = o.run, o.ds, o.spec
        if self.ds.y is None:
            raise ValueError("the operations scenario needs a labelled data set (its evaluation "
                             "classifier and class shifts)")
        self.extractor = load_or_train_extractor(self.run, self.ds, self.spec, seed=p.seed)
        self.work = self.run.artifacts / "operations"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.registry = tempfile.mkdtemp(prefix="genlab-registry-")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.registry}/mlflow.db"
        self.numbers: dict[str, Any] = {}

    def provenance(self) -> Table:
        self.prov = self.opened.provenance()
        return provenance_table(self.prov)

    # ----------------------------------------------------------------------- scenario A
    def register_champion(self) -> Table:
        rows, promoted = gate_and_promote(self.run.path, [Rule.parse(r) for r in CHAMPION_RULES],
                                          self.p.model_name)
        if promoted is None:
            raise RuntimeError(f"the run fails the champion gate {list(CHAMPION_RULES)}: "
                               "nothing to serve")
        self.numbers["champion_version"] = promoted["version"]
        return Table([{k: r[k] for k in ("rule", "value", "status")} for r in rows],
                     title=f"Champion gate → {self.p.model_name} v{promoted['version']} "
                           f"@champion")

    def monitor(self) -> Table:
        p = self.p
        prod = self.spec.pool("holdout_b")
        self.stream = production.monitor_production(
            self.ds.x[self.spec.pool("holdout_a")], self.ds.x[prod], self.ds.y[prod],
            self.extractor.features, shift=p.drift_shift, shift_at=p.shift_at_request,
            n_requests=p.stream_requests, window=p.production_window,
            arl0_target=p.monitor_arl0, n_streams=p.arl0_streams, seed=p.seed)
        s = self.stream
        self.numbers.update({
            "drift_shift": p.drift_shift, "shift_at_request": p.shift_at_request,
            "drift_alarm": s.alarm_at is not None,
            "drift_alarm_reason": f"windowed MMD of production records (window "
                                  f"{p.production_window}) over its ARL₀-{p.monitor_arl0} threshold",
            "drift_alarm_at_request": None if s.alarm_at is None else s.alarm_at + 1,
            "false_alarm_before_shift": s.alarm_at is not None and s.alarm_at < s.shift_at,
            "detection_delay_requests": s.detection_delay,
            "monitor_arl0_target": p.monitor_arl0, "monitor_arl0_measured": s.arl0["measured"],
            "monitor_arl0_measured_ci_low": s.arl0["ci_low"],
            "monitor_arl0_measured_ci_high": s.arl0["ci_high"]})
        for key in ("drift_alarm_at_request", "detection_delay_requests"):
            if self.numbers[key] is None:
                self.numbers[f"{key}_na_reason"] = ("no alarm" if s.alarm_at is None
                                                    else "false alarm before the shift")
        return Table.from_mapping({k: self.numbers[k] for k in (
            "drift_alarm_at_request", "detection_delay_requests", "false_alarm_before_shift",
            "monitor_arl0_measured", "monitor_arl0_measured_ci_low",
            "monitor_arl0_measured_ci_high")}, title="Production monitor")

    def _check_and_gate(self, folder, name: str) -> tuple[dict[str, Any], list[dict]]:
        check = production.candidate_check(self.run.path, folder, self.stream,
                                           self.extractor.features, seed=self.p.seed)
        write_headline(RunFolder(folder), "06_candidate", check, provenance=self.prov)
        rows, promoted = gate_and_promote(folder, [Rule.parse(r) for r in CANDIDATE_RULES],
                                          self.p.model_name, alias=name)
        out = {**check, "gate_passed": promoted is not None,
               "version": None if promoted is None else promoted["version"]}
        if promoted is None:
            out["version_na_reason"] = "not registered: the candidate failed its gate"
        return out, rows

    def retrain(self) -> Table:
        self.candidate = production.fine_tune_candidate(
            self.run.path, self.work / "candidate", self.stream.tune,
            epochs=self.p.finetune_epochs, seed=self.p.seed)
        check, rows = self._check_and_gate(self.candidate, "candidate")
        self.numbers.update({f"candidate_{k}" if not k.startswith("fd_") else k: v
                             for k, v in check.items()})
        self.numbers["candidate_gate_rule"] = CANDIDATE_RULES[0]
        return Table([{**{k: check[k] for k in ("fd_production_champion",
                                                "fd_production_candidate",
                                                "fd_production_real_vs_real")},
                       "rule": rows[0]["rule"], "gate": rows[0]["status"]}],
                     title="Candidate on held-out drifted records (FD, lower is better)")

    def canary(self) -> Table:
        p = self.p
        if not self.numbers["candidate_gate_passed"]:
            self.round_a = None
            self.numbers["canary_decision"] = "not run: the candidate failed its gate"
            self.numbers["served_variant"] = (f"fp32 · {p.model_name} "
                                              f"v{self.numbers['champion_version']} @champion")
            return Table([], title="Canary: not run (the candidate failed its gate)")
        self.round_a = r = self._round(f"models:/{p.model_name}@candidate", "round-a")
        d = r["decision"]
        if d["action"] == "promote":
            from genlab.operations.tracking import client

            client().set_registered_model_alias(p.model_name, "champion",
                                                str(self.numbers["candidate_version"]))
        self.numbers.update({
            "canary_decision": d["action"], "canary_metric": d["metric"],
            "canary_champion_rate": d["champion"], "canary_candidate_rate": d["candidate"],
            "canary_p_noninferior": d["p_noninferior"],
            "candidate_requests_before_decision": r["candidate_requests_before_decision"],
            "failed_requests_during_promotion": r["failed_requests_during_switch"],
            "served_variant": f"fp32 · {p.model_name} v"
                              f"{self.numbers['candidate_version'] if d['action'] == 'promote' else self.numbers['champion_version']}"
                              " @champion"})
        return _round_table(r, "Canary of the fine-tuned candidate")

    # ----------------------------------------------------------------------- scenario B
    def broken(self) -> Table:
        broken = scenario.damaged_copy(self.run.path, self.work / "broken",
                                       noise=self.p.broken_noise, seed=self.p.seed)
        check, _ = self._check_and_gate(broken, "broken")
        self.round_b = r = self._round(str(broken), "round-b")
        d = r["decision"]
        self.numbers.update({
            "broken_fd_production": check["fd_production_candidate"],
            "broken_gate_passed": check["gate_passed"], "broken_canary_decision": d["action"],
            "broken_canary_candidate_rate": d["candidate"],
            "broken_candidate_requests": r["candidate_requests_before_decision"],
            "broken_requests_before_rollback": (r["candidate_requests_before_decision"]
                                                if d["action"] == "rollback" else None),
            "failed_requests_during_rollback": r["failed_requests_during_switch"]})
        if d["action"] != "rollback":
            self.numbers["broken_requests_before_rollback_na_reason"] = (
                f"the canary did not roll back ({d['action']})")
        return _round_table(r, f"Broken candidate (gate: "
                               f"{'passed' if check['gate_passed'] else 'failed'}), canary "
                               "as if deployed anyway")

    def _round(self, candidate: str, name: str) -> dict[str, Any]:
        """A canary round against the current champion (`models:/NAME@champion`; its reference
        samples from the folder the alias points to)."""
        p = self.p
        promoted = self.numbers.get("canary_decision") == "promote"
        return scenario.canary_round(
            self.candidate if promoted else self.run.path, candidate, self.work / name,
            champion_source=f"models:/{p.model_name}@champion", n_requests=p.canary_requests,
            n=p.request_size, share=p.canary_share, alpha=p.canary_alpha,
            margin=p.canary_margin, arl0_target=p.online_arl0, seed=p.seed)

    # ----------------------------------------------------------------------- summary
    def timeline(self) -> None:
        from genlab.operations.timeline import timeline_figure

        timeline_figure(self.stream, self.round_a, self.round_b)

    def headline(self) -> Table:
        failed = sum(r["failed_requests"] for r in (self.round_a, self.round_b) if r)
        numbers = {**self.numbers, "failed_requests_total": failed,
                   "canary_share": self.p.canary_share, "model_name": self.p.model_name}
        write_headline(self.run, "06_operations", numbers, provenance=self.prov)
        shutil.rmtree(self.registry, ignore_errors=True)  # the scenario's registry ends here
        return Table.from_mapping(numbers, title="Headline", digits=4)


def _round_table(r: dict[str, Any], title: str) -> Table:
    d = r["decision"]
    return Table.from_mapping({
        "decision": d["action"], "reason": d["reason"], "metric": d["metric"],
        "champion rate": d["champion"], "candidate rate": d["candidate"],
        "records (champion / candidate)": f"{d['n_champion']} / {d['n_candidate']}",
        "candidate requests before the decision": r["candidate_requests_before_decision"],
        "failed requests (round / during the switch)":
            f"{r['failed_requests']} / {r['failed_requests_during_switch']}",
        "output drift alarm on the candidate": r["metrics"].get("candidate_drift_alarm")},
        title=title, digits=4)
