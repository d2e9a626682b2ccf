"""stage=analyze analysis=cka: how similar are the representations of subnetworks, layer by layer?

Sides are (task, language, mask) triples; every pair of sides that differs in exactly one of them is
compared with linear and debiased CKA (`xsub.cka.LinearCKA`, exact and bounded in memory) on the
pooled hidden states of parallel sentences, each side's mask applied through `xsub.subnetwork`. The
pairs are split into passes whose CKA accumulators fit the memory budget; the result is one tidy
table (a row per seed, pair of sides and pair of layers), figures per layer and between languages, and
a short text summary.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs, Side
from xsub.cka import LinearCKA, state_bytes
from xsub.config import ConfigError
from xsub.mask import Mask
from xsub.subnetwork import masked
from xsub.tables import format_table
from xsub.trainer import autocast

log = logging.getLogger(__name__)

POOLINGS = ("first", "mean")


@torch.no_grad()
def pooled_hidden_states(model: nn.Module, batch: dict[str, Tensor], pooling: str) -> Tensor:
    """Pooled hidden states [L+1, B, d] (embeddings, then every layer), float32.

    pooling "first": the first token; "mean": the mean over tokens with attention_mask 1 (all tokens
    when the batch has no mask). The model runs as it is: put it in eval mode first.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    out = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
    device = out.hidden_states[0].device  # layers may sit on several devices (model.device_map)
    hidden = torch.stack([h.to(device) for h in out.hidden_states]).float()  # [L+1, B, T, d]
    if pooling == "first":
        return hidden[:, :, 0]
    mask = batch.get("attention_mask")
    if mask is None:
        return hidden.mean(2)
    weights = mask.to(device=hidden.device, dtype=hidden.dtype)[None, :, :, None]
    return (hidden * weights).sum(2) / weights.sum(2).clamp_min(1)


_SIDE_NAMES = {"own": "each language's subnetwork", "full": "full model", "random": "random masks"}


def side_pairs(sides: list[Side]) -> list[tuple[Side, Side]]:
    """Pairs of sides that differ in exactly one of (task, lang, mask): cross-language, cross-task and
    subnetwork-vs-full comparisons, without the combinatorial rest."""
    return [
        (a, b)
        for a, b in itertools.combinations(sides, 2)
        if (a.task != b.task) + (a.lang != b.lang) + (a.mask != b.mask) == 1
    ]


