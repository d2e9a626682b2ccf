"""The stages: one module each with `run(cfg) -> dict`; stages meet only through the store.

`STAGES` is the registry the CLI validates against and `run_stage` dispatches through (stage=pipeline
runs other stages by name through it, so no stage imports another).
"""

from __future__ import annotations

import importlib
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
    return importlib.import_module(STAGES[cfg.stage]).run(cfg)
