"""Which precision the model's matmuls run in: one rule for every stage (`precision` in the config).

- `fp32`: plain float32 everywhere.
- `bf16`: bf16 autocast (torch.autocast on the run's device type): linear layers, matmuls and
  attention run in bf16, everything autocast keeps in float32 (softmax, layer norm, losses) stays so.
- `auto` (the default): bf16 on CUDA, and on a CPU with native bf16 arithmetic (x86 AVX512-BF16 or
  AMX-BF16, Arm BF16 / SVE-BF16) with oneDNN available, for models of hidden size 256 and more;
  fp32 elsewhere. A CPU without native bf16 would emulate it, slower than fp32, and a tiny model
  gains nothing from it, so those stay in fp32.

Only the model's forward (and its backward) is affected: gate gradients are read out as float32, and
importances, metrics and CKA statistics are accumulated in float32/float64 by their callers.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a device is asked: a finished job is skipped without it
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
# torch.cpu.get_capabilities() keys that mean hardware bf16 dot products (x86, then Arm)
NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Does this CPU do bf16 arithmetic natively, as torch sees it (cpuinfo via torch, oneDNN)?

    `torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is not enough: it is also true on AVX512
    CPUs without the bf16 instructions (Skylake, Cascade Lake), where oneDNN emulates bf16.
    """
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        caps = get()
    except RuntimeError:
        return False
    return any(bool(caps.get(name, False)) for name in NATIVE_BF16_FEATURES)


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return precision


# Below this hidden size a model is all per-op overhead on a CPU, and bf16 autocast (casts, a oneDNN
# kernel per new padded length) costs more than its faster matmuls save: the embedded default (64) ran
# its training step 0.85x and its importance pass 0.4x as fast in bf16 (bench/README.md).
CPU_BF16_MIN_HIDDEN = 256


def resolve(precision: str, device: torch.device | str, hidden_size: int | None = None) -> str:
    """ "bf16" or "fp32": what `precision` (auto | fp32 | bf16) means on `device` for a model of
    `hidden_size` (None: a pretrained checkpoint, taken as large)."""
    import torch

    if check(str(precision)) != "auto":
        return str(precision)
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    small = hidden_size is not None and hidden_size < CPU_BF16_MIN_HIDDEN
    if device.type == "cpu" and cpu_has_native_bf16() and not small:
        return "bf16"
    return "fp32"


def _no_gpu_here() -> bool:
    """No GPU driver on this machine (no NVIDIA or ROCm device files): `auto` cannot pick CUDA."""
    return not (
        os.path.exists("/proc/driver/nvidia/version")
        or glob.glob("/dev/nvidia[0-9]*")
        or os.path.exists("/dev/kfd")
    )


def for_run(cfg: Any) -> str:
    """The precision a run's matmuls use: its `precision` on its device for its model (the embedded
    model's size is known from the config; a checkpoint counts as large). Answered without importing
    torch where the answer cannot depend on it (an explicit precision; a small model on a CPU)."""
    precision = check(str(cfg.precision))
    hidden = int(cfg.model.arch.hidden_size) if str(cfg.model.source) == "embedded" else None
    if precision != "auto":
        return precision
    on_cpu = str(cfg.train.device) == "cpu" or (str(cfg.train.device) == "auto" and _no_gpu_here())
    if on_cpu and hidden is not None and hidden < CPU_BF16_MIN_HIDDEN:
        return "fp32"
    return resolve(precision, pick_device(cfg.train.device), hidden)


def dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The matmul dtype: torch.bfloat16 or torch.float32."""
    import torch

    return torch.bfloat16 if resolve(precision, device) == "bf16" else torch.float32


def describe(precision: str, device: torch.device | str) -> str:
    """The resolved precision for results tables and artifact identity: "bf16" or "fp32"."""
    return resolve(precision, device)


def autocast(device: torch.device | str, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` resolves to bf16 on `device`, else a no-op context."""
    import torch

    device = torch.device(device)
    if resolve(precision, device) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def pick_device(name: str = "auto") -> torch.device:
    """`train.device`: a torch device name, or auto (CUDA where there is one, else the CPU)."""
    import torch

    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
