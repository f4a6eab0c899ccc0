"""The prologue every report notebook shares: `open_run(p)`.

The numeric environment (`reproducibility.configure`), quiet Lightning, the reports' figure style, the run folder of `p.run_dir`, and, for the notebooks
that read what training wrote, its data spec, the data reloaded from where training recorded it
(`data.load_recorded`) and the run's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genlab import data
from genlab.models import load_model
from genlab.ops.reports import provenance, use_report_style
from genlab.ops.runs import RunFolder
from genlab.params import Params
from genlab.reproducibility import configure


@dataclass
class OpenRun:
    p: Params
    run: RunFolder
    spec: data.DataSpec | None = None
    ds: data.Dataset | None = None
    model: Any = None  # None: no model was asked for, or the run has none (model=None)

    def provenance(self) -> dict[str, Any]:
        """Code, library versions, parameters, seed and data of this report."""
        return provenance(self.p, dataset=self.ds.name, data_fingerprint=self.spec.fingerprint)


def open_run(p: Params, *, trained: bool = True, model: bool | None = True) -> OpenRun:
    """Set up a report notebook for the run `p.run_dir`.

    `trained=False` (training itself): only the run folder. Otherwise the data spec and data are
    loaded, and the model when `model` is True (a missing checkpoint is an error naming the
    notebook to run first) or when it exists and `model` is None."""
    from genlab.train.training import quiet_lightning

    configure()  # fixed threads, portable kernels: before the notebook's first tensor op
    quiet_lightning()
    use_report_style()
    run = RunFolder(p.run_dir)
    if not trained:
        return OpenRun(p, run)
    spec = data.DataSpec.load(run.require(run.data_spec, "train"))
    ds = data.load_recorded(spec)
    found = None
    if model:
        found = load_model(run.require(run.model_ckpt, "train"))
    elif model is None and run.model_ckpt.exists():
        found = load_model(run.model_ckpt)
    return OpenRun(p, run, spec, ds, found)
