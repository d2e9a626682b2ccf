"""Unstructured magnitude pruning: seed 004's one-shot global L1 and seed 002's IMP with rewinding.

Both rank the Q, K, V, attention-output, intermediate and output dense weight matrices of every encoder
layer together by |w| (embeddings, biases, LayerNorms, pooler and classifier are never pruned) and
return `xsub.mask.Mask` objects whose `weights` part holds one bool tensor per matrix (True = kept;
heads are all kept). Ties in |w| are broken by position — matrices in `prunable_weights` order, then
flat index — so a mask is a pure function of the weights. Counts round like torch.nn.utils.prune
(Python `round`), as the seeds did.

Training with a weight mask needs more than zeroing once: AdamW's decoupled weight decay and its moment
estimates move a zeroed weight on every step. `WeightMasker` re-zeroes after each optimiser step, zeroes
the masked gradients, and re-zeroes before any forward pass if a masked parameter changed, so the mask
holds exactly whatever trainer drives the steps.

Both searches are resumable: after every round/event the current mask and history are written atomically
(safetensors + JSON metadata, no pickle) to `state_path`, fingerprinted by the settings and the weights,
and a rerun continues from there to the identical mask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from xsub.artifacts import atomic_path
from xsub.config import ConfigError
from xsub.mask import Mask, MaskError, MaskMeta
from xsub.model import config_hash, encoder_layers, gate_shape

log = logging.getLogger(__name__)

KeepMasks = dict[str, torch.Tensor]  # parameter name -> bool tensor of its shape, True = kept (CPU)
MaskLike = Mask | Mapping[str, torch.Tensor]

# ---- which weights ---------------------------------------------------------------------------------


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The dense weight matrices pruned by magnitude, by `named_parameters` name, in layer order.

    Found through `encoder_layers`, so every supported family (BERT, XLM-R, DistilBERT, T5 encoder)
    gives its Q, K, V, attention-output, FFN-in (both halves for gated T5) and FFN-out weights.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, nn.Parameter] = {}
    for layer in encoder_layers(model):
        for linear in (layer.query, layer.key, layer.value, layer.attn_out, *layer.ffn_in, layer.ffn_out):
            out[names[id(linear.weight)]] = linear.weight
    return out


def prunable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """`expect={"param_shapes": ...}` for `Mask.load` of a weight mask of this model."""
    return {n: tuple(p.shape) for n, p in prunable_weights(model).items()}


def _keep_masks(params: Mapping[str, torch.Tensor], mask_weights: MaskLike) -> KeepMasks:
    """Validated bool CPU masks for parameters of this model (a Mask or a name -> tensor mapping)."""
    if isinstance(mask_weights, Mask):
        if mask_weights.weights is None:
            raise MaskError("this mask has no weights part; it was not made by magnitude pruning")
        mask_weights = mask_weights.weights
    out: KeepMasks = {}
    for name, keep in mask_weights.items():
        if name not in params:
            raise MaskError(f"weight mask names {name!r}, which this model does not have")
        if tuple(keep.shape) != tuple(params[name].shape):
            raise MaskError(
                f"weight mask for {name!r} is {list(keep.shape)}, "
                f"but the parameter is {list(params[name].shape)}"
            )
        out[name] = keep.detach().to("cpu", torch.bool)
    return out


def kept_count(keep: Mapping[str, torch.Tensor]) -> int:
    return sum(int(k.sum()) for k in keep.values())


def sparsity(keep: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the masked weights that are removed."""
    total = sum(k.numel() for k in keep.values())
    return 1.0 - kept_count(keep) / total


def _all_kept(params: Mapping[str, torch.Tensor]) -> KeepMasks:
    return {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}


