"""Structured pruning of heads and MLPs by gate-gradient importance, iterated as the original projects ran it.

`prune_heads` is the iterative loop of bertology's `mask_heads` (as LSS and CLS ran it) and of
the joint heads+MLP schedule: mask the least important units still on, re-measure under the new mask
(`xsub.pruning.importance`), stop once the score crosses the threshold and return the last mask that
did not. Every round is kept in a history (importances for t-SNE, scores for curves) and checkpointed,
so a killed job resumes and ends with the identical mask and history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xsub import store
from xsub.config import ConfigError, PruningConfig
from xsub.mask import Mask, MaskMeta
from xsub.metrics import TaskMetric
from xsub.model import attach_gates, config_hash, kv_group_of_heads, model_signature
from xsub.precision import describe
from xsub.pruning.importance import Batches, ImportanceResult, importance
from xsub.subnetwork import set_gates

log = logging.getLogger(__name__)

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
    "head_unit",
)


# --------------------------------------------------------------------------------------------------
# The selection rule


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
    """(name, gate parts masked each round) per phase: heads only, or Prasanna et al. 2020's joint
    schedule."""
    head = "kv_group" if _by_group(cfg) else "head"
    if cfg.method == "heads":
        return [("heads", (head,))]
    if cfg.method == "heads_mlp":
        mlp = "mlp_units" if cfg.mlp_units else "mlp"
        return [("heads+mlp", (head, mlp)), ("heads", (head,)), ("mlp", (mlp,))]
    raise ConfigError(f"pruning.method={cfg.method} is not structured pruning; use one of {METHODS}")


def _by_group(cfg: PruningConfig) -> bool:
    """pruning.head_unit=kv_group: the head unit is a whole key/value group (GQA decoders)."""
    return str(getattr(cfg, "head_unit", "query")) == "kv_group"


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
    checkpoint: store.Checkpoint | None = None,
    mlm: bool = False,
    precision: str = "auto",
    on_round: Callable[[RoundRecord], None] | None = None,
) -> PruneResult:
    """Iterative importance pruning; returns the last mask whose score stayed acceptable.

    Acceptable: score ≥ threshold × score0, or for MLM / lower-is-better metrics score ≤
    mlm_threshold × score0. The loop state is written to `checkpoint` after every round and resumed
    from it if it belongs to the same settings and model. `on_round` is called with each new record
    after it is saved. The gates stay attached to `model`, set to the returned mask. The loader must
    yield the same batches each pass.
    """
    plan = phases(cfg)
    units, groups = cfg.method == "heads_mlp" and cfg.mlp_units, _by_group(cfg)
    existing = getattr(model, "_xsub_gates", None)
    if existing is not None and (
        (units and existing.mlp_units is None) or (groups and existing.kv_group is None)
    ):
        existing.remove()
    gates = attach_gates(model, units=units, groups=groups)
    parts = tuple(dict.fromkeys(p for _, phase_parts in plan for p in phase_parts))
    shapes = {p: tuple(gates.tensors()[p].shape) for p in parts}
    k = {p: per_round(p, math.prod(shapes[p]), cfg) for p in parts}
    lower_better = mlm or not metric.higher_is_better
    state = (checkpoint or store.Checkpoint(None, "")).stamped(
        _fingerprint(model, cfg, metric, lower_better, describe(precision, device))
    )

    def measure(mask: dict[str, torch.Tensor]) -> ImportanceResult:
        set_gates(gates, mask)
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
        _save_state(state, loop)
        _log_round(record, metric.name, loop.history[0].score, _limit(cfg, lower_better))
        if on_round is not None:
            on_round(record)

    loop = _load_state(state)
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
            _save_state(state, loop)
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
    set_gates(gates, best.mask)
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
    heads = best.mask.get("head")
    if "kv_group" in best.mask:  # a group's query heads are kept or masked together
        groups = best.mask["kv_group"][:, torch.tensor(kv_group_of_heads(model))]
        heads = groups if heads is None else heads & groups
        meta.extra["head_unit"] = "kv_group"
    return Mask(heads, mlp, meta=meta)


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
        "cfg": {f: getattr(cfg, f, None) for f in DECISION_FIELDS},  # a field the method lacks: None
        "metric": metric.name,
        "lower_is_better": lower_better,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_state(checkpoint: store.Checkpoint, loop: _Loop) -> None:
    checkpoint.save(
        {
            "version": STATE_VERSION,
            "phase": loop.phase,
            "accepted": loop.accepted,
            "history": [r.to_state() for r in loop.history],
        }
    )


def _load_state(checkpoint: store.Checkpoint) -> _Loop | None:
    state = checkpoint.load()
    if state is None or state.get("version") != STATE_VERSION:
        return None
    loop = _Loop(
        phase=int(state["phase"]),
        accepted=int(state["accepted"]),
        history=[RoundRecord.from_state(r) for r in state["history"]],
    )
    log.info("resuming pruning from %s after round %d", checkpoint.file, loop.rounds)
    return loop
