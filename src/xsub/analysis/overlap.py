"""Mask overlap: how much of one language's subnetwork is another's (docs/methods.md).

- Jaccard |A∩B| / |A∪B| of kept units for every pair of (task, lang), per seed, then mean ± std over seeds;
- proportion kept per layer (the mean over a layer's units; cross-lingual-subnetworks summed over
  the wrong axis);
- per-layer overlap of all masks of a seed together, |∩| / |∪| (Foroutan et al. 2022's multi-mask overlap);
- seed-to-seed agreement of one (task, lang): Jaccard and Pearson r of the masks, and Pearson r of the
  unpruned model's head importance (round 0 of the pruning history), which does not depend on where
  pruning stopped.
Every part a mask has (heads, MLP, weights) is compared. No model is run.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.importance_tsne import importance_vectors
from xsub.analysis.inputs import Inputs, Key
from xsub.config import NEURON_METHODS
from xsub.mask import Mask
from xsub.tables import format_table


def _label(key: Key, multi_task: bool) -> str:
    task, lang, _ = key
    return f"{task}/{lang}" if multi_task else lang


def _flat(mask: Mask, part: str) -> torch.Tensor:
    return mask._part(part).reshape(-1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson r of two flat tensors; NaN when either is constant (e.g. a mask that kept everything)."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan


def pairwise_jaccard(masks: Mapping[Key, Mask], parts: list[str]) -> pd.DataFrame:
    """One row per pair of (task, lang) within a seed and per part, both orders and the diagonal
    (so the table pivots straight into a symmetric matrix)."""
    rows = []
    for (ka, a), (kb, b) in itertools.product(masks.items(), repeat=2):
        if ka[2] != kb[2]:
            continue
        for part in parts:
            rows.append(
                {
                    "task_a": ka[0],
                    "lang_a": ka[1],
                    "task_b": kb[0],
                    "lang_b": kb[1],
                    "seed": ka[2],
                    "part": part,
                    "jaccard": a.jaccard(b, part),
                }
            )
    return pd.DataFrame(rows)


def per_layer_kept(masks: Mapping[Key, Mask], parts: list[str]) -> pd.DataFrame:
    rows = []
    for (task, lang, seed), m in masks.items():
        for part in parts:
            for layer, kept in enumerate(m.per_layer(part).tolist()):
                rows.append(
                    {"task": task, "lang": lang, "seed": seed, "part": part, "layer": layer, "kept": kept}
                )
    return pd.DataFrame(rows)


def layer_overlap(masks: Mapping[Key, Mask], parts: list[str]) -> pd.DataFrame:
    """Per seed and layer (0-based, as mask rows): units kept by every mask / by any (NaN if none kept)."""
    rows = []
    for seed in sorted({k[2] for k in masks}):
        group = [m for k, m in masks.items() if k[2] == seed]
        for part in parts:
            if part == "weights":  # per-parameter layers: per_layer already reports them; skip the union
                continue
            stack = torch.stack([m._part(part) for m in group])
            stack = stack.reshape(len(group), stack.shape[1], -1)  # [masks, L, units]
            inter = stack.all(0).sum(-1).double()
            union = stack.any(0).sum(-1).double()
            for layer, (i, u) in enumerate(zip(inter.tolist(), union.tolist())):
                rows.append(
                    {
                        "seed": seed,
                        "part": part,
                        "layer": layer,
                        "masks": len(group),
                        "overlap": i / u if u else math.nan,
                    }
                )
    return pd.DataFrame(rows)


def seed_agreement(
    masks: Mapping[Key, Mask], importances: Mapping[Key, dict[str, np.ndarray]], parts: list[str]
) -> pd.DataFrame:
    """Every pair of seeds of one (task, lang): mask Jaccard, mask Pearson r, importance Pearson r."""
    rows = []
    seeds = sorted({k[2] for k in masks})
    for task, lang in sorted({(k[0], k[1]) for k in masks}):
        for sa, sb in itertools.combinations(seeds, 2):
            a, b = masks[(task, lang, sa)], masks[(task, lang, sb)]
            for part in parts:
                gate = {"heads": "head", "mlp": "mlp" if a.mlp is None or a.mlp.ndim == 1 else "mlp_units"}
                ia = importances.get((task, lang, sa), {}).get(gate.get(part, ""))
                ib = importances.get((task, lang, sb), {}).get(gate.get(part, ""))
                imp = (
                    pearson(torch.as_tensor(ia), torch.as_tensor(ib))
                    if ia is not None and ib is not None
                    else None
                )
                rows.append(
                    {
                        "task": task,
                        "lang": lang,
                        "seed_a": sa,
                        "seed_b": sb,
                        "part": part,
                        "jaccard": a.jaccard(b, part),
                        "mask_r": pearson(_flat(a, part), _flat(b, part)),
                        "importance_r": imp,
                    }
                )
    return pd.DataFrame(rows)


def jaccard_matrix(table: pd.DataFrame, part: str, multi_task: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std over seeds of the Jaccard of one part, as square (task/lang × task/lang) frames."""
    t = table[table.part == part].copy()
    if multi_task:
        t["a"], t["b"] = t.task_a + "/" + t.lang_a, t.task_b + "/" + t.lang_b
    else:
        t["a"], t["b"] = t.lang_a, t.lang_b
    order = list(dict.fromkeys(t.a))
    stats = t.groupby(["a", "b"]).jaccard.agg(["mean", "std"])
    mean = stats["mean"].unstack().reindex(index=order, columns=order)
    std = stats["std"].unstack().reindex(index=order, columns=order)
    return mean, std


