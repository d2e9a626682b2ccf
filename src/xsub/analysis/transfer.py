"""Mask transfer: retrain with language A's mask, evaluate on target language B (seeds 002, 004).

Reads the train stage's metrics of runs retrained with `mask.source` = own (A = B) or lang:A, and the
baselines (random / bad / inverted of B's own size, none = no mask), for every target language and
seed. A missing run is one line with the sweep command that makes all missing runs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.config import ConfigError
from xsub.stages import train as train_stage
from xsub.tables import format_table


def run_cfg(inputs: Inputs, target: str, source: str, seed: int) -> DictConfig:
    """The config of `stage=train lang=<target> mask.source=<source> seed=<seed>` on top of this run."""
    cfg = OmegaConf.create(OmegaConf.to_container(inputs.cfg, resolve=False))
    with open_dict(cfg):
        cfg.lang = {target: inputs.cfg.lang.get(target, {"code": target})}
        cfg.mask.source = source
        cfg.mask.pruning = inputs.method
        cfg.seed = seed
    return cfg


def sources(inputs: Inputs) -> list[str]:
    """lang:<A> for every language (lang:<target> is the target's own mask) and the baselines."""
    return [f"lang:{a}" for a in inputs.langs] + list(inputs.an.baselines)


def run(inputs: Inputs) -> Result:
    split = inputs.an.split
    rows, missing = [], []
    for target in inputs.langs:
        for source in sources(inputs):
            for seed in inputs.seeds:
                out = train_stage.output_dir(run_cfg(inputs, target, source, seed))
                if not (out / "metrics.json").is_file():
                    missing.append((target, source, seed))
                    continue
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
        langs = ",".join(dict.fromkeys(m[0] for m in missing))
        srcs = ",".join(dict.fromkeys(m[1] for m in missing))
        seeds = ",".join(str(s) for s in sorted({m[2] for m in missing}))
        raise ConfigError(
            f"{len(missing)} retrained run(s) missing (e.g. {missing[0][0]} with mask {missing[0][1]}); "
            f"make them with: python -m xsub -m stage=train task={inputs.tasks[0]} model={inputs.model_name} "
            f"lang={langs} mask.source={srcs} mask.pruning={inputs.method} seed={seeds}"
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
