"""Stage 02, evaluation: feature extractors, sample-quality metrics with confidence intervals,
classifier-based metrics, and the glue `02_evaluate.ipynb` calls (`notebook.py`)."""
