"""Structured pruning by gate-gradient importance (Michel et al. 2019), as the seeds ran it.

`importance` is one pass over the pruning data: dropout off, parameters frozen, the gates (at the
current mask) tracked, so `loss.backward()` computes ∂L/∂gate and nothing else; the same forward
pass feeds the task metric, so each round costs one pass, not an importance pass plus an evaluation.

`prune_heads` is the iterative loop of bertology's `mask_heads` (seed 000/001) and of seed 004's
joint heads+MLP schedule: mask the least important units still on, re-measure under the new mask,
stop once the score crosses the threshold and return the last mask that did not. Every round is kept
in a history (importances for t-SNE, scores for curves) and checkpointed, so a killed job resumes and
ends with the identical mask and history.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xsub import artifacts
from xsub.config import ConfigError, PruningConfig
from xsub.mask import Mask, MaskMeta
from xsub.metrics import TaskMetric
from xsub.model import GATE_NAMES, Gates, attach_gates, config_hash, model_signature
from xsub.precision import describe
from xsub.trainer import autocast

log = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-20  # bertology's guard in the per-layer division
STATE_VERSION = 1
METHODS = ("heads", "heads_mlp")
# PruningConfig fields a resumed loop must share with the run that wrote its state
DECISION_FIELDS = (
    "method",
    "heads_per_round",
    "mlp_per_round",
    "threshold",
    "mlm_threshold",
    "mlp_units",
    "normalize_tokens",
    "normalize_layers",
    "normalize_global",
    "cumulative_grad",
)

Batches = Iterable[Mapping[str, torch.Tensor]]


# --------------------------------------------------------------------------------------------------
# One importance pass


@dataclass
class ImportanceResult:
    """Normalised |∂L/∂gate| per requested part, and the metric measured in the same pass."""

    head: torch.Tensor | None  # [L, H]
    mlp: torch.Tensor | None = None  # [L]
    mlp_units: torch.Tensor | None = None  # [L, I]
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

    `cumulative=True` reproduces the seeds' bug (gate gradient never zeroed, so each batch added the
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
    """The seeds' normalisations in their order: / tokens; per layer / (L2 norm + 1e-20); min-max.

    The per-layer step applies to 2-D parts only ([L, H] heads, [L, I] units): seed 004 did not
    layer-normalise its [L] MLP scores (one gate per layer would all become 1). A constant tensor
    min-maxes to zeros, where the seeds divided 0/0 into NaN.
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
            raise ValueError(f"gate part {name!r} is not attached; use attach_gates(model, units=True)")
    if not parts:
        raise ValueError("importance needs at least one gate part")
    return parts


def _gates_follow_model(gates: Gates) -> None:
    """Gate storage on the hooked weights' device: a grad-tracked gate is never moved by the hooks."""
    device = gates.layers[0].attn_out.weight.device
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
            if cumulative:  # the seeds' never-zeroed .grad: what they added was the running sum
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


# --------------------------------------------------------------------------------------------------
# Masks on gates and the selection rule


def apply_mask(gates: Gates, mask: Mask) -> Gates:
    """Set the gates to a `Mask` (absent parts open): heads, and MLPs as [L] layers or [L, I] units."""
    parts = {"head": mask.heads}
    if mask.mlp is not None:
        parts["mlp" if mask.mlp.ndim == 1 else "mlp_units"] = mask.mlp
    return _set_gates(gates, parts)


def _set_gates(gates: Gates, parts: Mapping[str, torch.Tensor]) -> Gates:
    return gates.reset().set(**dict(parts))


