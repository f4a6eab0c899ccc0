"""The numeric environment: fixed threads, instruction-set switches, and a record of both.

Why: floats from training depend on more than the seed. A parallel reduction sums in another
order with another thread count, and vectorised kernels (AVX-512, AVX2, SSE, NEON) round
differently. genlab therefore pins what can be pinned and records the rest:

- **Threads.** Every kernel runs `GENLAB_THREADS` intra-op threads (default 1), not the host's core
  count. The models are small; on a shared 2-core machine a second thread made training ~25x
  slower through OpenMP oversubscription, and one thread makes the numbers independent of the
  host's cores.
- **Instruction set.** `ATEN_CPU_CAPABILITY=default` (torch's portable kernels) and
  `MKL_CBWR=COMPATIBLE` (MKL's conditional numerical reproducibility) are set unless the user set
  them. Measured with `benchmarks/numeric_switches.py` on an AVX-512 CPU with AVX2 and SSE4 CPUs
  simulated by each library's own ISA cap: with both set, 10 epochs of the default VAE gave
  bit-identical weights on all three; with neither, the SSE4 run differed by 6e-3. Other
  architectures (ARM, GPUs) still differ, so regression tests compare floats within measured
  tolerances (`genlab.ops.golden`), never as exact text.

Both switches are read by torch/MKL at their first computation, so :func:`configure` must run
before any tensor op; `genlab run`, the installed kernel spec and the test suite set them in the
environment before Python starts.
"""

from __future__ import annotations

import os
import platform
from typing import Any

THREADS_ENV = "GENLAB_THREADS"
DEFAULT_THREADS = 1
# Switches that make x86 instruction sets agree (set unless the environment already has them).
PORTABLE_SWITCHES = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
# What the numeric record reports from the environment (set or not).
RECORDED_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", THREADS_ENV)


def threads() -> int:
    """The intra-op thread count genlab runs with (`GENLAB_THREADS`, default 1)."""
    raw = os.environ.get(THREADS_ENV, str(DEFAULT_THREADS))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"environment variable {THREADS_ENV}: expected a positive integer, "
                         f"got {raw!r}")
    return n


def kernel_environment() -> dict[str, str]:
    """Environment variables a notebook kernel or worker process should start with."""
    n = str(threads())
    env = {k: os.environ.get(k, v) for k, v in PORTABLE_SWITCHES.items()}
    env.update({THREADS_ENV: n, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", n),
                "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", n)})
    return env


def configure() -> int:
    """Pin threads and set the portable switches in this process; return the thread count.

    Idempotent. Call it before the first tensor op (the switches are read then)."""
    import torch
    from threadpoolctl import threadpool_limits

    for key, value in kernel_environment().items():
        os.environ.setdefault(key, value)
    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    threadpool_limits(n)  # numpy / scipy / scikit-learn BLAS and OpenMP pools
    return n


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numeric_environment() -> dict[str, Any]:
    """What can change a float: CPU, instruction set in use, threads, device, switches."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "switches": {k: os.environ.get(k) for k in RECORDED_ENV},
    }