def passes(
    pairs: list[tuple[Side, Side]], bytes_per_pair: int, budget_gb: float
) -> list[list[tuple[Side, Side]]]:
    """Split the pairs so that each pass's accumulators fit `budget_gb` (at least one pair per pass)."""
    per_pass = max(1, int(budget_gb * 2**30 // max(1, bytes_per_pair)))
    return [pairs[i : i + per_pass] for i in range(0, len(pairs), per_pass)]


def _side_mask(inputs: Inputs, side: Side, seed: int) -> Mask | None:
    if side.mask == "full":
        return None
    own = inputs.mask(side.task, side.lang, seed)
    return own if side.mask == "own" else own.random_like(seed)


def run(inputs: Inputs) -> Result:
    an = inputs.an
    data = inputs.parallel(inputs.langs)
    sides = [Side(t, lang, m) for t in inputs.tasks for lang in inputs.langs for m in an.sides]
    pairs = side_pairs(sides)
    if not pairs:
        raise ConfigError("cka needs two sides that differ in task, language or mask: add languages or sides")
    rows = []
    for seed in inputs.seeds:
        masks = {s: _side_mask(inputs, s, seed) for s in sides}
        models = {}
        for t in inputs.tasks:
            own = [inputs.mask(t, lang, seed) for lang in inputs.langs]
            models[t] = inputs.model(t, inputs.model_seed(own, seed))
        batches = {
            (t, lang): inputs.tokenize(tok, list(data[lang]))
            for t, (_, tok) in models.items()
            for lang in inputs.langs
        }
        config = next(iter(models.values()))[0].config
        layers, dim = int(config.num_hidden_layers) + 1, int(config.hidden_size)
        groups = passes(pairs, state_bytes(layers, dim), an.memory_gb)
        log.info(
            "cka: %d sides, %d pairs, %d sentences, %d pass(es)",
            len(sides),
            len(pairs),
            len(data),
            len(groups),
        )
        for group in groups:
            metrics = {p: LinearCKA(layers, dim).to(inputs.device) for p in group}
            needed = list(dict.fromkeys(s for p in group for s in p))
            for i in range(len(batches[(needed[0].task, needed[0].lang)])):
                reps = {}
                for side in needed:
                    model = models[side.task][0]
                    batch = {k: v.to(inputs.device) for k, v in batches[(side.task, side.lang)][i].items()}
                    with masked(model, masks[side]), autocast(inputs.device, inputs.precision):
                        reps[side] = pooled_hidden_states(model, batch, an.pooling)
                for (a, b), metric in metrics.items():
                    metric.update(reps[a], reps[b])
            for (a, b), metric in metrics.items():
                result = {k: v.cpu() for k, v in metric.compute().items()}
                for i, j in itertools.product(range(layers), range(layers)):
                    rows.append(
                        {
                            "seed": seed,
                            "task_a": a.task,
                            "lang_a": a.lang,
                            "mask_a": a.mask,
                            "task_b": b.task,
                            "lang_b": b.lang,
                            "mask_b": b.mask,
                            "layer_a": i,
                            "layer_b": j,
                            "linear": float(result["linear"][i, j]),
                            "debiased": float(result["debiased"][i, j]),
                            "pooling": an.pooling,
                            "n": len(data),
                        }
                    )
    table = pd.DataFrame(rows)
    return Result({"cka": table}, _figures(inputs, table, layers), _summary(inputs, table))


def _label(table: pd.DataFrame, side: str, multi_task: bool) -> pd.Series:
    lang, mask = table[f"lang_{side}"], table[f"mask_{side}"]
    label = lang + "/" + mask
    return table[f"task_{side}"] + "/" + label if multi_task else label


def _pair_labels(inputs: Inputs, table: pd.DataFrame) -> pd.Series:
    multi = len(inputs.tasks) > 1
    return _label(table, "a", multi) + " ~ " + _label(table, "b", multi)


# CKA is 0/0 where one side's representations do not vary over the sentences: with first-token
# pooling the embedding layer (0) gives every sentence the same [CLS] vector
_NAN_CELL = (
    "CKA undefined (a side's representations are constant over the sentences, "
    "e.g. layer 0 with first-token pooling)"
)


def _figures(inputs: Inputs, table: pd.DataFrame, layers: int) -> dict[str, Any]:
    out, an = inputs.out, inputs.an
    table = table.assign(pair=_pair_labels(inputs, table))
    diag = table[table.layer_a == table.layer_b]
    figures = {}
    series = {p: g.groupby("layer_a").linear.mean().tolist() for p, g in diag.groupby("pair", sort=False)}
    if len(inputs.tasks) > 1:  # pairs across tasks first, as in the layer × layer grid
        crossing = diag.drop_duplicates("pair").set_index("pair")
        crossing = crossing.task_a != crossing.task_b
        series = dict(sorted(series.items(), key=lambda kv: not crossing[kv[0]]))
    many = len(series) > 16
    series = dict(list(series.items())[:16])
    figures["cka_per_layer"] = plots.lines(
        series,
        out / "cka_per_layer.png",
        x=list(range(layers)),
        title=f"linear CKA of the same layer ({an.pooling} pooling)" + (" (first 16 pairs)" if many else ""),
        xlabel="layer (0 = embeddings)",
        ylabel="linear CKA",
        bounds=(0.0, 1.0),
        note=inputs.note(n=f"{table.n.iloc[0]} parallel sentences ({an.parallel_source})")
        + (
            "\nmissing points: " + _NAN_CELL
            if any(np.isnan(v).any() for v in map(np.asarray, series.values()))
            else ""
        ),
    )
    per_pair = {
        p: g.groupby(["layer_a", "layer_b"]).linear.mean().unstack().to_numpy()
        for p, g in table.groupby("pair", sort=False)
    }
    if len(inputs.tasks) > 1:  # the point of a two-task run: pairs across tasks first
        crossing = table.drop_duplicates("pair").set_index("pair")
        crossing = crossing.task_a != crossing.task_b
        per_pair = dict(sorted(per_pair.items(), key=lambda kv: not crossing[kv[0]]))
    shown = dict(list(per_pair.items())[:16])
    figures["cka_layers"] = plots.heatmap_grid(
        shown,
        out / "cka_layers.png",
        title="linear CKA, layer × layer" + (" (first 16 pairs)" if len(per_pair) > 16 else ""),
        xlabel="layer of the second side",
        ylabel="layer of the first side",
        vmin=0.0,
        vmax=1.0,
        colorbar_label="linear CKA",
        nan_note=_NAN_CELL,
        note=inputs.note(n=f"{table.n.iloc[0]} parallel sentences, {an.pooling} pooling"),
    )
    if len(inputs.tasks) == 1:
        for mask in an.sides:  # language × language at each mask kind: the headline matrix
            sub = diag[(diag.mask_a == mask) & (diag.mask_b == mask)]
            if sub.empty:
                continue
            mean = sub.groupby(["lang_a", "lang_b"]).linear.mean()
            langs = inputs.langs
            matrix = np.full((len(langs), len(langs)), 1.0)
            for (a, b), v in mean.items():
                matrix[langs.index(a), langs.index(b)] = matrix[langs.index(b), langs.index(a)] = v
            figures[f"cka_languages_{mask}"] = plots.heatmap(
                matrix,
                langs,
                langs,
                out / f"cka_languages_{mask}.png",
                title=f"linear CKA between languages ({_SIDE_NAMES[mask]}), mean over layers",
                vmin=0.0,
                vmax=1.0,
                colorbar_label="linear CKA",
                nan_note=_NAN_CELL,
                note=inputs.note(n=f"{table.n.iloc[0]} parallel sentences, {an.pooling} pooling"),
            )
    return figures


def _summary(inputs: Inputs, table: pd.DataFrame) -> str:
    table = table.assign(pair=_pair_labels(inputs, table))
    diag = table[table.layer_a == table.layer_b]
    last = diag.layer_a.max()
    rows = []
    for pair, g in diag.groupby("pair", sort=False):
        rows.append([pair, g.linear.mean(), g.debiased.mean(), g[g.layer_a == last].linear.mean()])
    headers = ["pair (same layer)", "linear CKA, mean over layers", "debiased", "last layer linear"]
    return format_table(headers, rows)