def _magnitudes(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", torch.float32).abs() for n, p in params.items()}


# ---- applying a weight mask ------------------------------------------------------------------------


def _zero(param: torch.Tensor, drop: torch.Tensor) -> None:
    with torch.no_grad():
        param.masked_fill_(drop.to(param.device), 0)


def apply_weight_mask(model: nn.Module, mask_weights: MaskLike) -> None:
    """Zero the masked weights in place (once; see `WeightMasker` to keep them zero while training)."""
    params = dict(model.named_parameters())
    for name, keep in _keep_masks(params, mask_weights).items():
        _zero(params[name], ~keep)


@contextlib.contextmanager
def weights_masked(model: nn.Module, mask_weights: MaskLike) -> Iterator[nn.Module]:
    """Evaluate a candidate mask without destroying the caller's weights: zero, yield, restore."""
    params = dict(model.named_parameters())
    keep = _keep_masks(params, mask_weights)
    saved = {n: params[n].detach().clone() for n in keep}
    try:
        for name, k in keep.items():
            _zero(params[name], ~k)
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


class WeightMasker:
    """Keeps masked weights exactly zero while a model trains (a context manager; `remove` undoes it).

    - `after_step()`: call after every `optimizer.step()`; re-zeroes (AdamW would move them otherwise);
    - `zero_grad=True`: gradient hooks zero the masked gradients, so clipping and Adam moments see only
      kept weights;
    - `before_forward=True`: a forward pre-hook re-zeroes any masked parameter whose version counter moved
      since it was last zeroed (an optimiser step, `load_state_dict`), so a trainer without a step hook
      still never computes with, evaluates or checkpoints a non-zero masked weight; an unchanged model
      pays one integer compare per matrix.
    """

    def __init__(
        self,
        model: nn.Module,
        mask_weights: MaskLike,
        *,
        zero_grad: bool = True,
        before_forward: bool = True,
    ) -> None:
        params = dict(model.named_parameters())
        self.keep = _keep_masks(params, mask_weights)
        self._params = {n: params[n] for n in self.keep}
        self._drop: dict[str, torch.Tensor] = {n: ~k for n, k in self.keep.items()}
        self._versions: dict[str, int] = {}
        self._handles: list[Any] = []
        if zero_grad:
            self._handles += [p.register_hook(partial(self._masked_grad, n)) for n, p in self._params.items()]
        if before_forward:
            self._handles.append(model.register_forward_pre_hook(self._before_forward))
        self.apply()

    def _drop_on(self, name: str, device: torch.device) -> torch.Tensor:
        drop = self._drop[name]
        if drop.device != device:  # the model moved (fit calls model.to(device)); follow it once
            drop = self._drop[name] = drop.to(device)
        return drop

    def _zero_one(self, name: str) -> None:
        param = self._params[name]
        with torch.no_grad():
            param.masked_fill_(self._drop_on(name, param.device), 0)
        self._versions[name] = param._version

    def apply(self) -> None:
        """Zero every masked weight now."""
        for name in self._params:
            self._zero_one(name)

    def after_step(self, *_: Any) -> None:
        """Re-zero after an optimiser step; accepts and ignores arguments so it fits any callback slot."""
        self.apply()

    def _masked_grad(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(self._drop_on(name, grad.device), 0)

    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        for name, param in self._params.items():
            if param._version != self._versions.get(name):
                self._zero_one(name)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> WeightMasker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


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
    """Seed 004's "bad" mask: keep the globally SMALLEST |w|, as many as `keep` keeps."""
    return smallest(scores, {n: torch.ones_like(k) for n, k in keep.items()}, kept_count(keep))


# ---- masks and state files -------------------------------------------------------------------------


def _mask(model: nn.Module, keep: KeepMasks, method: str, meta: MaskMeta | None, **fields: Any) -> Mask:
    shape = gate_shape(model)
    base = meta or MaskMeta()
    extra = {**(base.extra or {}), **fields.pop("extra", {})}
    info = dataclasses.replace(base, method=method, config_hash=config_hash(model), extra=extra, **fields)
    heads = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    return Mask(heads, weights=dict(keep), meta=info)


def _fingerprint(settings: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """Settings + names, shapes and exact values of the tensors a search depends on."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, t in tensors.items():
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _save_state(path: Path, keep: KeepMasks, state: dict[str, Any]) -> None:
    blob = st_save({n: k.contiguous() for n, k in keep.items()}, metadata={"state": json.dumps(state)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def _load_state(
    path: Path | None, fingerprint: str, names: Mapping[str, Any]
) -> tuple[KeepMasks, dict[str, Any]] | None:
    """The saved (mask, state) of an interrupted search, or None; another search's state is refused.

    The mask comes back in the order of `names` (safetensors sorts keys): order decides ties and random masks.
    """
    if path is None or not Path(path).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        state = json.loads((f.metadata() or {})["state"])
        keep = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if state.get("fingerprint") != fingerprint or set(keep) != set(names):
        raise ConfigError(
            f"pruning state {path} was made with other weights or settings; delete it to start over"
        )
    log.info("resuming pruning search from %s", path)
    return {n: keep[n] for n in names}, state


# ---- one-shot global magnitude pruning (seed 004) --------------------------------------------------


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
    fingerprint: str,
    state_path: Path | None,
) -> tuple[KeepMasks, dict[str, Any]]:
    """Resume from `state_path`, or evaluate the unpruned model and write round 0."""
    saved = _load_state(state_path, fingerprint, params)
    if saved is not None:
        return saved
    unpruned = float(evaluate_fn(model))
    state = {
        "fingerprint": fingerprint,
        "rounds_done": 0,
        "stopped": False,
        "unpruned": unpruned,
        "history": [{"round": 0, "sparsity": 0.0, "score": unpruned, "accepted": True}],
    }
    keep = _all_kept(params)
    if state_path is not None:
        _save_state(state_path, keep, state)
    log.info("magnitude pruning: unpruned score %.4f", unpruned)
    return keep, state


def magnitude_prune(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    cfg: Any,
    *,
    state_path: str | Path | None = None,
    seed: int = 0,
    higher_is_better: bool = True,
    meta: MaskMeta | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> MagnitudeResult:
    """Seed 004's one-shot global L1 pruning of the finetuned weights, no retraining.

    Each round removes `cfg.weight_fraction_per_round` of the remaining prunable weights with the
    smallest |w|, zeroes them in place, calls `evaluate_fn(model)` and restores the weights (the
    caller's model is unchanged on return). It stops after `cfg.weight_rounds` rounds or at the first
    round whose score falls below the line (`_below_line`) and returns the last mask above it — all
    rounds above it return the last round's mask (seed 004 returned the one before: fixed). The random
    (per-matrix equal count, `seed`) and bad (inverted magnitude) masks match its size. `on_round`
    gets each round's history entry after the state is saved (a test kills the run there).
    """
    state_path = Path(state_path) if state_path is not None else None
    params = prunable_weights(model)
    scores = _magnitudes(params)
    settings = {
        "fraction": cfg.weight_fraction_per_round,
        "rounds": cfg.weight_rounds,
        "line": cfg.threshold if higher_is_better else cfg.mlm_threshold,
        "higher_is_better": higher_is_better,
    }
    keep, state = _start_magnitude(model, evaluate_fn, params, _fingerprint(settings, scores), state_path)
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
        if state_path is not None:
            _save_state(state_path, keep, state)
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
    mask = _mask(model, keep, "magnitude", meta, **scored, **found)
    random = _mask(model, random_like(keep, seed), "magnitude-random", meta, **_with(size, seed=seed))
    bad = _mask(model, inverted_like(scores, keep), "magnitude-bad", meta, **size)
    log.info("magnitude pruning: kept mask of round %d, sparsity %.4f", last["round"], last["sparsity"])
    return MagnitudeResult(mask, random, bad, state["history"], state["unpruned"], last["score"])


def _with(fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**fields, "extra": {**fields["extra"], **extra}}


# ---- iterative magnitude pruning with rewinding (seed 002) -----------------------------------------


@dataclass(frozen=True)
class Segment:
    """One stretch of training between pruning events, as handed to `train_fn`.

    The contract: `train_fn(model, segment)` builds a NEW optimiser (and schedule), trains `model` in
    place for `steps` optimiser steps (None = one epoch), calls `after_step()` after every
    `optimizer.step()` (with `xsub.trainer.fit`: pass it as the per-step callback), seeds its data order
    and dropout from `index` (so a resumed search repeats the same segment exactly), and returns a
    JSON-able summary (e.g. the final train loss or dev score) or None.
    """

    index: int  # 0-based; the event this training leads to is index + 1
    steps: int | None
    after_step: Callable[..., None]


TrainFn = Callable[[nn.Module, Segment], Any]


@dataclass
class ImpResult:
    mask: Mask
    history: list[dict[str, Any]] = field(default_factory=list)


def imp_num_events(cfg: Any, *, epochs: int, steps_per_epoch: int) -> int:
    """Pruning events in a finetuning run: one per `cfg.imp_prune_every` steps (0 = per epoch)."""
    every = cfg.imp_prune_every or steps_per_epoch
    return max(1, (epochs * steps_per_epoch) // every)


def imp_target_sparsity(event: int, num_events: int, final_sparsity: float) -> float:
    """Seed 002's linear schedule: after event e of N, (e / N) × final sparsity of the original weights."""
    return event / num_events * final_sparsity


def reinit_weights(model: nn.Module, seed: int) -> None:
    """Re-initialise every weight with the model's own `_init_weights`, seeded (weight_init=rand).

    transformers 5 marks loaded tensors `_is_hf_initialized` and its init functions then silently skip
    them, so after `from_pretrained` a plain `init_weights()` changes nothing; the marks are lifted for
    the call and restored. The caller's RNG is untouched.
    """
    init = getattr(model, "_init_weights", None)
    if init is None:
        raise TypeError(
            f"{type(model).__name__} has no _init_weights; weight_init=rand needs a transformers model"
        )
    tensors = [*model.parameters(), *model.buffers()]
    marked = [t for t in tensors if getattr(t, "_is_hf_initialized", False)]
    cuda = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
    try:
        for t in marked:
            t._is_hf_initialized = False
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            model.apply(init)
    finally:
        for t in marked:
            t._is_hf_initialized = True
    log.info("re-initialised %s from seed %d (weight_init=rand)", type(model).__name__, seed)


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
    state_path: str | Path | None = None,
    meta: MaskMeta | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ImpResult:
    """Seed 002's iterative magnitude pruning with rewinding during finetuning.

    For event e = 1..num_events: rewind the model to `pretrained_state` (None: the model as passed)
    with the current mask applied, train one `Segment` (`cfg.imp_prune_every` steps, 0 = one epoch)
    under a `WeightMasker`, then prune the smallest-|w| surviving weights of the trained model until
    round(e / N × `cfg.imp_final_sparsity` × total) of the original prunable weights are gone.
    `weight_init="rand"` rewinds to a seeded re-initialisation of the whole model instead (the branch
    that crashed in seed 002). On return the model holds the ticket: rewound weights, mask applied.
    """
    state_path = Path(state_path) if state_path is not None else None
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
    fingerprint = _fingerprint(settings, {n: rewind_state[n] for n in params})
    saved = _load_state(state_path, fingerprint, params)
    keep, state = saved or (_all_kept(params), {"fingerprint": fingerprint, "events_done": 0, "history": []})
    while state["events_done"] < num_events:
        event = state["events_done"] + 1
        _rewind(model, rewind_state, keep)
        with WeightMasker(model, keep) as masker:
            summary = train_fn(model, Segment(event - 1, steps, masker.after_step))
            masker.apply()
        target = imp_target_sparsity(event, num_events, cfg.imp_final_sparsity)
        n = round(target * total) - (total - kept_count(keep))
        keep = prune_smallest(_magnitudes(params), keep, n)
        entry = {"event": event, "target": target, "sparsity": sparsity(keep), "train": _jsonable(summary)}
        state["history"].append(entry)
        state["events_done"] = event
        if state_path is not None:
            _save_state(state_path, keep, state)
        log.info("IMP event %d/%d: sparsity %.4f (target %.4f)", event, num_events, entry["sparsity"], target)
        if on_event is not None:
            on_event(entry)
    _rewind(model, rewind_state, keep)
    extra = {"history": state["history"], "weight_init": weight_init, "sparsity": sparsity(keep)}
    mask = _mask(model, keep, "imp", meta, rounds=num_events, extra=extra)
    return ImpResult(mask, state["history"])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
