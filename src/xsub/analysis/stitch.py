"""Model stitching (Bansal et al. 2021): is model 1's layer-k representation usable by model 2?

Two frozen models, each with its own mask already applied through gates, are joined by one bias-free
`Linear(d, d)`: model 1 ("front") runs up to layer k, the linear map sends its token states into
model 2 ("end"), which replaces its own layer-k states with them and runs to its task head. Only the
map trains (least-squares init on token activations, then Adam on the end model's task loss); the
stitched metric, reported against both ends, says how compatible the two subnetworks' representations
are. The front stops at layer k (a private exception raised from a forward hook), and every hook
lives only for the duration of one forward, so models the caller reuses are left untouched.

Layer k follows `hidden_states[k]` of `output_hidden_states=True`: k = 0 is the input of encoder
layer 0 (the embeddings output, after ELECTRA's projection or T5's dropout — exactly what transformers
records as hidden_states[0]), k ≥ 1 the output of encoder layer k (1-based). For T5, k = L is the
last block's output before the final layer norm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from xsub import plots, store
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.config import ConfigError
from xsub.mask import Mask, MaskError
from xsub.metrics import IGNORE, TaskMetric
from xsub.model import encoder_layers
from xsub.subnetwork import masked
from xsub.tables import format_table
from xsub.trainer import TrainingDiverged, autocast, score_batches

log = logging.getLogger(__name__)

_LAYER_RE = re.compile(r"((?:^|\.)(?:layer|layers|block|h)\.)(\d+)(\.)")


class _Stop(Exception):
    """Raised by the front model's hook once layer k is computed, to skip the rest of its forward."""


# --------------------------------------------------------------------------------------------------
# Hooks at layer k


def _layer_modules(model: nn.Module) -> list[nn.Module]:
    try:
        return [lm.layer for lm in encoder_layers(model)]
    except ConfigError as e:
        raise ConfigError(f"stitching needs a supported encoder: {e}") from e
    except AttributeError as e:
        raise ConfigError(f"stitching cannot find the encoder layers of {type(model).__name__} ({e})") from e


