"""stage=pipeline: run several stages in order, each composed like its own command line.

A step is a list of overrides (e.g. [stage=train, task=synth-mlm, lang=all]) applied on top of the
overrides this run was started with, minus the experiment/stage that chose the pipeline; so
`python -m xsub experiment=demo debug=tiny` runs every step with debug=tiny. Steps are skipped when
their artifact exists (stages are idempotent), so a rerun of a finished pipeline takes seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from xsub import store
from xsub.stages import run_stage

log = logging.getLogger(__name__)

_OWN = ("experiment", "stage", "pipeline")


def _base_overrides() -> list[str]:
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra app (tests): nothing to inherit
        return []
    return [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] not in _OWN]


def run(cfg: DictConfig) -> dict[str, Any]:
    base = _base_overrides()
    results = []
    for i, step in enumerate(cfg.pipeline.steps, 1):
        overrides = [*base, *step]
        log.info("pipeline step %d/%d: %s", i, len(cfg.pipeline.steps), " ".join(step))
        start = time.perf_counter()
        step_cfg = compose("config", overrides=overrides)
        results.append(
            {"step": list(step), "result": run_stage(step_cfg), "seconds": time.perf_counter() - start}
        )
    print(f"pipeline done: {len(results)} steps; results under {store.root(cfg)}")
    return {"steps": results}
