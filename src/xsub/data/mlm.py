"""Masked-LM text source: Wikipedia, which ships only a train split.

Standard column: `text` (str). Dev and test are carved from the raw train split: a permutation with a
fixed seed (HOLDOUT_SEED, independent of the run seed, so every run evaluates on the same rows) puts the
last HOLDOUT_FRACTION of rows (at most HOLDOUT_MAX) into test, the same amount before them into dev, and
the rest into train. Each part keeps the original row order.

Layouts (set by the task config, nothing is hard-coded per hub id):
- `wikimedia/wikipedia`: hub_subset `20231101.{lang}`, train_split `train`;
- seed 001's `mbelitsky/wikipedia_subset`: a DatasetDict whose split names are language codes
  (lt ru cs en fr de zh sw ar hi fa ur es): hub_subset "" and train_split `{lang}`; the raw split name is
  formatted with the language. Locally that is push_to_hub's `<path>/data/<lang>-*.parquet`.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from xsub.config import ConfigError
from xsub.data.hub import load_task_split, require_columns

HOLDOUT_SEED = 1234
HOLDOUT_FRACTION = 0.02
HOLDOUT_MAX = 10_000

SOURCES = ("wikipedia",)


def holdout_sizes(n: int) -> tuple[int, int]:
    """(dev, test) row counts for a train split of n rows: 2% each, at least 1, at most HOLDOUT_MAX."""
    k = max(1, min(round(n * HOLDOUT_FRACTION), HOLDOUT_MAX))
    return k, k


def holdout_split(ds: datasets.Dataset, part: str, what: str = "") -> datasets.Dataset:
    """Deterministic `part` ("train" | "dev" | "test") of a dataset that has only a train split."""
    n = len(ds)
    if n < 3:
        raise ConfigError(f"{what}: {n} row(s) cannot be split into train/dev/test; provide at least 3")
    n_dev, n_test = holdout_sizes(n)
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    bounds = {
        "train": (0, n - n_dev - n_test),
        "dev": (n - n_dev - n_test, n - n_test),
        "test": (n - n_test, n),
    }
    lo, hi = bounds[part]
    return ds.select(np.sort(perm[lo:hi]), keep_in_memory=True)


def wikipedia(ds: datasets.Dataset, what: str = "wikipedia") -> datasets.Dataset:
    """Only the `text` column (id/url/title are dropped), as a plain string column."""
    require_columns(ds, ("text",), what)
    ds = ds.select_columns(["text"])
    if ds.features["text"] != datasets.Value("string"):
        ds = ds.cast_column("text", datasets.Value("string"))
    return ds


def load_source(task: Any, lang: str, split: str, data: Any) -> datasets.Dataset:
    """One split (train/dev/test names from the task) of an MLM task for `lang`: column `text`."""
    if str(task.source) not in SOURCES:
        raise ConfigError(
            f"task {task.name}: source '{task.source}' is not an MLM source ({', '.join(SOURCES)})"
        )
    named = {task.train_split: "train", task.dev_split: "dev", task.test_split: "test"}
    parts = {**named, **{str(k).format(lang=lang): v for k, v in named.items()}}
    if split not in parts:
        raise ConfigError(f"task {task.name}: unknown split '{split}'; use one of {', '.join(parts)}")
    what = f"{task.name}/{lang}"
    raw = wikipedia(load_task_split(task, lang, task.train_split, data), what)
    return holdout_split(raw, parts[split], what)
