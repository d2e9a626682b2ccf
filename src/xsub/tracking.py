"""Experiment tracking: Weights & Biases (offline by default) or nothing.

`logger=none` never imports wandb. Offline runs are written under <artifacts>/wandb (WANDB_DIR) and
uploaded later with `wandb sync <artifacts>/wandb/wandb/offline-run-*`. A tracker is a context manager:
`with tracking.start(...) as tracker:` finishes the W&B run even when the stage fails (marked failed).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import store

log = logging.getLogger(__name__)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """No-op tracker; `WandbTracker` overrides what it records."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def table(self, name: str, frame: Any) -> None:
        """A tidy result table (pandas DataFrame)."""

    def artifact(
        self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None
    ) -> None:
        """Files versioned as one W&B artifact (e.g. a mask and its sidecar)."""

    def image(self, name: str, path: Path) -> None:
        """A figure already saved as PNG."""

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


class WandbTracker(Tracker):
    def __init__(self, cfg: DictConfig, job_type: str, name: str, group: str) -> None:
        import wandb

        # per run, not setdefault: one process may run stages on several stores (pipeline, tests)
        wandb_dir = Path(os.environ.get("XSUB_WANDB_DIR") or store.wandb_dir(cfg))
        wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(wandb_dir)
        lg = cfg.logger
        self.run = wandb.init(
            project=lg.project or "xsub",
            entity=lg.entity or None,
            mode=os.environ.get("WANDB_MODE", lg.mode),
            name=name,
            group=lg.group or group,
            job_type=job_type,
            tags=list(lg.tags),
            config=_flatten(OmegaConf.to_container(cfg, resolve=True)),  # type: ignore[arg-type]
            dir=str(wandb_dir),
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(_flatten(metrics), step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(_flatten(metrics))

    def table(self, name: str, frame: Any) -> None:
        import wandb

        self.run.log({f"table/{name}": wandb.Table(dataframe=frame)})

    def image(self, name: str, path: Path) -> None:
        import wandb

        self.run.log({f"figure/{name}": wandb.Image(str(path))})

    def artifact(
        self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None
    ) -> None:
        import wandb

        art = wandb.Artifact(_artifact_name(name), type=kind, metadata=metadata or {})
        for p in paths:
            art.add_file(str(p))
        self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def _artifact_name(name: str) -> str:
    """W&B artifact names allow alphanumerics, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def default_group(cfg: DictConfig) -> str:
    """Runs of one sweep share a group (the sweep folder); single runs group by stage and task."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"sweep-{Path(hc.sweep.dir).name}"
    except ValueError:  # not inside a Hydra app (library use, tests)
        pass
    return f"{cfg.stage}-{cfg.task.name}"


def start(cfg: DictConfig, job_type: str, name: str, group: str = "") -> Tracker:
    """A tracker for one run: W&B name e.g. `prune-marc-zh-s0`, group from the sweep (default_group)."""
    if cfg.logger.name == "none":
        return Tracker()
    if cfg.logger.name == "wandb":
        return WandbTracker(cfg, job_type, name, group or default_group(cfg))
    raise ValueError(f"unknown logger {cfg.logger.name}")
