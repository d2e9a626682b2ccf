"""Unstructured magnitude pruning: one-shot global L1 with its random and "bad" baselines.

It ranks the Q, K, V, attention-output, intermediate and output dense weight matrices of every encoder
layer together by |w| (embeddings, biases, LayerNorms, pooler and classifier are never pruned) and
returns `xsub.mask.Mask` objects whose `weights` part holds one bool tensor per matrix (True = kept;
heads are all kept). Ties in |w| are broken by position — matrices in `prunable_weights` order, then
flat index — so a mask is a pure function of the weights. Counts round like torch.nn.utils.prune
(Python `round`), as the original code did. Candidate masks are evaluated through `xsub.subnetwork`, which
restores the weights after each round. Iterative magnitude pruning with rewinding (`xsub.pruning.imp`)
builds on the selection, mask and state helpers here.

The search is resumable: after every round the current mask and history are written atomically
to one `xsub.store.Checkpoint`, stamped by the artifact identity, the settings and the
weights, and a rerun continues from there to the identical mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xsub import store
from xsub.mask import Mask, MaskMeta
from xsub.model import config_hash, encoder_layers, gate_shape
from xsub.model.placement import require_resident
from xsub.subnetwork import KeepMasks, weights_masked

log = logging.getLogger(__name__)

# ---- which weights ---------------------------------------------------------------------------------


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The dense weight matrices pruned by magnitude, by `named_parameters` name, in layer order.

    Found through `encoder_layers`, so every supported family (BERT, XLM-R, DistilBERT, T5 encoder)
    gives its Q, K, V, attention-output, FFN-in (both halves for gated T5) and FFN-out weights.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, nn.Parameter] = {}
    for layer in encoder_layers(model):
        for linear in (*layer.attn_in, layer.attn_out, *layer.ffn_in, layer.ffn_out):
            out[names[id(linear.weight)]] = linear.weight
    return out


def prunable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """`expect={"param_shapes": ...}` for `Mask.load` of a weight mask of this model."""
    return {n: tuple(p.shape) for n, p in prunable_weights(model).items()}


def kept_count(keep: Mapping[str, torch.Tensor]) -> int:
    return sum(int(k.sum()) for k in keep.values())


def sparsity(keep: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the masked weights that are removed."""
    total = sum(k.numel() for k in keep.values())
    return 1.0 - kept_count(keep) / total


def all_kept(params: Mapping[str, torch.Tensor]) -> KeepMasks:
    return {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}


def magnitudes(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", torch.float32).abs() for n, p in params.items()}


# ---- selection -------------------------------------------------------------------------------------


def smallest(scores: Mapping[str, torch.Tensor], among: Mapping[str, torch.Tensor], k: int) -> KeepMasks:
    """The `k` entries with the smallest score among those marked in `among`, over all tensors together.

    Ties at the cut are taken in position order (tensors in mapping order, then flat index), so the
    result is deterministic; it equals the first k of a stable ascending sort.
    """
    chosen = {n: torch.zeros_like(a, dtype=torch.bool) for n, a in among.items()}
    if k <= 0:
        return chosen
    values = torch.cat([scores[n][a] for n, a in among.items()])
    if torch.isnan(values).any():
        raise ValueError("weights contain NaN; magnitude pruning needs finite weights")
    if k >= values.numel():
        return {n: a.clone() for n, a in among.items()}
    cut = torch.kthvalue(values, k).values
    ties_left = k - int((values < cut).sum())
    for name, a in among.items():
        s = scores[name]
        tie = ((s == cut) & a).reshape(-1)
        tie &= tie.cumsum(0) <= ties_left
        ties_left -= int(tie.sum())
        chosen[name] = ((s < cut) & a) | tie.view_as(a)
    return chosen


def prune_smallest(scores: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor], n: int) -> KeepMasks:
    """`keep` minus its `n` smallest-score kept entries (global L1 among the surviving weights)."""
    drop = smallest(scores, keep, n)
    return {name: k & ~drop[name] for name, k in keep.items()}


def random_like(keep: Mapping[str, torch.Tensor], seed: int) -> KeepMasks:
    """A seeded random mask with exactly as many kept weights as `keep` in every matrix."""
    g = torch.Generator().manual_seed(seed)
    out: KeepMasks = {}
    for name, k in keep.items():
        flat = torch.zeros(k.numel(), dtype=torch.bool)
        flat[torch.randperm(k.numel(), generator=g)[: int(k.sum())]] = True
        out[name] = flat.view(k.shape)
    return out


def inverted_like(scores: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor]) -> KeepMasks:
    """Prasanna et al. 2020's "bad" mask: keep the globally SMALLEST |w|, as many as `keep` keeps."""
    return smallest(scores, {n: torch.ones_like(k) for n, k in keep.items()}, kept_count(keep))


# ---- masks and state files -------------------------------------------------------------------------


def weight_mask(model: nn.Module, keep: KeepMasks, method: str, meta: MaskMeta | None, **fields: Any) -> Mask:
    shape = gate_shape(model)
    base = meta or MaskMeta()
    extra = {**(base.extra or {}), **fields.pop("extra", {})}
    info = dataclasses.replace(base, method=method, config_hash=config_hash(model), extra=extra, **fields)
    heads = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    return Mask(heads, weights=dict(keep), meta=info)


