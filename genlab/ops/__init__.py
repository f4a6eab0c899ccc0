"""Running the stages: run folders, reports, the papermill pipeline, the `genlab` command line,
sweeps, CI gates."""
