"""How one network of a variant is stored and executed: eager fp32, int8, bf16, ONNX Runtime.

A *network* is what a sampler calls once per evaluation: a decoder head ``head(zc) -> x`` (the
VAE's decoder or the GAN's generator, with its output activation; ``zc`` = latent code with the
one-hot label appended) or a DDPM denoiser ``eps(x, t, labels)``. A *backend* stores it in a
variant folder and gives back a callable on float32 CPU tensors:

- ``fp32``: the eager PyTorch module, weights in ``weights.pt``.
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights,
  activations quantized per batch at run time); convolutions stay fp32 (PyTorch's dynamic
  quantization has no convolution), so a U-Net gains little. This is the eager int8 path torch
  2.13 itself ships; torchao 0.18 (its successor) installs without changing torch, but its int8
  kernels target GPUs: on this CPU its ``Int8DynamicActivationInt8WeightConfig`` ran a small MLP
  16× slower than fp32 at batch 1 and its import logs failed CUDA-library loads, so it is not used.
  The deprecation warnings torch prints for ``torch.ao.quantization`` are silenced here.
- ``bf16``: weights stored in bfloat16 (half the bytes), matrix products and convolutions run
  under ``torch.autocast(cpu, bfloat16)``; built only on CPUs with native bf16 instructions.
- ``onnx``: the network exported with ``torch.onnx.export`` (dynamo exporter, dynamic batch) and
  run by ONNX Runtime's CPU provider with as many intra-op threads as torch uses at call time.
- ``onnx-int8``: that graph after ONNX Runtime's own dynamic quantization (``quantize_dynamic``:
  int8 weights for MatMul/Gemm, as ``int8`` quantizes the linear layers), the maintained int8
  path for CPU inference. Weights use 7 of the 8 bits (``reduce_range``) and convolutions stay
  fp32: x86 CPUs without VNNI (AVX2 only) multiply uint8 × int8 pairs into saturating int16
  sums, and on such a CPU full-range weights put a VAE's outputs 0.098 from fp32 and quantized
  convolutions a conditional U-Net's 0.064 (tests/cost_latency/test_variants.py, limit 0.05);
  with both changes 0.005 and 0.002.

Checkpoints are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

BACKENDS = ("fp32", "int8", "bf16", "onnx", "onnx-int8")
WEIGHTS = "weights.pt"
ONNX_FILE = "model.onnx"


def cpu_has_bf16() -> bool:
    """Whether this CPU executes bfloat16 natively (AVX512-BF16 or AMX-BF16 on x86, BF16 on ARM)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


class DecoderHead(nn.Module):
    """``decoder(zc)`` followed by the model's output activation (sigmoid for images in [0, 1])."""

    def __init__(self, decoder: nn.Module, sigmoid: bool):
        super().__init__()
        self.decoder, self.sigmoid = decoder, bool(sigmoid)

    def forward(self, zc: torch.Tensor) -> torch.Tensor:
        out = self.decoder(zc)
        return torch.sigmoid(out) if self.sigmoid else out


@contextlib.contextmanager
def _quiet():
    """torch.ao's deprecation notices, the ONNX exporter's progress lines and log notices (missing
    torchvision operators) and ONNX Runtime's quantizer advice (root logger) stay out of reports."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx")]  # root; the exporter's notices
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def quantize_int8(module: nn.Module) -> nn.Module:
    with _quiet():
        return torch.ao.quantization.quantize_dynamic(module.eval(), {nn.Linear}, dtype=torch.qint8)


def _example_inputs(kind: str, data_shape, in_dim: int, conditional: bool) -> tuple:
    if kind == "decoder":
        return (torch.zeros(2, in_dim),)
    x, t = torch.zeros(2, *data_shape), torch.tensor([1, 2])
    return (x, t, torch.tensor([0, 1])) if conditional else (x, t)


def export_onnx(module: nn.Module, kind: str, data_shape, in_dim: int, conditional: bool) -> bytes:
    """The network as an ONNX graph with a dynamic batch axis (torch's dynamo exporter)."""
    args = _example_inputs(kind, data_shape, in_dim, conditional)
    names = ["zc"] if kind == "decoder" else ["x", "t", "labels"][: len(args)]
    buf = io.BytesIO()
    with _quiet():
        torch.onnx.export(module.eval(), args, buf, input_names=names, output_names=["out"],
                          dynamic_axes={n: {0: "n"} for n in (*names, "out")}, dynamo=True,
                          verbose=False)
    return buf.getvalue()


def save_network(folder: Path, backend: str, module: nn.Module, *, kind: str, data_shape,
                 in_dim: int, conditional: bool) -> None:
    """Write the fp32 ``module`` into ``folder`` in the form ``backend`` executes."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    module = module.eval()
    if backend == "fp32":
        torch.save(module.state_dict(), folder / WEIGHTS)
    elif backend == "int8":
        torch.save(quantize_int8(module).state_dict(), folder / WEIGHTS)
    elif backend == "bf16":
        torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                    for k, v in module.state_dict().items()}, folder / WEIGHTS)
    else:
        graph = export_onnx(module, kind, data_shape, in_dim, conditional)
        if backend == "onnx":
            (folder / ONNX_FILE).write_bytes(graph)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            raw = folder / "fp32.onnx"
            raw.write_bytes(graph)
            with _quiet():
                quantize_dynamic(str(raw), str(folder / ONNX_FILE), weight_type=QuantType.QInt8,
                                 reduce_range=True, op_types_to_quantize=["MatMul", "Gemm"])
            raw.unlink()


def load_network(folder: Path, backend: str, skeleton: nn.Module) -> Callable[..., torch.Tensor]:
    """The stored network as a callable on float32 CPU tensors (``skeleton``: an fp32 module of
    the right architecture, whose weights are replaced)."""
    if backend in ("onnx", "onnx-int8"):
        return OrtNetwork(folder / ONNX_FILE)
    with _quiet():  # torch's TypedStorage notice when reading int8 packed weights
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    if backend == "int8":
        module = quantize_int8(skeleton)
        module.load_state_dict(state)
        return no_grad_callable(module)
    if backend == "bf16":
        skeleton.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        module = skeleton.eval()

        def run(*args):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return module(*args).float()
        return run
    skeleton.load_state_dict(state)
    return no_grad_callable(skeleton.eval())


def no_grad_callable(module: nn.Module) -> Callable[..., torch.Tensor]:
    def run(*args):
        with torch.no_grad():
            return module(*args)
    return run


class OrtNetwork:
    """An ONNX Runtime session per thread count: each call runs with ``torch.get_num_threads()``
    intra-op threads, so one thread-limit setting governs every backend alike."""

    def __init__(self, path: Path):
        self.graph = Path(path).read_bytes()
        self.sessions: dict[int, object] = {}

    def _session(self):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads not in self.sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self.sessions[threads] = ort.InferenceSession(self.graph, opts,
                                                          providers=["CPUExecutionProvider"])
        return self.sessions[threads]

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        sess = self._session()
        feeds = {i.name: np.ascontiguousarray(a.detach().cpu().numpy())
                 for i, a in zip(sess.get_inputs(), args)}
        return torch.from_numpy(sess.run(None, feeds)[0])
