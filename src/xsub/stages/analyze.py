"""stage=analyze: compare subnetworks — `python -m xsub stage=analyze analysis=<name> ...`.

Inputs (masks, pruning histories, finetuned models, data) are found in the artifact store by (model,
task(s), lang(s), pruning, seed(s)); see xsub.analysis.inputs. Output: artifacts/analysis/<name>/<model>/
<tasks>/<pruning>/seed<s...>/ with one CSV per tidy table, PNG figures, summary.txt and DONE.json
(a fingerprint of what was asked, so an identical rerun is skipped and a different one recomputes).
Tables and figures are also logged to W&B (logger=wandb).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import artifacts, tracking
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.trainer import config_fingerprint

log = logging.getLogger(__name__)


def fingerprint(cfg: DictConfig, inputs: Inputs) -> str:
    """What the results depend on: the analysis settings and the selected inputs (not paths or logging)."""
    return config_fingerprint(
        {
            "analysis": OmegaConf.to_container(cfg.analysis, resolve=True),
            "model": cfg.model.name,
            "method": inputs.method,
            "tasks": inputs.tasks,
            "langs": inputs.langs,
            "seeds": inputs.seeds,
            "data": OmegaConf.to_container(cfg.data, resolve=True),
        }
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = Inputs(cfg)
    out = inputs.out
    fp = fingerprint(cfg, inputs)
    with artifacts.lock(out):
        if artifacts.is_done(out) and artifacts.read_done(out).get("fingerprint") == fp and not cfg.force:
            log.info("already analysed: %s (force=true to redo)", out)
            done = artifacts.read_done(out)
        else:
            done = _analyse(cfg, inputs, fp)
    print(f"{done['summary']}\n\nfigures and tables: {out}\n" + "".join(f"  {f}\n" for f in done["figures"]))
    return done


def _analyse(cfg: DictConfig, inputs: Inputs, fp: str) -> dict[str, Any]:
    name = cfg.analysis.name
    tracker = tracking.start(cfg, "analyze", name=f"analyze-{name}-{'+'.join(inputs.tasks)}-s{cfg.seed}")
    log.info(
        "analysis %s of %s / %s / %s on %s",
        name,
        inputs.model_name,
        "+".join(inputs.tasks),
        inputs.method,
        " ".join(inputs.langs),
    )
    start = time.perf_counter()
    result: Result = importlib.import_module(f"xsub.analysis.{name}").run(inputs)
    out = inputs.out
    for table, frame in result.tables.items():
        with artifacts.atomic_path(out / f"{table}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        tracker.table(table, frame)
    for fig, path in result.figures.items():
        tracker.image(fig, path)
    artifacts.write_text(out / "summary.txt", result.summary + "\n")
    done = {
        "fingerprint": fp,
        "analysis": name,
        "tables": sorted(f"{t}.csv" for t in result.tables),
        "figures": sorted(p.name for p in result.figures.values()),
        "summary": result.summary,
        "seconds": time.perf_counter() - start,
        "config": OmegaConf.to_container(cfg.analysis, resolve=True),
    }
    artifacts.write_json(out / artifacts.DONE, done)
    tracker.summary({"seconds": done["seconds"]})
    tracker.finish()
    log.info("analysis %s done in %.1f s: %s", name, done["seconds"], json.dumps(done["tables"]))
    return done
