"""Golden headline numbers: what the default run must reproduce on any machine.

Floats from training and sampling differ between CPUs, thread counts and GPUs, so the regression
record is not exact text. `genlab golden` runs the default pipeline for 5 seeds and, at seed 0, on
4 simulated machines (`MACHINES`: other instruction sets and MKL code paths, two threads, the
portable-kernel switches off), and writes per notebook `tests/golden/<notebook>.json`:

- every headline key of the seed-0 run (the key set itself is compared exactly);
- per key a rule, chosen from what the runs show:
  - `exact`: strings, bools, ints and nulls that every seed and machine reproduces (pool sizes,
    parameters, null reasons), and the data fingerprint (no hardware changes data or pools);
  - `text`: strings or bools that differ between runs (a verdict near its threshold, a reason
    quoting a number, the best of tied methods): only their type is compared; the numbers
    behind them are;
  - `number`: floats, and ints that differ between runs, compared within
    `tolerance = max(K_MACHINE * machine rms, K_SEED * seed sd, REL_FLOOR * |value|, ABS_FLOOR)`.
    `machine rms` is the root-mean-square deviation of the simulated machines from seed 0:
    what another machine does to this number. Training amplifies rounding differences, so a
    few machines can underestimate it; half a seed's standard deviation is the second bound;
- the structure of `<notebook>.tables.json` (nested keys and list lengths), where all runs agree;
- the machine it was made on (`made_on`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from genlab.ops.runs import atomic_write_text, project_root

K_MACHINE = 4.0
K_SEED = 0.5
REL_FLOOR = 1e-4
ABS_FLOOR = 1e-6
EXACT_KEYS = ("data_fingerprint",)  # a function of data and parameters only
SEEDS = (0, 1, 2, 3, 4)
# the notebooks whose headline numbers get records: the bench stages every run goes through;
# the serving, operations and security reports have their own tests (their runs cost minutes)
RECORDED = ("train", "evaluate", "privacy_audit", "drift_study")
# Other machines, simulated on this one by each library's own switches (seed 0 each).
MACHINES = {
    "avx2-mkl-avx2-2threads": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO",
                               "MKL_ENABLE_INSTRUCTIONS": "AVX2", "GENLAB_THREADS": "2",
                               "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "avx2-mkl-sse4": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO",
                      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "portable-mkl-avx2": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO",
                          "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "portable-mkl-sse4": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO",
                          "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def golden_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "tests" / "golden"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def table_shape(obj: Any) -> Any:
    """Nested keys and list lengths of a tables document; scalar values are left out."""
    if isinstance(obj, Mapping):
        return {k: table_shape(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        keys = sorted({k for item in obj if isinstance(item, Mapping) for k in item})
        return {"len": len(obj), "item_keys": keys}
    return None


def key_rule(key: str, seed_values: Sequence[Any], machine_values: Sequence[Any] = ()
             ) -> dict[str, Any]:
    """The comparison rule of one headline key from its values over the seeds (seed 0 first)
    and over the simulated machines (seed 0 each)."""
    value = seed_values[0]
    values = [*seed_values, *machine_values]
    numbers = [v for v in seed_values if _is_number(v)]
    if key in EXACT_KEYS or (all(v == value for v in values) and not isinstance(value, float)):
        return {"rule": "exact", "value": value}
    if any(isinstance(v, float) for v in values) or all(_is_number(v) for v in values):
        sd = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        devs = [v - value for v in machine_values if _is_number(v) and _is_number(value)]
        rms = math.sqrt(sum(d * d for d in devs) / len(devs)) if devs else 0.0
        floor = REL_FLOOR * abs(value) if _is_number(value) else 0.0
        return {"rule": "number", "value": value,
                "tolerance": max(K_MACHINE * rms, K_SEED * sd, floor, ABS_FLOOR),
                "machine_rms": rms, "seed_sd": sd, "seed_values": list(seed_values),
                "machine_values": list(machine_values),
                "nullable": any(v is None for v in values)}
    return {"rule": "text", "value": value, "seen": sorted({repr(v) for v in values})}


def build(stem: str, docs: Sequence[Mapping[str, Any]], tables: Sequence[Any],
          seeds: Sequence[int], machine_docs: Mapping[str, Mapping[str, Any]] | None = None
          ) -> dict[str, Any]:
    """The golden record of one notebook from its headline JSON (and tables) per seed and per
    simulated machine."""
    machine_docs = dict(machine_docs or {})
    keys = [k for k in docs[0] if k not in ("parameters", "provenance")]
    for name, doc in [*zip(map(str, seeds), docs), *machine_docs.items()]:
        other = sorted(set(k for k in doc if k not in ("parameters", "provenance")) ^ set(keys))
        if other:
            raise ValueError(f"{stem}: run {name} has other headline keys than seed "
                             f"{seeds[0]}: {other}")
    shapes = [table_shape(t) for t in tables]
    machines = list(machine_docs.values())
    return {
        "notebook": stem,
        "seeds": list(seeds),
        "machines": {k: MACHINES.get(k, {}) for k in machine_docs},
        "rule": f"tolerance = max({K_MACHINE} * machine rms, {K_SEED} * seed sd, "
                f"{REL_FLOOR} * |value|, {ABS_FLOOR})",
        "made_on": {**docs[0]["provenance"].get("numeric", {}),
                    "git_commit": docs[0]["provenance"].get("git_commit")},
        "parameters": {k: v for k, v in docs[0]["parameters"].items() if k != "run_dir"},
        "keys": {k: key_rule(k, [d[k] for d in docs], [d[k] for d in machines]) for k in keys},
        "tables_shape": shapes[0] if shapes and all(s == shapes[0] for s in shapes) else None,
    }


def compare(golden: Mapping[str, Any], doc: Mapping[str, Any],
            tables: Any = None) -> list[str]:
    """Every way `doc` (a headline JSON) departs from its golden record; [] when it matches."""
    stem = golden["notebook"]
    rules = golden["keys"]
    got = {k: v for k, v in doc.items() if k not in ("parameters", "provenance")}
    problems = [f"{stem}: key '{k}' missing" for k in rules if k not in got]
    problems += [f"{stem}: key '{k}' not in the golden record" for k in got if k not in rules]
    given = {k: v for k, v in doc.get("parameters", {}).items() if k != "run_dir"}
    if given != {k: v for k, v in golden["parameters"].items() if k != "run_dir"}:
        problems.append(f"{stem}: parameters differ from the golden run's")
    for key, rule in rules.items():
        if key not in got:
            continue
        value, want = got[key], rule["value"]
        if rule["rule"] == "exact" and (value != want or type(value) is not type(want)):
            problems.append(f"{stem}.{key}: {value!r}, expected exactly {want!r}")
        elif rule["rule"] == "text" and type(value) is not type(want):
            problems.append(f"{stem}.{key}: {value!r} is a {type(value).__name__}, golden "
                            f"a {type(want).__name__}")
        elif rule["rule"] == "number":
            problems += _compare_number(stem, key, value, rule)
    if tables is not None and golden.get("tables_shape") is not None \
            and table_shape(tables) != golden["tables_shape"]:
        problems.append(f"{stem}.tables.json: structure (keys, list lengths) differs")
    return problems


def _compare_number(stem: str, key: str, value: Any, rule: Mapping[str, Any]) -> list[str]:
    want, tol = rule["value"], rule["tolerance"]
    if value is None or want is None:
        if value is None and want is None or rule["nullable"]:
            return []
        return [f"{stem}.{key}: {value!r}, golden {want!r} (null only where the golden is)"]
    if not _is_number(value):
        return [f"{stem}.{key}: {value!r} is not a number"]
    if abs(value - want) > tol:
        return [f"{stem}.{key}: {value:.6g} is {abs(value - want):.3g} from the golden "
                f"{want:.6g}; tolerance {tol:.3g} (machine rms {rule['machine_rms']:.3g}, seed "
                f"sd {rule['seed_sd']:.3g})"]
    return []


def load(stem: str, root: Path | None = None) -> dict[str, Any]:
    path = golden_dir(root) / f"{stem}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no golden record {path}: run `make golden`")
    return json.loads(path.read_text())


def check_run(run_dir: Path, stems: Sequence[str], root: Path | None = None) -> list[str]:
    """Compare a default run's headline JSON and tables against the golden records."""
    problems: list[str] = []
    for stem in stems:
        doc = json.loads((run_dir / f"{stem}.json").read_text())
        tables_path = run_dir / f"{stem}.tables.json"
        tables = json.loads(tables_path.read_text()) if tables_path.is_file() else None
        problems += compare(load(stem, root), doc, tables)
    return problems