def masked_importance(importance: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Importance as the selection ranks it (float64, CPU): NaN scores and units already off at +inf."""
    x = importance.detach().to("cpu", torch.float64)
    return x.masked_fill(~on.bool().cpu() | torch.isnan(x), math.inf)


def select_lowest(importance: torch.Tensor, on: torch.Tensor, k: int) -> torch.Tensor | None:
    """Flat indices of the `k` least important units still on, ties by lower index; None when masking
    `k` more would leave none of this part on (the loop's "no heads left" stop). Only units still on
    are candidates, so a unit is never masked twice (even if every score is +inf or NaN)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    on = on.bool().cpu().flatten()
    if int(on.sum()) <= k:
        return None
    candidates = on.nonzero().flatten()
    scores = masked_importance(importance.reshape(-1), on)[candidates]
    return candidates[torch.sort(scores, stable=True).indices[:k]]


# --------------------------------------------------------------------------------------------------
# The iterative loop


@dataclass
class RoundRecord:
    """One importance pass of the loop: round 0 is the unpruned model (its score is score0)."""

    round: int
    phase: str
    mask: dict[str, torch.Tensor]  # gate name -> bool (True = on)
    importance: dict[str, torch.Tensor]  # as measured under `mask` (off units keep their values)
    score: float
    accepted: bool
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    def kept(self) -> dict[str, int]:
        return {name: int(m.sum()) for name, m in self.mask.items()}

    def same_as(self, other: RoundRecord) -> bool:
        """Equal in everything but timing (what a resumed run must reproduce)."""

        def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
            return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

        same_score = self.score == other.score or (math.isnan(self.score) and math.isnan(other.score))
        return (
            (self.round, self.phase, self.accepted, self.tokens)
            == (other.round, other.phase, other.accepted, other.tokens)
            and same_score
            and equal(self.mask, other.mask)
            and equal(self.importance, other.importance)
        )

    def to_state(self) -> dict[str, Any]:
        """Plain tensors and scalars (loadable with weights_only=True)."""
        return {
            "round": self.round,
            "phase": self.phase,
            "mask": dict(self.mask),
            "importance": dict(self.importance),
            "score": self.score,
            "accepted": self.accepted,
            "tokens": self.tokens,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RoundRecord:
        return cls(**state)


@dataclass
class PruneResult:
    """The returned mask (the last one whose score was acceptable) and every round that led to it."""

    mask: Mask
    history: list[RoundRecord]

    @property
    def score0(self) -> float:
        return self.history[0].score

    @property
    def timings(self) -> list[dict[str, float]]:
        """Per round: tokens, seconds and tokens/s of the importance pass."""
        return [
            {"round": r.round, "tokens": r.tokens, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s}
            for r in self.history
        ]

    @property
    def tokens_per_s(self) -> float:
        """Throughput of the importance pass over all rounds."""
        seconds = sum(r.seconds for r in self.history)
        return sum(r.tokens for r in self.history) / seconds if seconds > 0 else math.inf


@dataclass
class _Loop:
    """Everything the loop needs to continue: the current mask is history[accepted].mask."""

    phase: int
    accepted: int
    history: list[RoundRecord]

    @property
    def rounds(self) -> int:
        return len(self.history) - 1


def phases(cfg: PruningConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(name, gate parts masked each round) per phase: heads only, or seed 004's joint schedule."""
    if cfg.method == "heads":
        return [("heads", ("head",))]
    if cfg.method == "heads_mlp":
        mlp = "mlp_units" if cfg.mlp_units else "mlp"
        return [("heads+mlp", ("head", mlp)), ("heads", ("head",)), ("mlp", (mlp,))]
    raise ConfigError(f"pruning.method={cfg.method} is not structured pruning; use one of {METHODS}")


def per_round(part: str, numel: int, cfg: PruningConfig) -> int:
    """Units masked per round: whole MLP layers by count, heads and MLP units by fraction of all."""
    if part == "mlp":
        return max(1, int(cfg.mlp_per_round))
    return max(1, int(cfg.heads_per_round * numel))


def prune_heads(
    model: nn.Module,
    loader: Batches,
    metric: TaskMetric,
    device: torch.device | str,
    cfg: PruningConfig,
    *,
    state_path: Path | None = None,
    mlm: bool = False,
    precision: str = "auto",
    on_round: Callable[[RoundRecord], None] | None = None,
) -> PruneResult:
    """Iterative importance pruning; returns the last mask whose score stayed acceptable.

    Acceptable: score ≥ threshold × score0, or for MLM / lower-is-better metrics score ≤
    mlm_threshold × score0. The loop state is written to `state_path` after every round and resumed
    from it if present. `on_round` is called with each new record after it is saved. The gates stay
    attached to `model`, set to the returned mask. The loader must yield the same batches each pass.
    """
    plan = phases(cfg)
    gates = attach_gates(model, units=cfg.method == "heads_mlp" and cfg.mlp_units)
    parts = tuple(dict.fromkeys(p for _, phase_parts in plan for p in phase_parts))
    shapes = {p: tuple(gates.tensors()[p].shape) for p in parts}
    k = {p: per_round(p, math.prod(shapes[p]), cfg) for p in parts}
    lower_better = mlm or not metric.higher_is_better
    fingerprint = _fingerprint(model, cfg, metric, lower_better, describe(precision, device))

    def measure(mask: dict[str, torch.Tensor]) -> ImportanceResult:
        _set_gates(gates, mask)
        return importance(
            model,
            gates,
            loader,
            metric,
            device,
            parts=parts,
            normalize_tokens=cfg.normalize_tokens,
            normalize_layers=cfg.normalize_layers,
            normalize_global=cfg.normalize_global,
            cumulative=cfg.cumulative_grad,
            precision=precision,
        )

    def finish(loop: _Loop, record: RoundRecord) -> None:
        _save_state(state_path, loop, fingerprint)
        _log_round(record, metric.name, loop.history[0].score, _limit(cfg, lower_better))
        if on_round is not None:
            on_round(record)

    loop = _load_state(state_path, fingerprint)
    if loop is None:
        full = {p: torch.ones(shapes[p], dtype=torch.bool) for p in parts}
        loop = _Loop(phase=0, accepted=0, history=[_record(0, "unpruned", full, measure(full), True)])
        finish(loop, loop.history[0])
    score0 = loop.history[0].score

    while loop.phase < len(plan) and not (cfg.max_rounds and loop.rounds >= cfg.max_rounds):
        name, phase_parts = plan[loop.phase]
        mask = _next_mask(loop.history[loop.accepted], phase_parts, k)
        if mask is None:
            log.info("phase %s: nothing left to mask without emptying a part; next phase", name)
            loop.phase += 1
            _save_state(state_path, loop, fingerprint)
            continue
        result = measure(mask)
        ok = _acceptable(result.score, score0, cfg, lower_better)
        loop.history.append(_record(loop.rounds + 1, name, mask, result, ok))
        if ok:
            loop.accepted = len(loop.history) - 1
        else:
            loop.phase += 1
        finish(loop, loop.history[-1])

    best = loop.history[loop.accepted]
    _set_gates(gates, best.mask)
    return PruneResult(_to_mask(model, cfg, loop, metric.name, lower_better, k), loop.history)


def _record(
    round_: int, phase: str, mask: dict[str, torch.Tensor], result: ImportanceResult, accepted: bool
) -> RoundRecord:
    values = result.parts()
    return RoundRecord(
        round=round_,
        phase=phase,
        mask={p: m.clone() for p, m in mask.items()},
        importance={p: values[p] for p in mask},
        score=result.score,
        accepted=accepted,
        tokens=result.tokens,
        seconds=result.seconds,
    )


def _next_mask(
    base: RoundRecord, phase_parts: tuple[str, ...], k: Mapping[str, int]
) -> dict[str, torch.Tensor] | None:
    """The accepted mask with each phase part's k least important units turned off; None if a part
    is exhausted (masking would leave none of it)."""
    mask = {p: m.clone() for p, m in base.mask.items()}
    for part in phase_parts:
        chosen = select_lowest(base.importance[part], base.mask[part], k[part])
        if chosen is None:
            return None
        mask[part].view(-1)[chosen] = False
    return mask


def _limit(cfg: PruningConfig, lower_better: bool) -> float:
    return cfg.mlm_threshold if lower_better else cfg.threshold


def _acceptable(score: float, score0: float, cfg: PruningConfig, lower_better: bool) -> bool:
    """bertology's loop condition; NaN is never acceptable."""
    if lower_better:
        return score <= cfg.mlm_threshold * score0
    return score >= cfg.threshold * score0


def _to_mask(
    model: nn.Module,
    cfg: PruningConfig,
    loop: _Loop,
    score_name: str,
    lower_better: bool,
    k: Mapping[str, int],
) -> Mask:
    best = loop.history[loop.accepted]
    mlp = best.mask.get("mlp_units", best.mask.get("mlp"))
    meta = MaskMeta(
        config_hash=config_hash(model),
        method=cfg.method,
        score_before=loop.history[0].score,
        score_after=best.score,
        rounds=loop.rounds,
        extra={
            "metric": score_name,
            "lower_is_better": lower_better,
            "threshold": _limit(cfg, lower_better),
            "accepted_round": best.round,
            "per_round": dict(k),
            "cumulative_grad": cfg.cumulative_grad,
        },
    )
    return Mask(best.mask["head"], mlp, meta=meta)


def _log_round(record: RoundRecord, score_name: str, score0: float, limit: float) -> None:
    kept = ", ".join(f"{p} {n}/{record.mask[p].numel()}" for p, n in record.kept().items())
    log.info(
        "prune round %d [%s]: on %s; %s %.4f (unpruned %.4f, limit ×%.3g) %s; %.0f tokens/s",
        record.round,
        record.phase,
        kept,
        score_name,
        record.score,
        score0,
        limit,
        "accepted" if record.accepted else "rejected",
        record.tokens_per_s,
    )


# --------------------------------------------------------------------------------------------------
# Resume state


def _fingerprint(
    model: nn.Module, cfg: PruningConfig, metric: TaskMetric, lower_better: bool, precision: str
) -> str:
    """What the loop's decisions depend on (max_rounds excluded: a resumed run may go further)."""
    blob = {
        "model": model_signature(model),
        "cfg": {f: getattr(cfg, f) for f in DECISION_FIELDS},
        "metric": metric.name,
        "lower_is_better": lower_better,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_state(path: Path | None, loop: _Loop, fingerprint: str) -> None:
    if path is None:
        return
    state = {
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "phase": loop.phase,
        "accepted": loop.accepted,
        "history": [r.to_state() for r in loop.history],
    }
    with artifacts.atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path | None, fingerprint: str) -> _Loop | None:
    if path is None or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION or state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"pruning state {path} was written with other pruning settings or another model; "
            f"delete it to start over, or run with the settings that made it"
        )
    loop = _Loop(
        phase=int(state["phase"]),
        accepted=int(state["accepted"]),
        history=[RoundRecord.from_state(r) for r in state["history"]],
    )
    log.info("resuming pruning from %s after round %d", path, loop.rounds)
    return loop
