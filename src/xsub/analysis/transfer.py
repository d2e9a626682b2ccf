"""Mask transfer: retrain with language A's mask, evaluate on target language B (Foroutan et al. 2022).

Reads the train stage's metrics of runs retrained with `mask.source` = own (A = B) or lang:A, and the
baselines (random / bad / inverted of B's own size, none = no mask), for every target language and
seed. A missing run is one line with the sweep command that makes all missing runs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from xsub import plots, store
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.config import ConfigError
from xsub.store import Key as StoreKey
from xsub.tables import format_table


def run_key(inputs: Inputs, target: str, source: str, seed: int) -> StoreKey:
    """The store key of `stage=train lang=<target> mask.source=<source> seed=<seed>` of this run."""
    return inputs.model_key(inputs.tasks[0], seed, lang=target, mask=source)


def upstream(inputs: Inputs) -> list[StoreKey]:
    """What a transfer table depends on: every retrained run it reads."""
    return [run_key(inputs, t, src, s) for t in inputs.langs for src in sources(inputs) for s in inputs.seeds]


def sources(inputs: Inputs) -> list[str]:
    """lang:<A> for every language (lang:<target> is the target's own mask) and the baselines."""
    return [f"lang:{a}" for a in inputs.langs] + list(inputs.an.baselines)


def run(inputs: Inputs) -> Result:
    split = inputs.an.split
    rows, missing = [], []
    for target in inputs.langs:
        for source in sources(inputs):
            for seed in inputs.seeds:
                key = run_key(inputs, target, source, seed)
                if store.done(inputs.cfg, key) is None:
                    missing.append((target, source, seed))
                    continue
                with inputs.open(key, "retrained run") as out:
                    metrics = json.loads((out / "metrics.json").read_text())
                name = metrics["metric"]
                mask_lang = (
                    target if source == "own" else source.split(":", 1)[1] if ":" in source else source
                )
                rows.append(
                    {
                        "target": target,
                        "source": source,
                        "mask_of": mask_lang,
                        "seed": seed,
                        "metric": name,
                        "value": metrics[split][target][name],
                        "heads_kept": (metrics.get("mask") or {}).get("heads_kept"),
                    }
                )
    if missing:
        keys = [run_key(inputs, *m) for m in missing]
        raise ConfigError(
            f"{len(missing)} retrained run(s) missing (e.g. {missing[0][0]} with mask {missing[0][1]}); "
            f"make them with: {store.sweep_command(keys)}"
        )
    table = pd.DataFrame(rows)
    stats = table.groupby(["target", "mask_of"], sort=False).value.agg(["mean", "std"])
    cols = list(inputs.langs) + [b for b in inputs.an.baselines]
    mean = stats["mean"].unstack().reindex(index=list(inputs.langs), columns=cols)
    std = stats["std"].unstack().reindex(index=list(inputs.langs), columns=cols)
    name = table.metric.iloc[0]
    seeds = ", ".join(map(str, inputs.seeds))
    figure = plots.heatmap(
        mean.to_numpy(dtype=float),
        list(mean.index),
        [c if c in inputs.langs else f"[{c}]" for c in cols],
        inputs.out / "transfer.png",
        title=f"{split} {name} retrained with the mask of ... (seeds {seeds})",
        xlabel="mask of (language) / [baseline]",
        ylabel="target language",
        colorbar_label=name,
        nan_note="no retrained run for this cell",
        note=inputs.note(split, extra="retrained runs' metrics (stage=train mask.source=...)"),
    )
    multi = len(inputs.seeds) > 1
    cells = [
        [t]
        + [
            f"{mean.at[t, c]:.3f}" + (f"±{std.at[t, c]:.3f}" if multi and not np.isnan(std.at[t, c]) else "")
            for c in cols
        ]
        for t in mean.index
    ]
    summary = format_table([f"target \\ mask ({split} {name})", *cols], cells)
    return Result({"transfer": table}, {"transfer": figure}, summary)
