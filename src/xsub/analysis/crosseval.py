"""Cross-language evaluation: is language A's subnetwork a subnetwork for language B too?

For every mask language A and evaluation language B, the finetuned model with A's mask applied is scored
on B's split (the task metric; perplexity for MLM; for causal LMs perplexity and bits per byte, which
compares models with different tokenizers). References per row: the full model, and a random
mask with A's number of kept units per part (the "random of equal size" baseline), drawn from the seed.
Evaluation batches are built once per language, so every mask sees the same examples and masked tokens.
"""

from __future__ import annotations

import pandas as pd

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.subnetwork import masked
from xsub.tables import format_table
from xsub.trainer import score_batches


def run(inputs: Inputs) -> Result:
    an = inputs.an
    rows = []
    for task in inputs.tasks:
        metric = inputs.metric(task)
        for seed in inputs.seeds:
            masks, model, tokenizer, data = inputs.evaluation(task, seed, an.split)
            metric = inputs.metric(task, tokenizer)  # causal LMs: bits per byte beside perplexity
            candidates = [("full", "-", None)]
            for lang, mask in masks.items():
                candidates.append(("own", lang, mask))
                if an.random_baseline:
                    candidates.append(("random", lang, mask.random_like(seed)))
            for kind, mask_lang, mask in candidates:
                with masked(model, mask):
                    for eval_lang, batches in data.items():
                        score = score_batches(model, batches, metric, inputs.device, inputs.precision)
                        rows.append(
                            {
                                "task": task,
                                "seed": seed,
                                "mask": kind,
                                "mask_lang": mask_lang,
                                "eval_lang": eval_lang,
                                "metric": metric.name,
                                "value": score[metric.name],
                                # comparable across tokenizers (causal LMs; absent elsewhere)
                                "bits_per_byte": score.get("bits_per_byte"),
                                "heads_kept": mask.num_heads_kept if mask else None,
                            }
                        )
    table = pd.DataFrame(rows)
    return Result({"crosseval": table}, _figures(inputs, table), _summary(inputs, table))


def _matrix(table: pd.DataFrame, task: str, kind: str) -> pd.DataFrame:
    t = table[(table.task == task) & (table["mask"] == kind)]
    return t.groupby(["mask_lang", "eval_lang"], sort=False).value.mean().unstack()


def _figures(inputs: Inputs, table: pd.DataFrame) -> dict:
    figures = {}
    seeds = "seed " + ", ".join(map(str, inputs.seeds)) + (" (mean)" if len(inputs.seeds) > 1 else "")
    for task in inputs.tasks:
        name = inputs.metric(task).name
        own = _matrix(table, task, "own")
        full = _matrix(table, task, "full")
        rows = [*own.index, "full model"]
        values = pd.concat([own, full.rename(index={"-": "full model"})]).to_numpy()
        figures[f"crosseval_{task}"] = plots.heatmap(
            values,
            rows,
            list(own.columns),
            inputs.out / f"crosseval_{task}.png",
            title=f"{task}: {name} of language A's subnetwork on language B ({seeds})",
            xlabel="evaluated on (B)",
            ylabel="mask of (A)",
            colorbar_label=name,
            cmap="viridis_r" if name == "perplexity" else "viridis",
            note=inputs.note(inputs.an.split, _n(inputs)),
        )
    return figures


def _n(inputs: Inputs) -> str:
    """Examples evaluated per language: one number, or min–max where the languages differ."""
    counts = sorted(set(getattr(inputs, "evaluated", {}).values()))
    return "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _summary(inputs: Inputs, table: pd.DataFrame) -> str:
    out = []
    for task in inputs.tasks:
        name = inputs.metric(task).name
        own, full = _matrix(table, task, "own"), _matrix(table, task, "full")
        rnd = _matrix(table, task, "random") if inputs.an.random_baseline else None
        rows = [
            [a, *own.loc[a].tolist()] + ([float(rnd.loc[a].mean())] if rnd is not None else [])
            for a in own.index
        ]
        rows.append(["full model", *full.iloc[0].tolist()] + (["-"] if rnd is not None else []))
        headers = [f"{task} {name}: mask \\ eval", *own.columns] + (
            ["random (mean)"] if rnd is not None else []
        )
        out.append(format_table(headers, rows, inputs.note(inputs.an.split, _n(inputs))))
    return "\n\n".join(out)