def _as_neuron_sets(masks: dict[Key, Mask]) -> dict[Key, Mask]:
    """Language-neuron masks keep almost every unit, so their kept-unit Jaccard is near 1 whatever the
    neurons: compare the neurons themselves (mlp True = the language's neuron), as LAPE reports overlap."""
    return {k: Mask(m.heads, mlp=~m.mlp, meta=m.meta) for k, m in masks.items()}


def run(inputs: Inputs) -> Result:
    masks = inputs.masks()
    parts = list(next(iter(masks.values())).parts)
    neurons = str(inputs.method) in NEURON_METHODS
    if neurons:  # every head is kept by construction: only the neurons say anything
        masks, parts = _as_neuron_sets(masks), ["mlp"]
    multi = len(inputs.tasks) > 1
    importances = {}
    for key in masks:
        path = inputs.history_path(*key)
        if path.is_file():  # structured pruning keeps every round; magnitude pruning has no importance
            importances[key] = importance_vectors(path, at_round=0)
    jac = pairwise_jaccard(masks, parts)
    tables = {
        "jaccard": jac,
        "per_layer": per_layer_kept(masks, parts),
        "layer_overlap": layer_overlap(masks, parts),
    }
    if len(inputs.seeds) > 1:
        tables["seed_agreement"] = seed_agreement(masks, importances, parts)

    out = inputs.out
    figures = {}
    seeds = "seed " + ", ".join(map(str, inputs.seeds))
    for part in parts:
        mean, _ = jaccard_matrix(jac, part, multi)
        what = "language neurons" if neurons else f"kept {part}"
        title = f"Jaccard of {what} ({inputs.method}, {seeds}" + (", mean)" if len(inputs.seeds) > 1 else ")")
        figures[f"jaccard_{part}"] = plots.heatmap(
            mean.to_numpy(),
            list(mean.index),
            list(mean.columns),
            out / f"jaccard_{part}.png",
            title=title,
            vmin=0.0,
            vmax=1.0,
            colorbar_label="Jaccard |A∩B| / |A∪B|",
            note=inputs.note(),
        )
        pl = tables["per_layer"][tables["per_layer"].part == part]
        pl = pl.assign(label=pl.task + "/" + pl.lang if multi else pl.lang)
        grouped = pl.groupby(["label", "layer"]).kept.agg(["mean", "std"]).reset_index()
        series = {
            lab: g.sort_values("layer")["mean"].tolist() for lab, g in grouped.groupby("label", sort=False)
        }
        errors = {
            lab: g.sort_values("layer")["std"].fillna(0).tolist() for lab, g in grouped.groupby("label")
        }
        figures[f"per_layer_{part}"] = plots.lines(
            series,
            out / f"per_layer_{part}.png",
            title=f"proportion of {part} kept per layer ({seeds})",
            xlabel="layer",
            ylabel="share kept",
            errors=errors if len(inputs.seeds) > 1 else None,
            band_label=f"± std over {len(inputs.seeds)} seeds (clipped to [0, 1])",
            bounds=(0.0, 1.0),
            note=inputs.note(),
        )
    first = inputs.seeds[0]
    grids = {_label(k, multi): m.heads.float().numpy() for k, m in masks.items() if k[2] == first}
    figures["masks_heads"] = plots.heatmap_grid(
        grids,
        out / "masks_heads.png",
        title=f"kept heads (seed {first}; 1 = kept)",
        xlabel="head",
        ylabel="layer",
        vmin=0.0,
        vmax=1.0,
        cmap="Greens",
        colorbar_label="1 = kept, 0 = pruned",
        note=inputs.note(),
    )
    return Result(tables, figures, summary(tables, parts, multi, inputs))


def summary(tables: dict[str, pd.DataFrame], parts: list[str], multi: bool, inputs: Inputs) -> str:
    lines = []
    for part in parts:
        mean, std = jaccard_matrix(tables["jaccard"], part, multi)
        cells = [
            [a]
            + [
                f"{mean.at[a, b]:.2f}" + (f"±{std.at[a, b]:.2f}" if len(inputs.seeds) > 1 else "")
                for b in mean
            ]
            for a in mean.index
        ]
        lines.append(format_table(["Jaccard " + part, *mean.columns], cells))
    if "seed_agreement" in tables:
        agg = tables["seed_agreement"].groupby("part")[["jaccard", "mask_r", "importance_r"]].mean()
        rows = [[p, *(agg.loc[p].tolist())] for p in agg.index]
        lines.append(format_table(["seed-to-seed (mean)", "Jaccard", "mask r", "importance r"], rows))
    return "\n\n".join(lines)
