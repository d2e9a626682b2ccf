"""Gate-gradient importance of heads and MLPs (Michel et al. 2019): one pass, gradients to gates only.

`importance` is one pass over the pruning data: dropout off, parameters frozen, the gates (at the
current mask) tracked, so `loss.backward()` computes ∂L/∂gate and nothing else; the same forward
pass feeds the task metric, so each pruning round costs one pass, not an importance pass plus an
evaluation. `normalize` applies the original normalisations in their order.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xsub.metrics import TaskMetric
from xsub.model import GATE_NAMES, Gates
from xsub.trainer import autocast

LAYER_NORM_EPS = 1e-20  # bertology's guard in the per-layer division

Batches = Iterable[Mapping[str, torch.Tensor]]


@dataclass
class ImportanceResult:
    """Normalised |∂L/∂gate| per requested part, and the metric measured in the same pass."""

    head: torch.Tensor | None = None  # [L, H]
    mlp: torch.Tensor | None = None  # [L]
    mlp_units: torch.Tensor | None = None  # [L, I]
    kv_group: torch.Tensor | None = None  # [L, G] (decoders with grouped-query attention)
    score: float = math.nan
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    def parts(self) -> dict[str, torch.Tensor]:
        """Present importances by gate name."""
        return {name: t for name in GATE_NAMES if (t := getattr(self, name)) is not None}


def importance(
    model: nn.Module,
    gates: Gates,
    loader: Batches,
    metric: TaskMetric,
    device: torch.device | str,
    *,
    parts: Sequence[str] = ("head",),
    normalize_tokens: bool = True,
    normalize_layers: bool = True,
    normalize_global: bool = True,
    cumulative: bool = False,
    precision: str = "auto",
) -> ImportanceResult:
    """Σ_batches |∂L/∂g| for the gates in `parts` at their current values, plus the metric's score.

    `cumulative=True` reproduces the original bug (gate gradient never zeroed, so each batch added the
    running sum of gradients). Batches must hold `labels` (the model computes the loss). The model's
    train mode and its parameters' `requires_grad` are restored; no parameter gradient is computed.
    """
    parts = _check_parts(gates, parts)
    device = torch.device(device)
    _gates_follow_model(gates)
    metric.reset()
    start = time.perf_counter()
    with _gradients_to_gates_only(model, gates, parts):
        raw, tokens = _accumulate(model, gates, loader, metric, device, parts, cumulative, precision)
    seconds = time.perf_counter() - start
    values = {
        name: normalize(
            raw[name],
            tokens,
            by_tokens=normalize_tokens,
            by_layer=normalize_layers,
            global_minmax=normalize_global,
        )
        for name in parts
    }
    score = float(metric.compute()[metric.name])
    return ImportanceResult(**values, score=score, tokens=tokens, seconds=seconds)


def normalize(
    raw: torch.Tensor,
    tokens: int,
    *,
    by_tokens: bool = True,
    by_layer: bool = True,
    global_minmax: bool = True,
) -> torch.Tensor:
    """The original normalisations in their order: / tokens; per layer / (L2 norm + 1e-20); min-max.

    The per-layer step applies to 2-D parts only ([L, H] heads, [L, I] units): Prasanna et al. 2020 did not
    layer-normalise its [L] MLP scores (one gate per layer would all become 1). A constant tensor
    min-maxes to zeros, where the originals divided 0/0 into NaN.
    """
    x = raw.detach().float().clone()
    if by_tokens:
        x = x / tokens
    if by_layer and x.ndim == 2:
        x = x / (x.pow(2).sum(-1).pow(0.5).unsqueeze(-1) + LAYER_NORM_EPS)
    if global_minmax:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return x


def _check_parts(gates: Gates, parts: Sequence[str]) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(parts))
    present = gates.tensors()
    for name in parts:
        if name not in GATE_NAMES:
            raise ValueError(f"unknown gate part {name!r}; use one of {', '.join(GATE_NAMES)}")
        if name not in present:
            raise ValueError(
                f"gate part {name!r} is not attached; use attach_gates(model, units=True / groups=True)"
            )
    if not parts:
        raise ValueError("importance needs at least one gate part")
    return parts


def _gates_follow_model(gates: Gates) -> None:
    """Gate storage on its home device: a grad-tracked gate is never moved by the hooks."""
    device = gates.home()
    if any(t.device != device for t in gates.tensors().values()):
        gates.to(device=device)


@contextlib.contextmanager
def _gradients_to_gates_only(model: nn.Module, gates: Gates, parts: tuple[str, ...]) -> Iterator[None]:
    """Dropout off, parameters frozen, only `parts` gates tracked; all flags restored afterwards."""
    was_training = model.training
    param_flags = [(p, p.requires_grad) for p in model.parameters()]
    gate_flags = {name: t.requires_grad for name, t in gates.tensors().items()}
    model.eval()
    for p, _ in param_flags:
        p.requires_grad_(False)
    gates.requires_grad_(False).requires_grad_(True, which=parts)
    try:
        with torch.enable_grad():
            yield
    finally:
        gates.zero_grad()
        for name, flag in gate_flags.items():
            gates.requires_grad_(flag, which=(name,))
        for p, flag in param_flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _accumulate(
    model: nn.Module,
    gates: Gates,
    loader: Batches,
    metric: TaskMetric,
    device: torch.device,
    parts: tuple[str, ...],
    cumulative: bool,
    precision: str,
) -> tuple[dict[str, torch.Tensor], int]:
    """Raw Σ|grad| per part (fp32, CPU) and the number of attended tokens."""
    tensors = gates.tensors()
    raw = {n: torch.zeros(tensors[n].shape, dtype=torch.float32, device=tensors[n].device) for n in parts}
    running = {n: torch.zeros_like(v) for n, v in raw.items()}
    tokens = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        gates.zero_grad()
        with autocast(device, precision):
            out = model(**batch)
        if out.loss is None:
            raise ValueError("importance needs batches with 'labels' so that the model returns a loss")
        out.loss.backward()
        for n in parts:
            grad = tensors[n].grad
            grad = torch.zeros_like(raw[n]) if grad is None else grad.detach().float()
            if cumulative:  # the originals' never-zeroed .grad: what they added was the running sum
                running[n] += grad
                grad = running[n]
            raw[n] += grad.abs()
        metric.update(out.logits, batch["labels"])
        tokens += _count_tokens(batch)
    if tokens == 0:
        raise ValueError("importance: the loader yielded no tokens")
    return {n: v.cpu() for n, v in raw.items()}, tokens


def _count_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())
