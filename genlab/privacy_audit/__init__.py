"""Stage 03, privacy audit: membership-inference attacks, their statistics and ε bounds,
memorisation tests, and the glue `03_privacy_audit.ipynb` calls (`notebook.py`)."""
