"""The stages: one module each with `run(cfg) -> dict`; stages meet only through the store.

`STAGES` is the registry the CLI validates against and `run_stage` dispatches through (stage=pipeline
runs other stages by name through it, so no stage imports another).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from omegaconf import DictConfig

STAGES: dict[str, str] = {
    "train": "xsub.stages.train",
    "prune": "xsub.stages.prune",
    "analyze": "xsub.stages.analyze",
    "interpolate": "xsub.stages.interpolate",
    "report": "xsub.stages.report",
    "store": "xsub.stages.store",
    "status": "xsub.stages.status",
    "pipeline": "xsub.stages.pipeline",
}


def run_stage(cfg: DictConfig) -> dict[str, Any]:
    """Validate one composed config and run its stage."""
    from xsub.config import validate

    validate(cfg, tuple(STAGES))
    if cfg.stage in ("train", "prune", "analyze", "interpolate") and _embedded_on_real_data(cfg):
        logging.getLogger("xsub").warning(
            "model=%s (the default) is the embedded model of the synthetic languages; task %s needs a "
            "real checkpoint: pass model=xlmr-base, mbert or mt5-base",
            cfg.model.name,
            cfg.task.name,
        )
    return importlib.import_module(STAGES[cfg.stage]).run(cfg)


def _embedded_on_real_data(cfg: DictConfig) -> bool:
    return str(cfg.model.source) == "embedded" and not cfg.task.builtin