def _check_layer(layer: int, num_layers: int) -> None:
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= num_layers:
        raise ValueError(
            f"stitch layer {layer!r} is out of range; valid: 0..{num_layers} "
            f"(0 = embeddings output, k = output of encoder layer k)"
        )


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replaced(output: Any, new: torch.Tensor) -> Any:
    old = _first(output)
    if tuple(new.shape) != tuple(old.shape):
        raise RuntimeError(
            f"stitched states have shape {list(new.shape)} but the end model's layer states have "
            f"{list(old.shape)}; give StitchedModel the end model's hidden size (dim_end)"
        )
    new = new.to(old.dtype)
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextlib.contextmanager
def _hook_at(
    model: nn.Module, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """While open, `fn(h)` sees hidden_states[layer] of `model`; a tensor it returns replaces them."""
    layers = _layer_modules(model)
    _check_layer(layer, len(layers))
    if layer == 0:  # the input of encoder layer 0, positional or keyword

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if args:
                new = fn(args[0])
                return None if new is None else ((_replaced(args[0], new), *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            if new is None:
                return None
            return args, {**kwargs, "hidden_states": _replaced(kwargs["hidden_states"], new)}

        handle = layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            new = fn(_first(output))
            return None if new is None else _replaced(output, new)

        handle = layers[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _accepted_keys(model: nn.Module) -> frozenset[str] | None:
    """Named arguments of `model.forward`; None if it takes only **kwargs (then pass everything)."""
    params = inspect.signature(model.forward).parameters.values()
    names = frozenset(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    return names or None


def _inputs_for(keys: frozenset[str] | None, batch: Mapping[str, Any], drop: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in batch.items() if k not in drop and (keys is None or k in keys)}


def hidden_at(model: nn.Module, layer: int, **inputs: Any) -> torch.Tensor:
    """hidden_states[layer] of `model` on `inputs`, running the model only up to that layer."""
    captured: list[torch.Tensor] = []

    def grab(h: torch.Tensor) -> None:
        captured.append(h)
        raise _Stop

    inputs = _inputs_for(_accepted_keys(model), inputs, drop=("labels",))
    with _hook_at(model, layer, grab), contextlib.suppress(_Stop):
        model(**inputs)
    if not captured:
        raise RuntimeError(f"layer {layer} of {type(model).__name__} never ran; is it an encoder model?")
    return captured[0]


# --------------------------------------------------------------------------------------------------
# The stitched model


class StitchedModel(nn.Module):
    """`front` up to layer `layer`, a bias-free linear map, then `end` from that layer on.

    Both models are frozen here (requires_grad False) and stay in eval mode even while the stitch
    trains; only `self.stitch.weight` is a trainable parameter. `forward(**batch)` returns the end
    model's output (`.logits`, and `.loss` if the batch has labels the end model takes). The front
    runs under no_grad. `front` and `end` may be the same instance only when they carry the same mask.
    """

    def __init__(
        self,
        front: nn.Module,
        end: nn.Module,
        layer: int,
        dim_front: int | None = None,
        dim_end: int | None = None,
    ) -> None:
        super().__init__()
        _check_layer(layer, min(len(_layer_modules(front)), len(_layer_modules(end))))
        self.front = front
        self.end = end
        self.layer = layer
        d_front = int(dim_front if dim_front is not None else front.config.hidden_size)
        d_end = int(dim_end if dim_end is not None else end.config.hidden_size)
        self.stitch = nn.Linear(d_front, d_end, bias=False)
        for model in (front, end):
            model.requires_grad_(False)
            model.eval()
        self._front_keys = _accepted_keys(front)
        self._end_keys = _accepted_keys(end)
        p = next(front.parameters(), None)
        if p is not None:
            self.stitch.to(device=p.device)

    def train(self, mode: bool = True) -> StitchedModel:
        """Only the stitch changes mode: the ends keep dropout off (they are frozen reference models)."""
        super().train(mode)
        self.front.eval()
        self.end.eval()
        return self

    def front_states(self, **batch: Any) -> torch.Tensor:
        """The front model's hidden_states[layer] (no grad), the stitch's input."""
        with torch.no_grad():
            return hidden_at(self.front, self.layer, **_inputs_for(self._front_keys, batch, ("labels",)))

    def end_states(self, **batch: Any) -> torch.Tensor:
        """The end model's own (unstitched) hidden_states[layer], the least-squares target."""
        with torch.no_grad():
            return hidden_at(self.end, self.layer, **_inputs_for(self._end_keys, batch, ("labels",)))

    def forward(self, **batch: Any) -> Any:
        stitched = self.stitch(self.front_states(**batch))
        with _hook_at(self.end, self.layer, lambda _h: stitched):
            return self.end(**_inputs_for(self._end_keys, batch))

    def extra_repr(self) -> str:
        return f"layer={self.layer}"


# --------------------------------------------------------------------------------------------------
# Initialisation, training, evaluation


def identity_init(stitched: StitchedModel) -> StitchedModel:
    """Stitch weight = identity (equal widths only): stitching a model to itself reproduces it."""
    w = stitched.stitch.weight
    if w.shape[0] != w.shape[1]:
        raise ValueError(f"identity init needs equal widths, the stitch maps {w.shape[1]} -> {w.shape[0]}")
    with torch.no_grad():
        w.copy_(torch.eye(w.shape[0], dtype=w.dtype, device=w.device))
    return stitched


def _token_rows(h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, d] → [n, d] of the non-pad tokens."""
    if attention_mask is None:
        return h.reshape(-1, h.shape[-1])
    return h[attention_mask.to(h.device).bool()]


@torch.no_grad()
def least_squares_init(
    stitched: StitchedModel,
    batches: Iterable[Mapping[str, torch.Tensor]],
    device: Any,
    max_tokens: int = 50_000,
) -> dict[str, float]:
    """Set the stitch to the least-squares map from front to end layer-k token states (non-pad tokens).

    Solves min ‖A W − B‖_F in float64 on the CPU (rank-deficient A gets the minimum-norm solution),
    over at most `max_tokens` tokens; returns {"tokens": n, "residual": ‖A W − B‖ / ‖B‖}.
    """
    device = torch.device(device)
    stitched.to(device)
    fronts, ends, n = [], [], 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch.get("attention_mask")
        a = _token_rows(stitched.front_states(**batch), mask)
        b = _token_rows(stitched.end_states(**batch), mask)
        take = min(len(a), max_tokens - n)
        fronts.append(a[:take].to("cpu", torch.float64))
        ends.append(b[:take].to("cpu", torch.float64))
        n += take
        if n >= max_tokens:
            break
    if n == 0:
        raise ValueError("least_squares_init got no tokens; pass at least one batch with attention")
    A, B = torch.cat(fronts), torch.cat(ends)
    W = torch.linalg.lstsq(A, B, driver="gelsd").solution  # [d_front, d_end]
    residual = float(torch.linalg.norm(A @ W - B) / torch.linalg.norm(B).clamp_min(1e-300))
    w = stitched.stitch.weight
    w.copy_(W.T.to(dtype=w.dtype, device=w.device))
    if n < A.shape[1]:
        log.warning("least-squares stitch from %d tokens < width %d: underdetermined", n, A.shape[1])
    return {"tokens": n, "residual": residual}


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy over labelled positions (IGNORE skipped): [B, C] with [B], or [B, T, C] with [B, T]."""
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {list(logits.shape)} do not fit labels {list(labels.shape)}; "
            f"stitch training needs classification, token classification or MLM labels"
        )
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long(), ignore_index=IGNORE
    )


def train_stitch(
    stitched: StitchedModel,
    train_batches: Iterable[Mapping[str, torch.Tensor]],
    device: Any,
    epochs: int = 10,
    lr: float = 3e-4,
    min_lr: float = 1e-5,
    seed: int = 0,
    precision: str = "auto",
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: store.Checkpoint | None = None,
) -> list[dict[str, Any]]:
    """Train only the stitch on the end model's task loss: Adam, cosine from `lr` to `min_lr`.

    The batches (with "labels") are held in memory and visited in a new seeded order each epoch, so
    the same seed and init give the same weights. Batches without a labelled position are skipped.
    Returns [{"epoch", "loss"}] (mean loss per epoch); `on_epoch_end` gets each record. With a
    `checkpoint`, every epoch is saved and a killed training resumes after its last one.
    """
    device = torch.device(device)
    batches = list(train_batches)
    if not batches:
        raise ValueError("train_stitch got no batches")
    stitched.to(device)
    weight = stitched.stitch.weight
    weight.requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, epochs * len(batches)), eta_min=min_lr
    )
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            weight.copy_(saved["weight"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        history = json.loads(saved["history"])
    stitched.train()
    try:
        for epoch in range(len(history), epochs):
            total, counted = 0.0, 0
            for step, i in enumerate(torch.randperm(len(batches), generator=generator).tolist()):
                batch = {k: v.to(device) for k, v in batches[i].items()}
                labels = batch.pop("labels")
                if not bool((labels != IGNORE).any()):
                    scheduler.step()
                    continue
                with autocast(device, precision):
                    logits = stitched(**batch).logits
                loss = task_loss(logits, labels)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"stitch loss is {loss.item()} at epoch {epoch + 1} step {step}; "
                        f"lower the stitch lr (now {lr}) or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item()
                counted += 1
            record = {"epoch": epoch + 1, "loss": total / counted if counted else math.nan}
            history.append(record)
            if checkpoint is not None:
                checkpoint.save(
                    {
                        "weight": weight.detach().cpu(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(),
                        "history": json.dumps(history),
                    }
                )
            log.info("stitch layer %d epoch %d: loss %.4f", stitched.layer, epoch + 1, record["loss"])
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        optimizer.zero_grad(set_to_none=True)
        stitched.eval()
    return history


@torch.no_grad()
def evaluate_stitched(
    stitched: StitchedModel,
    batches: Iterable[Mapping[str, torch.Tensor]],
    metric: TaskMetric,
    device: Any,
    precision: str = "auto",
) -> dict[str, float]:
    """The end task's metric of the stitched model (as `score_batches` gives it for either end)."""
    device = torch.device(device)
    stitched.to(device)
    return score_batches(stitched, batches, metric, device, precision)


# --------------------------------------------------------------------------------------------------
# Front-mask options


def _derived(mask: Mask, op: str, info: dict[str, Any]) -> Any:
    """Meta of a mask derived from `mask`: method wrapped, scores dropped (they were the source's)."""
    return dataclasses.replace(
        mask.meta,
        method=f"{op}({mask.meta.method})",
        score_before=None,
        score_after=None,
        extra={**mask.meta.extra, op: info},
    )


def _permute_weights(weights: dict[str, torch.Tensor], perm: list[int]) -> dict[str, torch.Tensor]:
    """New layer i's per-weight masks are old layer perm[i]'s (same parameter name otherwise)."""
    out = {}
    for name, t in weights.items():
        m = _LAYER_RE.search(name)
        if m is None or int(m.group(2)) >= len(perm):
            out[name] = t
            continue
        source = f"{name[: m.start(2)]}{perm[int(m.group(2))]}{name[m.end(2) :]}"
        if source not in weights or weights[source].shape != t.shape:
            raise MaskError(f"cannot shuffle per-weight mask {name}: no same-shaped {source} to take it from")
        out[name] = weights[source]
    return out


def shuffle_layers(mask: Mask, seed: int) -> Mask:
    """Layers permuted (new layer i = old layer perm[i]) for heads, MLPs and per-weight masks.

    Counts per layer move with the rows, so the totals kept are unchanged; the permutation and seed
    are recorded in meta.extra["shuffle_layers"].
    """
    perm = torch.randperm(mask.num_layers, generator=torch.Generator().manual_seed(seed))
    heads = mask.heads[perm]
    mlp = None if mask.mlp is None else mask.mlp[perm]
    weights = None if mask.weights is None else _permute_weights(mask.weights, perm.tolist())
    meta = _derived(mask, "shuffle_layers", {"seed": seed, "perm": perm.tolist()})
    return Mask(heads, mlp, weights, meta)


def no_heads(mask: Mask) -> Mask:
    """Every attention head removed; MLP and per-weight parts unchanged."""
    meta = _derived(mask, "no_heads", {"heads_kept_before": mask.num_heads_kept})
    return Mask(torch.zeros_like(mask.heads), mask.mlp, mask.weights, meta)


# --------------------------------------------------------------------------------------------------
# stage=analyze analysis=stitch

FRONT_MASKS: dict[str, Callable[[Mask, int], Mask]] = {
    "own": lambda m, _seed: m,
    "shuffled": shuffle_layers,
    "no_heads": lambda m, _seed: no_heads(m),
}


def run(inputs: Inputs) -> Result:
    """Every (front lang -> end lang) pair × layer × seed: metric of the front, the end, the least-squares
    stitch before training and the trained stitch, all on the end language's split (one row each, so no
    result column can go missing as in Language-Specific-Subnetworks)."""
    an = inputs.an
    front_task, end_task = inputs.tasks[0], an.end_task or inputs.tasks[0]
    pairs = (
        [(a, a) for a in inputs.langs]
        if an.pairs == "self"
        else list(itertools.product(inputs.langs, repeat=2))
    )
    metric = inputs.metric(end_task)
    rows = []
    for seed in inputs.seeds:
        front_seed = inputs.model_seed([inputs.mask(front_task, lang, seed) for lang in inputs.langs], seed)
        end_seed = inputs.model_seed([inputs.mask(end_task, lang, seed) for lang in inputs.langs], seed)
        front, _ = inputs.model(front_task, front_seed)
        end, tokenizer = inputs.model(end_task, end_seed)
        num_layers = len(encoder_layers(front))
        layers = list(an.layers) or list(range(num_layers + 1))
        for k in layers:
            _check_layer(k, num_layers)
        for front_lang, end_lang in pairs:
            front_mask = FRONT_MASKS[an.front_mask](inputs.mask(front_task, front_lang, seed), seed)
            end_mask = inputs.mask(end_task, end_lang, seed)
            size = inputs.cfg.train.batch_size
            train = inputs.batches(
                end_task, end_lang, "train", tokenizer, n=an.train_examples, batch_size=size
            )
            evaluation = inputs.batches(end_task, end_lang, an.split, tokenizer)
            with masked(front, front_mask), masked(end, end_mask):
                score = {
                    "end": _score(end, evaluation, metric, inputs),
                    "front": _score(front, evaluation, metric, inputs)
                    if front_task == end_task
                    else math.nan,
                }
                for k in layers:
                    stitched = StitchedModel(front, end, k)
                    ls = least_squares_init(stitched, train, inputs.device, an.ls_tokens)
                    init = evaluate_stitched(stitched, evaluation, metric, inputs.device, inputs.precision)
                    history = train_stitch(
                        stitched,
                        train,
                        inputs.device,
                        an.epochs,
                        an.lr,
                        an.min_lr,
                        seed,
                        inputs.precision,
                        checkpoint=inputs.checkpoint(f"stitch-s{seed}-{front_lang}-{end_lang}-layer{k}"),
                    )
                    final = evaluate_stitched(stitched, evaluation, metric, inputs.device, inputs.precision)
                    rows.append(
                        {
                            "seed": seed,
                            "front_task": front_task,
                            "front_lang": front_lang,
                            "front_mask": an.front_mask,
                            "end_task": end_task,
                            "end_lang": end_lang,
                            "layer": k,
                            "metric": metric.name,
                            "front": score["front"],
                            "end": score["end"],
                            "stitched_init": init[metric.name],
                            "stitched": final[metric.name],
                            "ls_residual": ls["residual"],
                            "final_loss": history[-1]["loss"] if history else math.nan,
                        }
                    )
                    log.info(
                        "stitch %s -> %s layer %d: %s %.4f (end %.4f)",
                        front_lang,
                        end_lang,
                        k,
                        metric.name,
                        final[metric.name],
                        score["end"],
                    )
    table = pd.DataFrame(rows)
    return Result({"stitch": table}, {"stitch": _figure(inputs, table)}, _summary(table))


def _score(model: nn.Module, batches: list, metric: TaskMetric, inputs: Inputs) -> float:
    return score_batches(model, batches, metric, inputs.device, inputs.precision)[metric.name]


def _figure(inputs: Inputs, table: pd.DataFrame) -> Any:
    mean = (
        table.groupby(["front_lang", "end_lang", "layer"], sort=False)[["stitched", "end"]]
        .mean()
        .reset_index()
    )
    series: dict[str, list[float]] = {}
    for (a, b), g in mean.groupby(["front_lang", "end_lang"], sort=False):
        series[f"{a} -> {b}"] = g.sort_values("layer").stitched.tolist()
    layers = sorted(table.layer.unique())
    for b, g in mean.groupby("end_lang", sort=False):
        series[f"end model {b}"] = [float(g.end.mean())] * len(layers)
    name = table.metric.iloc[0]
    return plots.lines(
        series,
        inputs.out / "stitch.png",
        x=[int(k) for k in layers],
        title=f"stitched {name} by layer (front mask: {inputs.an.front_mask})",
        xlabel="stitch layer (0 = embeddings)",
        ylabel=name,
        note=inputs.note(
            inputs.an.split,
            extra=f"map: {inputs.an.epochs} epochs, {inputs.an.train_examples} end-language examples",
        ),
    )


def _summary(table: pd.DataFrame) -> str:
    cols = ["front", "end", "stitched_init", "stitched"]
    mean = table.groupby(["front_lang", "end_lang", "layer"], sort=False)[cols].mean().reset_index()
    rows = [
        [f"{r.front_lang} -> {r.end_lang}", int(r.layer), r.front, r.end, r.stitched_init, r.stitched]
        for r in mean.itertuples()
    ]
    name = table.metric.iloc[0]
    return format_table(["pair", "layer", f"front {name}", f"end {name}", "least squares", "stitched"], rows)
