"""Shared test set-up: the numeric environment genlab runs with, before any test touches torch.

`reproducibility.configure()` pins the intra-op threads (GENLAB_THREADS, default 1) and sets the
portable-kernel switches unless the environment already chose others (CI's "other machine" run
sets ATEN_CPU_CAPABILITY, MKL_CBWR and GENLAB_THREADS on purpose)."""

from genlab import reproducibility

reproducibility.configure()
