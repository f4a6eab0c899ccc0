"""Stage 04, drift study: two-sample detectors, shifts, stream monitors, the retraining trigger,
and the glue `04_drift_study.ipynb` calls (`notebook.py`)."""
