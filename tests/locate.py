"""Where a test's artifacts are in the store: every path comes from the store's keys (xsub.store)."""

from __future__ import annotations

from pathlib import Path

from conftest import make_cfg
from xsub import store


def model_dir(root: str | Path, *overrides: str, task: str = "synth-cls", seed: int = 0) -> Path:
    """The train-stage run `stage=train task=<task> lang=all debug=tiny seed=<seed> <overrides>`."""
    cfg = make_cfg(
        "stage=train", f"task={task}", "lang=all", "debug=tiny", f"seed={seed}", f"paths.artifacts={root}",
        *overrides,
    )  # fmt: skip
    return store.path(cfg, store.model_key(cfg))


def mask_dir(root: str | Path, lang: str, *prune: str, seed: int = 0) -> Path:
    """The mask of `lang` that `stage=prune <prune> seed=<seed>` makes (prune: its overrides)."""
    cfg = make_cfg(*prune, f"seed={seed}", f"paths.artifacts={root}")
    return store.path(cfg, store.mask_key(store.upstream(cfg, "prune", lang=lang), lang))
