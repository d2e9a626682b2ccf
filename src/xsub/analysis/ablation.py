"""Ablation of language units (Tang et al. 2024, LAPE's perplexity experiment, their ppl.py).

For every mask language A and evaluation language B: the model with A's units off (a language-neuron
mask's neurons; any mask's removed units) is scored on B's split, as the change against the unablated
model. The paper's finding is that the diagonal rises most: a language's own neurons matter to it.
`ablate=zero` gates the units to 0 (their code: `index_fill_(…, 0)` on act(gate)); `ablate=mean` holds
them at their mean activation over every evaluated language's tokens instead. Control per row: random
units of A's count in every layer (seeded), since the neurons concentrate in a few layers.
"""

from __future__ import annotations

import pandas as pd
import torch

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.mask import Mask
from xsub.neurons import collect
from xsub.pruning.neuron_masks import random_per_layer
from xsub.subnetwork import masked, units_fixed
from xsub.tables import format_table
from xsub.trainer import score_batches


def _removed_units(mask: Mask) -> torch.Tensor | None:
    return None if mask.mlp is None or mask.mlp.ndim != 2 else ~mask.mlp


def _scored(inputs: Inputs, model, batches, metric, mask: Mask | None, means: torch.Tensor | None) -> float:
    """The metric with `mask` applied: gates, or (ablate=mean) its removed MLP units held at their mean."""
    units = _removed_units(mask) if mask is not None else None
    if means is None or units is None:
        with masked(model, mask):
            return score_batches(model, batches, metric, inputs.device, inputs.precision)[metric.name]
    heads_only = Mask(mask.heads, meta=mask.meta)  # heads (if any are off) still gated
    with masked(model, heads_only), units_fixed(model, units, means):
        return score_batches(model, batches, metric, inputs.device, inputs.precision)[metric.name]


def _mean_activation(inputs: Inputs, model, data: dict[str, list[dict]]) -> torch.Tensor:
    """Each unit's mean over every evaluated language's tokens (one hooked pass per language)."""
    total, tokens = None, 0
    for batches in data.values():
        s = collect(model, batches, inputs.device, inputs.precision, per_text=True)
        weighted = (s.text_means * s.text_tokens.view(-1, 1, 1)).sum(0)
        total = weighted if total is None else total + weighted
        tokens += int(s.text_tokens.sum())
    return total / max(tokens, 1)


def run(inputs: Inputs) -> Result:
    an = inputs.an
    rows = []
    for task in inputs.tasks:
        metric = inputs.metric(task)
        for seed in inputs.seeds:
            masks, model, _, data = inputs.evaluation(task, seed, an.split)
            means = _mean_activation(inputs, model, data) if an.ablate == "mean" else None
            full = {b: _scored(inputs, model, bs, metric, None, None) for b, bs in data.items()}
            for a, mask in masks.items():
                candidates = [("ablated", mask)]
                if an.random_baseline and _removed_units(mask) is not None:
                    candidates.append(("random", random_per_layer(mask, seed)))
                off = _removed_units(mask)
                for kind, m in candidates:
                    for b, batches in data.items():
                        value = _scored(inputs, model, batches, metric, m, means)
                        rows.append(
                            {
                                "task": task,
                                "seed": seed,
                                "mask": kind,
                                "mask_lang": a,
                                "eval_lang": b,
                                "metric": metric.name,
                                "value": value,
                                "unablated": full[b],
                                "change": value - full[b],
                                "units_off": int(off.sum()) if off is not None else None,
                                "ablate": str(an.ablate),
                            }
                        )
    table = pd.DataFrame(rows)
    return Result({"ablation": table}, _figures(inputs, table), _summary(inputs, table))


def _matrix(table: pd.DataFrame, task: str, kind: str, column: str = "change") -> pd.DataFrame:
    t = table[(table.task == task) & (table["mask"] == kind)]
    return t.groupby(["mask_lang", "eval_lang"], sort=False)[column].mean().unstack()


def _figures(inputs: Inputs, table: pd.DataFrame) -> dict:
    figures = {}
    for task in inputs.tasks:
        name = inputs.metric(task).name
        own = _matrix(table, task, "ablated")
        figures[f"ablation_{task}"] = plots.heatmap(
            own.to_numpy(),
            list(own.index),
            list(own.columns),
            inputs.out / f"ablation_{task}.png",
            title=f"{task}: change in {name} when language A's units are off ({inputs.an.ablate})",
            xlabel="evaluated on (B)",
            ylabel="units of (A) off",
            colorbar_label=f"Δ {name} vs unablated",
            cmap="magma",
            note=inputs.note(inputs.an.split),
        )
    return figures


def diagonal_dominance(table: pd.DataFrame, task: str) -> dict[str, bool]:
    """Per language A: whether ablating A's units changes A's metric most (the paper's finding; for
    perplexity 'most' is the largest rise)."""
    own = _matrix(table, task, "ablated")
    return {a: bool(own.loc[a, a] >= own.loc[a].max()) for a in own.index if a in own.columns}


def _summary(inputs: Inputs, table: pd.DataFrame) -> str:
    out = []
    for task in inputs.tasks:
        name = inputs.metric(task).name
        own = _matrix(table, task, "ablated")
        rnd = _matrix(table, task, "random") if (table["mask"] == "random").any() else None
        units = (
            table[(table.task == task) & (table["mask"] == "ablated")].groupby("mask_lang").units_off.first()
        )
        dominant = diagonal_dominance(table, task)
        rows = []
        for a in own.index:
            row = [a, units.get(a), *[f"{v:+.3f}" for v in own.loc[a].tolist()]]
            if rnd is not None:
                row.append(f"{rnd.loc[a, a]:+.3f}" if a in rnd.columns else "-")
            rows.append([*row, "yes" if dominant.get(a) else "no"])
        unablated = table[table.task == task].groupby("eval_lang", sort=False).unablated.first()
        rows.append(
            ["unablated", "", *[f"{unablated[b]:.3f}" for b in own.columns]]
            + ([""] if rnd is not None else [])
            + [""]
        )
        headers = [f"{task} Δ{name}: off \\ eval", "units", *own.columns]
        headers += (["random, own lang"] if rnd is not None else []) + ["own lang largest"]
        out.append(format_table(headers, rows, inputs.note(inputs.an.split)))
    return "\n\n".join(out)
