"""The committed notebooks as golden records: structure nbval relies on, and clean outputs.

nbval itself (`pytest notebooks --nbval-lax`) re-executes them and compares the cells marked
`# NBVAL_CHECK_OUTPUT`; these checks make sure that comparison has something to bite on."""

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
    assert checked, "nothing for nbval --nbval-lax to compare"
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


def test_train_headline_is_checked():
    nb = nbformat.read(NOTEBOOKS["train"], as_version=4)
    cell = next(c for c in _code(nb) if "report.headline()" in c.source)
    assert "# NBVAL_CHECK_OUTPUT" in cell.source
    assert "final_val_loss" in cell.outputs[0]["data"]["text/plain"]
