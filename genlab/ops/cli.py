"""Command line: `genlab run` executes report notebooks, `genlab params` lists their parameters.

    genlab run [-p key=value ...] [-f params.yaml] [--only train,evaluate] [--name NAME] [--track]
    genlab sweep sweeps/models.yaml [--workers 2 --threads 1] [--scheduler tcp://HOST:PORT] [--track]
    genlab gate reports/<run or sweep> --rule "fd<=2.0" [-f rules.yaml] [--promote NAME]
    genlab golden [train ...] [--notebooks-only | --headlines-only] [--seeds 5]
    genlab serve reports/<run> | models:/NAME@champion [--port 8000] [--max-batch 64] [--candidate SOURCE] ...
    genlab loadtest http://127.0.0.1:8000 --rates 5,20,80 [--requests 200 --duration 30]
    genlab monitor requests.jsonl --run reports/<run> [--window 50 --arl0 1000] [--out m.json]
    genlab canary requests.jsonl --run reports/<run> [--url http://127.0.0.1:8000]
    genlab params [train]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from genlab import params as P
from genlab.ops.pipeline import (NOTEBOOKS, PipelineError, available_notebooks, plan_run,
                             refresh_golden, run_pipeline)


def _load_yaml(path: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise P.ParameterError(f"-f {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise P.ParameterError(f"-f {path}: not valid YAML ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise P.ParameterError(f"-f {path}: expected a mapping of parameter: value, "
                               f"got {type(doc).__name__}")
    return doc


def collect_parameters(files: list[str], assignments: list[str], only: list[str] | None
                       ) -> dict[str, Any]:
    """Files first, then -p (later wins); str parameters keep their literal -p text."""
    values: dict[str, Any] = {}
    for path in files:
        values.update(_load_yaml(path))
    specs = [P.spec(s) for s in (only or NOTEBOOKS) if s in P.NOTEBOOK_PARAMS]
    for text in assignments:
        key, value, raw = P.parse_assignment(text)
        param = next((s[key] for s in specs if key in s), None)
        values[key] = P.restore_text(param, value, raw)
    return values


def _golden(args) -> int:
    from genlab.ops import golden

    found = available_notebooks()
    unknown = [short for short in args.only if short not in found]
    if unknown:
        print(f"genlab golden: unknown notebook(s) {unknown}; expected names from {list(found)}",
              file=sys.stderr)
        return 2
    if args.seeds < 3:
        print(f"genlab golden: --seeds must be at least 3 (a spread needs them), got {args.seeds}",
              file=sys.stderr)
        return 2
    selected = args.only or list(found)
    if not args.headlines_only:
        for short in selected:
            print(f"golden: {found[short]}")
            refresh_golden(found[short])
    if not args.notebooks_only:
        golden.write_golden([NOTEBOOKS[s] for s in golden.RECORDED], seeds=list(range(args.seeds)),
                            jobs=args.jobs)
    return 0


def _split_only(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _sweep(args) -> int:
    import json

    from genlab.ops.runs import atomic_write_text
    from genlab.ops.sweep import load_sweep, run_sweep

    if args.workers < 1 or args.threads < 1:
        print("genlab: error: --workers and --threads must be ≥ 1", file=sys.stderr)
        return 2
    try:
        sweep = load_sweep(args.file, args.reports_dir)
        mc = _tracking_client(args.track)
    except P.ParameterError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    try:
        rows = run_sweep(sweep, workers=args.workers, threads=args.threads,
                         scheduler=args.scheduler)
    except KeyboardInterrupt:
        print("genlab: interrupted; finished runs are in place", file=sys.stderr)
        return 130
    atomic_write_text(sweep.folder / "timings.json", json.dumps(
        {r["run"]: r["seconds"] for r in rows}, indent=1, sort_keys=True) + "\n")
    failed = any(r["status"] == "failed" for r in rows)
    if mc is not None:
        from genlab.operations.tracking import TrackingError, log_sweep

        done = [sweep.folder / r["run"] for r in rows if r["status"] != "failed"]
        try:
            parent = log_sweep(sweep.folder, done, mc=mc)
        except (TrackingError, OSError) as exc:
            print(f"genlab: error: sweep finished, tracking failed: {exc}", file=sys.stderr)
            return 1
        print(f"tracked: MLflow run {parent} with {len(done)} child runs ({mc.tracking_uri})")
    return 1 if failed else 0


def _tracking_client(flag: bool):
    """An MLflow client when tracking is asked for (--track or GENLAB_TRACK), else None; a
    missing extra is a ParameterError before any work starts."""
    from genlab.operations.tracking import TrackingError, client, tracking_requested

    if not tracking_requested(flag):
        return None
    try:
        return client()
    except TrackingError as exc:
        raise P.ParameterError(str(exc)) from None


def _gate(args) -> int:
    from genlab.operations.promotion import gate_and_promote
    from genlab.operations.tracking import TrackingError
    from genlab.ops.gate import GateError, load_rules
    from genlab.ops.reports import Table

    try:
        rows, promoted = gate_and_promote(args.target, load_rules(args.rule, args.file),
                                          args.promote, alias=args.alias)
    except (GateError, TrackingError) as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    print(repr(Table(rows, title=f"gate: {args.target}", digits=6)))
    failed = [r for r in rows if r["status"] != "pass"]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    if promoted:
        print(f"registered {promoted['name']} version {promoted['version']}; alias "
              f"'{promoted['alias']}' now points to it")
    elif args.promote:
        print(f"not registered: alias '{args.alias}' of {args.promote} left where it was")
    return 1 if failed else 0


def _serve(args) -> int:
    from genlab.serve.app import ServeConfig, serve
    from genlab.serve.sampler import SourceError

    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            print(f"genlab: error: --token-file {args.token_file}: {exc.strerror}", file=sys.stderr)
            return 2
        if not token:
            print(f"genlab: error: --token-file {args.token_file} is empty", file=sys.stderr)
            return 2
    bad = [f"{flag} must be {rule}, got {value}" for flag, value, rule, ok in (
        ("--max-batch", args.max_batch, ">= 1", args.max_batch >= 1),
        ("--batch-timeout-ms", args.batch_timeout_ms, ">= 0", args.batch_timeout_ms >= 0),
        ("--max-n", args.max_n, ">= 1", args.max_n >= 1),
        ("--candidate-share", args.candidate_share, "in [0, 1]", 0 <= args.candidate_share <= 1),
        ("--port", args.port, "in [0, 65535]", 0 <= args.port <= 65535)) if not ok]
    if bad:
        print(f"genlab: error: {bad[0]}", file=sys.stderr)
        return 2
    config = ServeConfig(max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms,
                         max_n=args.max_n, token=token, request_log=args.request_log,
                         log_outputs=args.log_outputs)
    from genlab.operations.tracking import TrackingError, model_resolver

    registry = any(str(s).startswith("models:/") for s in (args.source, args.candidate) if s)
    try:
        with model_resolver() if registry else contextlib.nullcontext():
            return serve(args.source, host=args.host, port=args.port, variant=args.variant,
                         candidate=args.candidate, candidate_share=args.candidate_share,
                         config=config)
    except (SourceError, FileNotFoundError, TrackingError) as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2


def _online(args) -> int:
    """`genlab monitor` (online metrics of a request log) and `genlab canary` (decide, apply)."""
    from genlab.operations import canary, online
    from genlab.operations.tracking import TrackingError
    from genlab.ops.reports import Table
    from genlab.ops.runs import atomic_write_text

    try:
        run_dir = Path(args.run)
        if str(args.run).startswith("models:/"):
            from genlab.operations.tracking import resolve_model_uri

            run_dir = resolve_model_uri(args.run)
        rows = online.read_log(args.log)
        metrics = online.online_metrics(rows, run_dir, window=args.window,
                                        arl0_target=args.arl0, alpha=args.alpha, seed=args.seed)
    except (online.LogError, TrackingError, FileNotFoundError, ValueError) as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    print(repr(Table.from_mapping(metrics, title=f"online metrics: {args.log}")))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    if args.command == "monitor":
        return 1 if metrics["online_drift_alarm"] else 0
    try:
        decision = canary.decide(metrics, alpha=args.alpha, margin=args.margin,
                                 min_records=args.min_records)
    except ValueError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    print(f"canary: {decision.action} - {decision.reason}")
    if args.url:
        canary.apply(args.url, decision)
        print(f"applied at {args.url}" if decision.action != "continue" else "nothing to apply")
    return 0


def _loadtest(args) -> int:
    from genlab.serve.loadtest import LoadTestError, main as loadtest_main

    try:
        return loadtest_main(args)
    except LoadTestError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2


def _add_serving(sub) -> None:
    srv = sub.add_parser("serve", help="serve a run's model over HTTP (POST /sample)")
    srv.add_argument("source", help="a run folder (reports/<name>) or models:/NAME@alias")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--variant", default="fp32", help="fp32 or a built variant's name")
    srv.add_argument("--max-batch", type=int, default=64, help="records per model call (1: unbatched)")
    srv.add_argument("--batch-timeout-ms", type=float, default=5.0,
                     help="how long a batch waits for more requests")
    srv.add_argument("--max-n", type=int, default=1024, help="largest n one request may ask for")
    srv.add_argument("--token-file", type=Path, help="require 'Authorization: Bearer <token>'")
    srv.add_argument("--request-log", type=Path, help="JSON lines, one per request")
    srv.add_argument("--log-outputs", action="store_true", help="put the samples in the log")
    srv.add_argument("--candidate", help="a second SOURCE served to --candidate-share of requests")
    srv.add_argument("--candidate-share", type=float, default=0.2)
    load = sub.add_parser("loadtest", help="open-loop Poisson load on a genlab server")
    load.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    load.add_argument("--rates", required=True, help="offered rates in requests/s, e.g. 5,20,80")
    load.add_argument("--requests", type=int, default=200, help="requests per rate (at most)")
    load.add_argument("--duration", type=float, default=30.0, help="seconds per rate (at most)")
    load.add_argument("--n", type=int, default=1, help="records per request")
    load.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    load.add_argument("--token-file", type=Path)
    load.add_argument("--json", type=Path, help="write the per-rate table as JSON")
    load.add_argument("--plot", type=Path, help="latency-vs-offered-load PNG")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genlab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute report notebooks into reports/<name>/")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("-f", "--file", action="append", default=[], metavar="PARAMS.YAML")
    run.add_argument("--only", help=f"comma-separated subset of {','.join(NOTEBOOKS)}")
    run.add_argument("--name", help="run name (default: <model>-<dataset>-seed<seed>)")
    run.add_argument("--reports-dir", type=Path, help="default: <project>/reports")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    run.add_argument("--track", action="store_true", help="log the run to MLflow (also: "
                     "GENLAB_TRACK=1; MLFLOW_TRACKING_URI, else mlruns/ in the project)")
    sweep = sub.add_parser("sweep", help="run a grid of parameter sets on Dask")
    sweep.add_argument("file", type=Path, help="sweep YAML (name, only, base, grid, runs)")
    sweep.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    sweep.add_argument("--threads", type=int, default=1, help="compute threads per run")
    sweep.add_argument("--scheduler", help="address of an existing Dask scheduler "
                       "(workers must share this file system)")
    sweep.add_argument("--reports-dir", type=Path, help="default: <project>/reports")
    sweep.add_argument("--track", action="store_true", help="log to MLflow: the sweep as a "
                       "parent run, each run as a child (also: GENLAB_TRACK=1)")
    gate = sub.add_parser("gate", help="check rules over headline JSON; non-zero exit on failure")
    gate.add_argument("target", type=Path, help="a run folder or a sweep folder")
    gate.add_argument("--rule", action="append", default=[], metavar="KEY<OP>VALUE")
    gate.add_argument("-f", "--file", action="append", default=[], metavar="RULES.YAML")
    gate.add_argument("--promote", metavar="NAME", help="when every rule passes: register the "
                      "run as a new version of model NAME and move --alias to it")
    gate.add_argument("--alias", default="champion", help="alias moved by --promote")
    gold = sub.add_parser("golden", help="refresh the committed notebooks' stored outputs and "
                          "the golden headline numbers with their tolerances (tests/golden/)")
    gold.add_argument("only", nargs="*", help=f"notebooks (default: all of {list(NOTEBOOKS)})")
    what = gold.add_mutually_exclusive_group()
    what.add_argument("--notebooks-only", action="store_true")
    what.add_argument("--headlines-only", action="store_true")
    gold.add_argument("--seeds", type=int, default=5, help="default runs whose spread sets the "
                      "tolerances (at least 3)")
    gold.add_argument("--jobs", type=int, default=2, help="seed runs at a time")
    for name, text in (("monitor", "online metrics of a request log (genlab serve "
                                    "--log-outputs): output drift, task completion, request drift"),
                       ("canary", "promote or roll back the candidate from a request log")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("log", type=Path, help="the server's request log (JSON lines)")
        cmd.add_argument("--run", required=True, help="the approved run folder or "
                         "models:/NAME@alias: its model's samples are the reference")
        cmd.add_argument("--window", type=int, default=50, help="monitor window (records)")
        cmd.add_argument("--arl0", type=int, default=1000, help="target records between false "
                         "alarms")
        cmd.add_argument("--alpha", type=float, default=0.05, help="level of the tests")
        cmd.add_argument("--seed", type=int, default=0)
        cmd.add_argument("--out", type=Path, help="write the metrics as JSON")
        if name == "canary":
            cmd.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin")
            cmd.add_argument("--min-records", type=int, default=100)
            cmd.add_argument("--url", help="the server: POST its /admin/promote or /admin/rollback")
    show = sub.add_parser("params", help="list a notebook's parameters with defaults")
    show.add_argument("notebook", nargs="?", default="train", choices=sorted(P.NOTEBOOK_PARAMS))
    _add_serving(sub)
    args = parser.parse_args(argv)

    if args.command == "serve":
        return _serve(args)
    if args.command in ("monitor", "canary"):
        return _online(args)
    if args.command == "loadtest":
        return _loadtest(args)
    if args.command == "params":
        for p in P.NOTEBOOK_PARAMS[args.notebook]:
            print(f"{p.name:24} {p.default!r:22} {p.expected():34} {p.doc}")
        return 0
    if args.command == "gate":
        return _gate(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "golden":
        return _golden(args)
    try:
        only = _split_only(args.only)
        values = collect_parameters(args.file, args.param, only)
        plan = plan_run(values, only=only, name=args.name, reports_dir=args.reports_dir)
        mc = _tracking_client(args.track)
    except P.ParameterError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_pipeline(plan, progress=not args.no_progress)
    except PipelineError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
    if mc is not None:
        from genlab.operations.tracking import TrackingError, log_run

        try:
            run_id = log_run(plan.final_dir, mc=mc)
        except (TrackingError, OSError) as exc:
            print(f"genlab: error: run finished, tracking failed: {exc}", file=sys.stderr)
            return 1
        print(f"tracked: MLflow run {run_id} ({mc.tracking_uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
