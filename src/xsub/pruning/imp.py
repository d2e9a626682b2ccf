"""Iterative magnitude pruning (IMP) with rewinding during finetuning, the lottery-ticket search.

Foroutan et al. 2022 (negar-foroutan/multiLMs-lang-neutral-subnets): train the model from its start
(the pretrained weights), remove `imp_rate` (10%) of the ORIGINAL prunable weights with the smallest
trained |w|, rewind every surviving weight (and every other tensor: classifier, LayerNorms, embeddings)
to the start, rebuild the optimiser, and repeat until `imp_final_sparsity` — five events for 50%.
Each segment is one full finetuning (the segment contract below). The ticket's quality is then
measured as the lottery-ticket protocol does: the final mask retrained from the rewind point
(`retrain=True`), beside the first segment, which is the dense model trained the same way.
Selection, masks and the resumable state file are magnitude pruning's (`xsub.pruning.magnitude`);
a rerun continues after the last finished event to the identical mask.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from xsub import store
from xsub.config import ConfigError
from xsub.mask import Mask, MaskMeta
from xsub.model import reinit_weights
from xsub.pruning.magnitude import (
    all_kept,
    kept_count,
    load_state,
    magnitudes,
    prunable_weights,
    prune_smallest,
    save_state,
    search_fingerprint,
    sparsity,
    weight_mask,
)
from xsub.subnetwork import KeepMasks, WeightMasker, apply_weight_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """One stretch of training between pruning events, as handed to `train_fn`.

    The contract: `train_fn(model, segment)` builds a NEW optimiser (and schedule), trains `model` in
    place for `steps` optimiser steps (None = one full finetuning, e.g. `train.epochs`), calls
    `after_step()` after every `optimizer.step()` (with `xsub.trainer.fit`: pass it as the per-step
    callback), seeds its data order and dropout from `index` (so a resumed search repeats the same
    segment exactly), and returns a JSON-able summary (e.g. the final train loss or dev score) or None.
    """

    index: int  # 0-based; the event this training leads to is index + 1 (index = events: the ticket)
    steps: int | None
    after_step: Callable[..., None]


TrainFn = Callable[[nn.Module, Segment], Any]


@dataclass
class ImpResult:
    mask: Mask
    history: list[dict[str, Any]] = field(default_factory=list)
    full: Any = None  # train_fn's summary of the first segment: the dense model trained from the start
    ticket: Any = None  # train_fn's summary of the final mask retrained from the start (retrain=True)


def imp_num_events(cfg: Any) -> int:
    """Pruning events to reach `imp_final_sparsity` at `imp_rate` of the original weights per event
    (Foroutan et al. 2022: p = 10%, five events for 50%); the last step is smaller when they do not
    divide."""
    return math.ceil(round(cfg.imp_final_sparsity / cfg.imp_rate, 9))


def imp_target_sparsity(event: int, num_events: int, final_sparsity: float) -> float:
    """Foroutan et al. 2022's linear schedule: after event e of N, (e / N) × final sparsity of the
    original weights."""
    return event / num_events * final_sparsity


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _rewind(model: nn.Module, rewind_state: Mapping[str, torch.Tensor], keep: KeepMasks) -> None:
    """Surviving weights (and every other tensor in `rewind_state`) back to the start; masked ones zero."""
    result = model.load_state_dict(dict(rewind_state), strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"rewind state has tensors this model lacks, e.g. {result.unexpected_keys[0]}")
    apply_weight_mask(model, keep)


def _rewind_state(
    model: nn.Module,
    pretrained_state: Mapping[str, torch.Tensor] | None,
    weight_init: str,
    seed: int,
) -> dict[str, torch.Tensor]:
    """What surviving weights rewind to: the pretrained values, or a seeded random init of the model."""
    if weight_init == "rand":
        reinit_weights(model, seed)
        return _snapshot(model)
    if weight_init != "pre":
        raise ConfigError(f"weight_init must be 'pre' or 'rand', got {weight_init!r}")
    state = _snapshot(model) if pretrained_state is None else dict(pretrained_state)
    missing = [n for n in prunable_weights(model) if n not in state]
    if missing:
        raise ConfigError(f"pretrained_state lacks prunable weight {missing[0]}; pass model.state_dict()")
    return state


def imp_prune(
    model: nn.Module,
    pretrained_state: Mapping[str, torch.Tensor] | None,
    train_fn: TrainFn,
    cfg: Any,
    *,
    num_events: int,
    weight_init: Literal["pre", "rand"] = "pre",
    seed: int = 0,
    retrain: bool = False,
    checkpoint: store.Checkpoint | None = None,
    meta: MaskMeta | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ImpResult:
    """Foroutan et al. 2022's iterative magnitude pruning with rewinding during finetuning.

    For event e = 1..num_events: rewind the model to `pretrained_state` (None: the model as passed)
    with the current mask applied, train one `Segment` (`cfg.imp_prune_every` steps, 0 = one full
    finetuning) under a `WeightMasker`, then prune the smallest-|w| surviving weights of the trained
    model until round(e / N × `cfg.imp_final_sparsity` × total) of the original prunable weights are
    gone. With `retrain`, the final mask is trained once more from the rewind point (segment index N):
    the ticket's quality. `weight_init="rand"` rewinds to a seeded re-initialisation of the whole
    model instead (the branch that crashed in the original code). On return the model holds the
    ticket: rewound weights, mask applied.
    """
    rewind_state = _rewind_state(model, pretrained_state, weight_init, seed)
    params = prunable_weights(model)
    total = sum(p.numel() for p in params.values())
    steps = cfg.imp_prune_every or None
    settings = {
        "events": num_events,
        "final": cfg.imp_final_sparsity,
        "every": cfg.imp_prune_every,
        "weight_init": weight_init,
        "seed": seed,
    }
    stamped = (checkpoint or store.Checkpoint(None, "")).stamped(
        search_fingerprint(settings, {n: rewind_state[n] for n in params})
    )
    saved = load_state(stamped, params)
    keep, state = saved or (all_kept(params), {"events_done": 0, "history": []})
    while state["events_done"] < num_events:
        event = state["events_done"] + 1
        trained_at = sparsity(keep)
        _rewind(model, rewind_state, keep)
        with WeightMasker(model, keep) as masker:
            summary = train_fn(model, Segment(event - 1, steps, masker.after_step))
            masker.apply()
        target = imp_target_sparsity(event, num_events, cfg.imp_final_sparsity)
        n = round(target * total) - (total - kept_count(keep))
        keep = prune_smallest(magnitudes(params), keep, n)
        entry = {
            "event": event,
            "target": target,
            "sparsity": sparsity(keep),
            "trained_at_sparsity": trained_at,  # `train` is the score of this network, before the cut
            "train": _jsonable(summary),
        }
        state["history"].append(entry)
        state["events_done"] = event
        save_state(stamped, keep, state)
        log.info("IMP event %d/%d: sparsity %.4f (target %.4f)", event, num_events, entry["sparsity"], target)
        if on_event is not None:
            on_event(entry)
    if retrain and "ticket" not in state:
        _rewind(model, rewind_state, keep)
        with WeightMasker(model, keep) as masker:
            state["ticket"] = _jsonable(train_fn(model, Segment(num_events, steps, masker.after_step)))
            masker.apply()
        save_state(stamped, keep, state)
        log.info(
            "IMP ticket (sparsity %.4f) retrained from the rewind point: %s",
            sparsity(keep),
            state["ticket"],
        )
    _rewind(model, rewind_state, keep)
    full = state["history"][0]["train"] if state["history"] else None
    extra = {
        "history": state["history"],
        "weight_init": weight_init,
        "sparsity": sparsity(keep),
        "full": full,
        "ticket": state.get("ticket"),
    }
    mask = weight_mask(model, keep, "imp", meta, rounds=num_events, extra=extra)
    return ImpResult(mask, state["history"], full, state.get("ticket"))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
