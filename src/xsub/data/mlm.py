"""Masked-LM text source: Wikipedia, which ships only a train split.

Standard column: `text` (str). Dev and test are carved from the raw train split: a permutation with a
fixed seed (HOLDOUT_SEED, independent of the run seed, so every run evaluates on the same rows) puts the
last HOLDOUT_FRACTION of rows (at most HOLDOUT_MAX) into test, the same amount before them into dev, and
the rest into train. Each part keeps the original row order.

Streamed (`data.streaming=true`, the wiki-mlm default): the train split is read lazily and only
`data.max_eval_examples` test rows, as many dev rows and `data.max_train_examples` train rows are kept
per language (100k / 3000 by default, the original project's sizes), carved from a seeded shuffle
buffer (`data.shuffle_buffer` rows) with test and dev first (`xsub.data.stream.carve`); the dump is never
read past what the sample needs. `stream_split` is that path for any text corpus (causal-LM text,
language-neuron corpora with a token budget).

Layouts (set by the task config, nothing is hard-coded per hub id):
- `wikimedia/wikipedia`: hub_subset `20231101.{lang}`, train_split `train`;
- cross-lingual-subnetworks' `mbelitsky/wikipedia_subset`: a DatasetDict whose split names are language codes
  (lt ru cs en fr de zh sw ar hi fa ur es): hub_subset "" and train_split `{lang}`; the raw split name is
  formatted with the language. Locally that is push_to_hub's `<path>/data/<lang>-*.parquet`.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from xsub.config import ConfigError
from xsub.data.hub import load_task_split, require_columns
from xsub.data.stream import DEFAULT_BUFFER, carve

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


TEXT_FEATURES = datasets.Features({"text": datasets.Value("string")})
STREAM_PARTS = ("test", "dev", "train")  # carving order: evaluation rows never depend on the train size


def stream_split(
    task: Any,
    lang: str,
    part: str,
    data: Any,
    *,
    n_train: int,
    n_eval: int,
    buffer_size: int = DEFAULT_BUFFER,
    token_budget: int = 0,
    count_tokens: Any = None,
) -> datasets.Dataset:
    """Part `part` (train | dev | test) of a streamed text corpus as a small in-memory Dataset (`text`).

    Reads the task's train split with `streaming=True` (hub or local files) and stops once the part is
    complete; `n_train` 0 with a `token_budget` takes train rows until their tokens reach the budget.
    """
    what = f"{task.name}/{lang}"
    stream = load_task_split(task, lang, task.train_split, data, streaming=True)
    features = getattr(stream, "features", None)
    if features is not None and "text" not in features:
        raise ConfigError(
            f"{what}: missing column text; found {', '.join(features)} (the files must use the hub schema)"
        )
    texts = ("" if row.get("text") is None else str(row["text"]) for row in stream)
    sizes = [("test", n_eval), ("dev", n_eval), ("train", n_train)]
    parts = carve(
        texts,
        sizes,
        seed=HOLDOUT_SEED,
        buffer_size=buffer_size,
        until=part,
        token_budget=token_budget,
        count_tokens=count_tokens,
    )
    rows = parts.get(part, [])
    if not rows:
        raise ConfigError(f"{what}: the stream has no rows left for {part} after the evaluation parts")
    return datasets.Dataset.from_dict({"text": rows}, features=TEXT_FEATURES)


def _streamed(task: Any, lang: str, part: str, data: Any) -> datasets.Dataset:
    n_train = int(getattr(data, "max_train_examples", 0) or 0)
    n_eval = int(getattr(data, "max_eval_examples", 0) or 0)
    if n_train <= 0 or n_eval <= 0:
        raise ConfigError(
            f"task {task.name}: data.streaming needs data.max_train_examples and data.max_eval_examples "
            f"> 0 (got {n_train} and {n_eval}), e.g. 100000 and 3000"
        )
    buffer_size = int(getattr(data, "shuffle_buffer", 0) or DEFAULT_BUFFER)
    return stream_split(task, lang, part, data, n_train=n_train, n_eval=n_eval, buffer_size=buffer_size)


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
    if getattr(data, "streaming", False):
        return _streamed(task, lang, parts[split], data)
    what = f"{task.name}/{lang}"
    raw = wikipedia(load_task_split(task, lang, task.train_split, data), what)
    return holdout_split(raw, parts[split], what)
