"""The artifact store: where each artifact lives, atomic writes, and "already done?" checks.

Stages meet only here. Every path is derived from (model, task, lang, pruning, seed), so a stage finds
its inputs without the user typing paths. Writes go to a temporary sibling and are renamed into place,
so a killed job never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DONE = "DONE.json"  # written last into a finished artifact directory


def root(cfg: Any) -> Path:
    """Artifact root: `paths.artifacts` (default `$XSUB_ARTIFACTS` or ./artifacts)."""
    return Path(str(cfg.paths.artifacts)).expanduser().resolve()


def data_dir(root: Path, name: str) -> Path:
    return root / "data" / name


def model_dir(root: Path, model: str, task: str, seed: int, variant: str = "") -> Path:
    """Finetuned model of (model, task, seed); `variant` separates e.g. single-language or masked runs."""
    leaf = f"seed{seed}" if not variant else f"{variant}/seed{seed}"
    return root / "models" / model / task / leaf


def mask_path(root: Path, model: str, task: str, pruning: str, lang: str, seed: int) -> Path:
    return root / "masks" / model / task / pruning / lang / f"seed{seed}.safetensors"


def analysis_dir(root: Path, name: str) -> Path:
    return root / "analysis" / name


def is_done(directory: Path) -> bool:
    return (directory / DONE).is_file()


def read_done(directory: Path) -> dict:
    return json.loads((directory / DONE).read_text())


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it over `target` (file or dir)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(target: Path, obj: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def lock(target: Path) -> Iterator[None]:
    """Exclusive inter-process lock for building `target` (two jobs needing the same upstream artifact)."""
    lock_file = Path(str(target) + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
