"""Task data for one (task, language, split), in standardized columns, from the hub or local files.

One module per data family (classification: xnli, paws-x, marc; ner: wikiann; mlm: wikipedia;
parallel; synthetic: the embedded default). The embedded tasks are files the project generates in the
real sources' schemas, read through the same loaders as a hub download (`task.builtin` points the
loader at them instead of `data.path`).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import datasets

from xsub.config import ConfigError
from xsub.data import classification, clm, mlm, ner
from xsub.data.classification import text_definition
from xsub.data.hub import check_labels, load_task_split, require_columns, standardize, task_source_name

__all__ = ["LOADERS", "ROLES", "load_split", "text_definition"]

ROLES = ("train", "dev", "test")
SUBSET_SEED = 1234  # subsets/halves do not depend on the run's seed: seeds vary init and order only


def _text_classification(task: Any, lang: str, split: str, data: Any) -> datasets.Dataset:
    """Generic local/hub files with columns `text`, optional `text_pair`, `label` (kept as is).

    Labels must be integer ids 0..task.num_labels-1 (checked, one line naming the file and row)."""
    ds = load_task_split(task, lang, split, data)
    require_columns(ds, ("text", "label"), f"{task.name}/{lang}")
    where = task_source_name(task, lang, split, data)
    check_labels(ds, "label", f"{task.name}/{lang}", where, int(getattr(task, "num_labels", 0) or 0))
    has_pair = "text_pair" in ds.column_names

    def fn(b: dict[str, list]) -> dict[str, list]:
        pairs = b["text_pair"] if has_pair else [""] * len(b["text"])
        return {"text": b["text"], "text_pair": pairs, "label": [int(y) for y in b["label"]]}

    return standardize(ds, fn, classification.FEATURES, f"{task.name}/{lang}")


LOADERS = {
    "xnli": classification.load_source,
    "paws-x": classification.load_source,
    "marc": classification.load_source,
    "text-classification": _text_classification,
    "wikiann": ner.load_source,
    "wikipedia": mlm.load_source,  # mlm and clm tasks
    "flores": clm.load_flores,  # flores-clm
}


def builtin_path(cfg: Any) -> str:
    """Directory of the embedded default's generated files for this task (generated on first use)."""
    from xsub import store
    from xsub.data.synthetic import ensure_synthetic

    return str(Path(ensure_synthetic(store.root(cfg), seed=0)) / cfg.task.builtin)


def load_split(cfg: Any, lang: str, role: str) -> datasets.Dataset:
    """Standardized split `role` (train | dev | test) of cfg.task in `lang`, subsampled as cfg.data says.

    Training subsets (`data.max_train_examples`, `data.split_half`) and evaluation caps are taken from a
    fixed permutation, so every seed and every stage sees the same examples.
    """
    task = cfg.task
    if task.source not in LOADERS:
        raise ConfigError(f"task {task.name}: unknown source '{task.source}'; one of {', '.join(LOADERS)}")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    split = {"train": task.train_split, "dev": task.dev_split, "test": task.test_split}[role]
    data = cfg.data
    if task.builtin and not data.path:
        data = types.SimpleNamespace(**{**dict(cfg.data), "path": builtin_path(cfg)})
    ds = LOADERS[task.source](task, lang, split, data)
    if len(ds) == 0:
        raise ConfigError(f"{task.name}/{lang} {split} is empty; check data.path or the hub subset")
    if role == "train":
        if cfg.data.split_half:
            ds = ds.shuffle(seed=SUBSET_SEED)
            half = len(ds) // 2
            ds = ds.select(range(half) if cfg.data.split_half == 1 else range(half, len(ds)))
        cap = cfg.data.max_train_examples
    else:
        cap = cfg.data.max_eval_examples
    if cap and len(ds) > cap:
        ds = ds.shuffle(seed=SUBSET_SEED).select(range(cap))
    return ds
