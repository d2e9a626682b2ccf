"""Timing and peak-memory windows for benchmark children (stdlib + torch only: the reference
environment, with transformers 4.x and no xsub, imports this file too).

CPU peak memory is the process's resident set: the window resets the kernel's high-water mark
(`/proc/self/clear_refs` 5) after the model and data are loaded, so `peak_extra_mib` is what the
measured pass itself added on top of them. On CUDA it is torch's allocator peak over the window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

MIB = 2**20


def rss() -> tuple[int, int]:
    """(current, peak) resident set size of this process in bytes (Linux /proc/self/status)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class Window:
    """`with Window(device) as w: ...` then `w.seconds`, `w.peak_extra_mib`, `w.peak_mib`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self.peak_extra_mib = 0.0
        self.peak_mib = 0.0
        self.peak_reset = False

    def __enter__(self) -> Window:
        self._sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.peak_reset = True
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.peak_reset = True
            except OSError:  # not permitted: the peak then includes loading (reported as such)
                pass
            self._base = rss()[0]
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else rss()[1]
        self.peak_mib = peak / MIB
        self.peak_extra_mib = max(0, peak - self._base) / MIB

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        return {
            f"{prefix}seconds": self.seconds,
            f"{prefix}peak_extra_mib": self.peak_extra_mib,
            f"{prefix}peak_mib": self.peak_mib,
            f"{prefix}peak_reset": self.peak_reset,
        }


def setup(threads: int, device: str) -> torch.device:
    """Threads as asked (the development machine has 2 cores) and the device, checked."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; run with --device cpu")
    return dev


def load_workload(path: str | Path) -> dict[str, Any]:
    """The shared batches: {"batches": [{"input_ids": [1-D long tensors], "labels": long tensor}],
    "pad_id": int, "pad_to": int, ...} (see bench/_common.py)."""
    return torch.load(path, map_location="cpu", weights_only=True)
