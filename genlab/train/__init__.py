"""Stage 01, training: Lightning fitting, DP-SGD, canaries, and the glue `01_train.ipynb` calls
(`notebook.py`). `python -m genlab.train` runs the same steps as a script (`__main__.py`)."""