def run_defaults(runs: Mapping[str, tuple[int, Mapping[str, str]]], reports_dir: Path, *,
                 jobs: int = 2, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """The default pipeline once per named (seed, environment), `jobs` runs at a time."""
    def one(name: str) -> Path:
        seed, env = runs[name]
        cmd = [sys.executable, "-m", "genlab", "run", "-p", f"seed={seed}", "--no-progress",
               "--only", ",".join(RECORDED), "--name", name, "--reports-dir", str(reports_dir)]
        out = subprocess.run(cmd, cwd=project_root(), capture_output=True, text=True,
                             env={**os.environ, **env})
        if out.returncode != 0:
            raise RuntimeError(f"golden run {name} failed:\n{out.stderr[-2000:]}")
        echo(f"golden: {name} done")
        return reports_dir / name

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return dict(zip(runs, pool.map(one, runs)))


def write_golden(stems: Sequence[str], seeds: Sequence[int] = SEEDS, *, jobs: int = 2,
                 root: Path | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Run the default pipeline per seed and per simulated machine; write
    tests/golden/<stem>.json for each notebook."""
    todo = {**{f"seed{s}": (s, {}) for s in seeds},
            **{f"machine-{m}": (seeds[0], env) for m, env in MACHINES.items()}}
    with tempfile.TemporaryDirectory(prefix="genlab-golden-") as tmp:
        runs = run_defaults(todo, Path(tmp), jobs=jobs, echo=echo)
        written = []
        for stem in stems:
            docs = [json.loads((runs[f"seed{s}"] / f"{stem}.json").read_text()) for s in seeds]
            machine_docs = {m: json.loads((runs[f"machine-{m}"] / f"{stem}.json").read_text())
                            for m in MACHINES}
            tables = [json.loads(t.read_text()) for run in runs.values()
                      if (t := run / f"{stem}.tables.json").is_file()]
            record = build(stem, docs, tables, seeds, machine_docs)
            path = golden_dir(root) / f"{stem}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
            written.append(path)
            echo(f"golden: {path}")
    return written