def search_fingerprint(settings: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """Settings + names, shapes and exact values of the tensors a search depends on."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, t in tensors.items():
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_state(checkpoint: store.Checkpoint, keep: KeepMasks, state: dict[str, Any]) -> None:
    checkpoint.save({"keep": {n: k.contiguous() for n, k in keep.items()}, "state": json.dumps(state)})


def load_state(
    checkpoint: store.Checkpoint, names: Mapping[str, Any]
) -> tuple[KeepMasks, dict[str, Any]] | None:
    """The saved (mask, state) of an interrupted search of the same identity, or None (start fresh).

    The mask comes back in the order of `names`: order decides ties and random masks.
    """
    saved = checkpoint.load()
    if saved is None or set(saved["keep"]) != set(names):
        return None
    log.info("resuming pruning search from %s", checkpoint.file)
    return {n: saved["keep"][n] for n in names}, json.loads(saved["state"])


# ---- one-shot global magnitude pruning (Prasanna et al. 2020) ---------------------------------------


@dataclass
class MagnitudeResult:
    """The mask found, its two baselines of equal size, and the per-round history."""

    mask: Mask
    random: Mask
    bad: Mask
    history: list[dict[str, Any]]
    unpruned_score: float
    score: float

    @property
    def by_method(self) -> dict[str, Mask]:
        return {m.meta.method: m for m in (self.mask, self.random, self.bad)}


def _below_line(score: float, unpruned: float, cfg: Any, higher_is_better: bool) -> bool:
    """The structured-pruning stop rule: score < threshold × unpruned (perplexity: > mlm_threshold ×)."""
    if higher_is_better:
        return score < cfg.threshold * unpruned
    return score > cfg.mlm_threshold * unpruned


def _start_magnitude(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    params: Mapping[str, torch.Tensor],
    checkpoint: store.Checkpoint,
) -> tuple[KeepMasks, dict[str, Any]]:
    """Resume from `checkpoint`, or evaluate the unpruned model and write round 0."""
    saved = load_state(checkpoint, params)
    if saved is not None:
        return saved
    unpruned = float(evaluate_fn(model))
    state = {
        "rounds_done": 0,
        "stopped": False,
        "unpruned": unpruned,
        "history": [{"round": 0, "sparsity": 0.0, "score": unpruned, "accepted": True}],
    }
    keep = all_kept(params)
    save_state(checkpoint, keep, state)
    log.info("magnitude pruning: unpruned score %.4f", unpruned)
    return keep, state


def magnitude_prune(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    cfg: Any,
    *,
    checkpoint: store.Checkpoint | None = None,
    seed: int = 0,
    higher_is_better: bool = True,
    meta: MaskMeta | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> MagnitudeResult:
    """Prasanna et al. 2020's one-shot global L1 pruning of the finetuned weights, no retraining.

    Each round removes `cfg.weight_fraction_per_round` of the remaining prunable weights with the
    smallest |w|, zeroes them in place, calls `evaluate_fn(model)` and restores the weights (the
    caller's model is unchanged on return). It stops after `cfg.weight_rounds` rounds or at the first
    round whose score falls below the line (`_below_line`) and returns the last mask above it — all
    rounds above it return the last round's mask (the original code returned the one before: fixed).
    The random
    (per-matrix equal count, `seed`) and bad (inverted magnitude) masks match its size. `on_round`
    gets each round's history entry after the state is saved (a test kills the run there).
    """
    require_resident(model, "magnitude pruning")
    params = prunable_weights(model)
    scores = magnitudes(params)
    settings = {
        "fraction": cfg.weight_fraction_per_round,
        "rounds": cfg.weight_rounds,
        "line": cfg.threshold if higher_is_better else cfg.mlm_threshold,
        "higher_is_better": higher_is_better,
    }
    stamped = (checkpoint or store.Checkpoint(None, "")).stamped(search_fingerprint(settings, scores))
    keep, state = _start_magnitude(model, evaluate_fn, params, stamped)
    while not state["stopped"] and state["rounds_done"] < cfg.weight_rounds:
        n = round(cfg.weight_fraction_per_round * kept_count(keep))
        if n == 0:
            log.info("magnitude pruning: no weight left to remove at round %d", state["rounds_done"] + 1)
            break
        candidate = prune_smallest(scores, keep, n)
        with weights_masked(model, candidate):
            score = float(evaluate_fn(model))
        accepted = not _below_line(score, state["unpruned"], cfg, higher_is_better)
        entry = {"round": state["rounds_done"] + 1, "sparsity": sparsity(candidate), "score": score}
        state["history"].append({**entry, "accepted": accepted})
        state["rounds_done"] += 1
        state["stopped"] = not accepted
        keep = candidate if accepted else keep
        save_state(stamped, keep, state)
        log.info("magnitude round %(round)d: sparsity %(sparsity).4f, score %(score).4f", entry)
        if on_round is not None:
            on_round(state["history"][-1])
    return _magnitude_result(model, scores, keep, state, cfg, seed, meta)


def _magnitude_result(
    model: nn.Module,
    scores: Mapping[str, torch.Tensor],
    keep: KeepMasks,
    state: dict[str, Any],
    cfg: Any,
    seed: int,
    meta: MaskMeta | None,
) -> MagnitudeResult:
    last = [h for h in state["history"] if h["accepted"]][-1]
    size = {"rounds": last["round"], "extra": {"sparsity": last["sparsity"]}}
    found = _with(size, history=state["history"], fraction_per_round=cfg.weight_fraction_per_round)
    scored = {"score_before": state["unpruned"], "score_after": last["score"]}
    mask = weight_mask(model, keep, "magnitude", meta, **scored, **found)
    random = weight_mask(model, random_like(keep, seed), "magnitude-random", meta, **_with(size, seed=seed))
    bad = weight_mask(model, inverted_like(scores, keep), "magnitude-bad", meta, **size)
    log.info("magnitude pruning: kept mask of round %d, sparsity %.4f", last["round"], last["sparsity"])
    return MagnitudeResult(mask, random, bad, state["history"], state["unpruned"], last["score"])


def _with(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**fields, "extra": {**fields["extra"], **extra}}
