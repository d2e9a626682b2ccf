"""stage=analyze: compare subnetworks — `python -m xsub stage=analyze analysis=<name> ...`.

Inputs (masks, pruning histories, finetuned models, data) are found in the store from the run's own
config (xsub.analysis.inputs). The output is a store artifact, analysis/<name>/<model>/<tasks>/
<pruning>/seed<s...>/<hash>/, keyed by the analysis settings and every input's identity: one CSV per
tidy table, PNG figures, summary.txt, config.yaml and DONE.json. All of them are written into a
staging folder that becomes the artifact at once, so a killed analysis leaves nothing half-written.
An input rewritten since (force=true) makes the analysis compute anew. Tables and figures are also
logged to W&B (logger=wandb).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import store, tracking
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs

log = logging.getLogger(__name__)

WITH_UPSTREAM = ("transfer",)  # analyses whose module defines upstream(inputs): more inputs to identify


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = Inputs(cfg)
    name = f"xsub.analysis.{cfg.analysis.name}"
    # an analysis module (torch, matplotlib, transformers) is imported only when it has upstream
    # inputs to name or work to do, so a finished analysis is skipped in about 2 s
    module = importlib.import_module(name) if cfg.analysis.name in WITH_UPSTREAM else None
    upstream = module.upstream(inputs) if module is not None else None
    key = inputs.key(upstream)
    with store.claim(cfg, key, force=cfg.force) as job:
        if job.done is not None:
            log.info("already analysed: %s (force=true to redo)", job.path)
            done = job.done
        else:
            done = _analyse(cfg, inputs, module or importlib.import_module(name), job)
    figures = "".join(f"  {job.path / f}\n" for f in done["figures"])
    an = cfg.analysis
    extra = f"at most {an.n_sentences} parallel sentences" if "n_sentences" in an else ""
    what = inputs.note(str(an.split) if "split" in an else "", extra=extra)
    print(f"{cfg.analysis.name}: {what}\n{done['summary']}\n\nfigures and tables: {job.path}\n{figures}")
    return done


def _analyse(cfg: DictConfig, inputs: Inputs, module: Any, job: store.Claim) -> dict[str, Any]:
    name = cfg.analysis.name
    log.info(
        "analysis %s of %s / %s / %s on %s",
        name,
        inputs.model_name,
        "+".join(inputs.tasks),
        inputs.method,
        " ".join(inputs.langs),
    )
    start = time.perf_counter()
    run_name = f"analyze-{name}-{'+'.join(inputs.tasks)}-s{cfg.seed}"
    inputs.partial, inputs.identity = job.start(), job.key.id
    with tracking.start(cfg, "analyze", name=run_name) as tracker, job.commit() as staging:
        inputs.out = staging
        result: Result = module.run(inputs)
        for table, frame in result.tables.items():
            frame.to_csv(staging / f"{table}.csv", index=False)
            tracker.table(table, frame)
        for fig, path in result.figures.items():
            tracker.image(fig, path)
        (staging / "summary.txt").write_text(result.summary + "\n")
        record = {
            "analysis": name,
            "tables": sorted(f"{t}.csv" for t in result.tables),
            "figures": sorted(Path(p).name for p in result.figures.values()),
            "summary": result.summary,
            "seconds": time.perf_counter() - start,
            "config": OmegaConf.to_container(cfg.analysis, resolve=True, enum_to_str=True),
        }
        job.upstream = inputs.read
        job.record.update(record)
        tracker.summary({"seconds": record["seconds"]})
    done = job.done or record
    log.info("analysis %s done in %.1f s: %s", name, record["seconds"], json.dumps(record["tables"]))
    return done
