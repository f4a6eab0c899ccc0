"""The committed notebooks: structure nbval relies on, and clean outputs.

nbval itself (`pytest notebooks --nbval-lax`) re-executes them and compares the cells marked
`# NBVAL_CHECK_OUTPUT` as exact text. Only outputs no hardware changes are marked (pools, the
data fingerprint, representation sizes, a data-only test); numbers from training and sampling
are compared within tolerances against `tests/golden/` instead (test_golden.py)."""

import re


import nbformat
import pytest

from genlab.ops.pipeline import available_notebooks

NOTEBOOKS = available_notebooks()


@pytest.fixture(params=sorted(NOTEBOOKS), ids=str)
def notebook(request):
    return nbformat.read(NOTEBOOKS[request.param], as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_one_parameters_cell_of_plain_assignments(notebook):
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert " = " in line and not line.startswith(("import", "from")), line


def test_checked_cells_hold_stored_outputs(notebook):
    checked = [c for c in _code(notebook) if "# NBVAL_CHECK_OUTPUT" in c.source]
    for cell in checked:
        text = "".join(o.get("data", {}).get("text/plain", o.get("text", ""))
                       for o in cell.outputs)
        assert text.strip(), f"checked cell without stored output:\n{cell.source}"


def test_provenance_cell_is_ignored_by_nbval(notebook):
    for cell in _code(notebook):
        if "provenance(P" in cell.source:
            assert "# NBVAL_IGNORE_OUTPUT" in cell.source


def test_golden_outputs_are_clean(notebook):
    assert "papermill" not in notebook.metadata
    for cell in _code(notebook):
        assert cell.execution_count is not None, "re-run `make golden`"
        for out in cell.outputs:
            assert out.output_type != "error", out.get("evalue")
            assert out.get("name") != "stderr", f"stderr noise in a report:\n{out.text[:300]}"


def test_pools_are_checked_exactly():
    nb = nbformat.read(NOTEBOOKS["train"], as_version=4)
    cell = next(c for c in _code(nb) if "report.pools()" in c.source)
    assert "# NBVAL_CHECK_OUTPUT" in cell.source
    assert "fingerprint" in cell.outputs[0]["data"]["text/plain"]


# A float printed to 3+ significant digits with a fractional part: training-dependent on
# another CPU, so it must not be compared as exact text.
_FRACTION = re.compile(r"\b\d+\.\d{3,}")


def test_checked_cells_print_no_training_floats(notebook):
    for cell in _code(notebook):
        if "# NBVAL_CHECK_OUTPUT" not in cell.source:
            continue
        assert "headline()" not in cell.source, "headline floats: compare via tests/golden/"
        text = "".join(o.get("data", {}).get("text/plain", o.get("text", ""))
                       for o in cell.outputs)
        assert not _FRACTION.search(text), f"exact check of a float:\n{text[:400]}"
