"""`05_cost_latency` in the pipeline: reproducible files without wall-clock, timings beside them."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from genlab.ops.reports import WALL_CLOCK_TAG, normalize_notebook


def test_wall_clock_cells_keep_only_their_pointer_line():
    nb = nbformat.v4.new_notebook()
    timed = nbformat.v4.new_code_cell("report.measure_timings()", metadata={"tags": [WALL_CLOCK_TAG]})
    timed.outputs = [nbformat.v4.new_output("stream", name="stdout", text="wall-clock measurements: x.json\n"),
                     nbformat.v4.new_output("display_data", data={"text/plain": "p50 3.1 ms"})]
    timed.execution_count = 7
    plain = nbformat.v4.new_code_cell("1 + 1")
    plain.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=8)]
    nb.cells = [timed, plain]
    normalize_notebook(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["wall-clock measurements: x.json\n"]
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "2"  # other cells untouched


def genlab(*args, reports):
    cmd = [sys.executable, "-m", "genlab.ops.cli", "run", "--no-progress", "--reports-dir", str(reports), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


QUICK = ["-p", "decoder_iters=30", "-p", "n_draws=4", "-p", "latency_reps=3", "-p", "latency_budget_s=0.2"]
REPRODUCIBLE = ("05_cost_latency.json", "05_cost_latency.tables.json", "05_cost_latency.html",
                "05_cost_latency.ipynb")


@pytest.mark.slow
def test_notebook_runs_in_the_pipeline_and_reruns_byte_identical(tmp_path):
    train = genlab("-p", "max_epochs=3", "-p", "width=32", "--only", "train", "--name", "r", reports=tmp_path)
    assert train.returncode == 0, train.stderr
    first = genlab(*QUICK, "--only", "cost_latency", "--name", "r", reports=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "r"
    doc = json.loads((run / "05_cost_latency.json").read_text())
    tables = json.loads((run / "05_cost_latency.tables.json").read_text())
    built = [n for n, s in tables["build_status"].items() if s == "built"]
    assert doc["recommended_variant"] in built and "student" in built and "fp32" in built
    assert set(tables["variants"]) == set(built)
    assert doc["speedup_at_batch1"] is None and "timings.json" in doc["speedup_at_batch1_na_reason"]
    assert doc["fd_real_vs_real"] < doc["fd_reference"]
    assert doc["fd_ratio_to_reference"] == pytest.approx(doc["fd_recommended"] / doc["fd_reference"])
    timings = json.loads((run / "05_cost_latency.timings.json").read_text())
    assert timings["speedup_at_batch1"] > 0 and set(timings["variants"]) == set(built)
    page = (run / "05_cost_latency.html").read_text()
    assert "p50_ms" not in page and "wall-clock measurements: 05_cost_latency.timings.json" in page
    assert "p50_ms" in (run / "05_cost_latency.timings.html").read_text()
    before = {name: (run / name).read_bytes() for name in REPRODUCIBLE}
    second = genlab(*QUICK, "--only", "cost_latency", "--name", "r", reports=tmp_path)
    assert second.returncode == 0, second.stderr
    for name in REPRODUCIBLE:
        assert (run / name).read_bytes() == before[name], name
