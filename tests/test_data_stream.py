"""Streamed corpora: bounded reads (a source that fails past N rows), determinism, evaluation first."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

import data_fixtures as fx
from conftest import make_cfg
from xsub.data import mlm
from xsub.data.stream import carve, rows_needed

SIZES = [("test", 5), ("dev", 5), ("train", 20)]
BUFFER = 8


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
        yield


def tripwire(limit: int, total: int = 10_000):
    """Rows 0..total-1 that raise as soon as row `limit` (0-based) is requested: a dump read too far."""
    for i in range(total):
        if i >= limit:
            raise AssertionError(f"read row {i + 1} of a source allowed {limit}")
        yield {"text": f"doc {i}"}


@pytest.mark.parametrize("until", ["test", "dev", "train"])
def test_carve_reads_at_most_what_the_part_needs(until: str) -> None:
    limit = rows_needed(SIZES, until, BUFFER)
    parts = carve(tripwire(limit), SIZES, seed=3, buffer_size=BUFFER, until=until)
    assert list(parts) == ["test", "dev", "train"][: ["test", "dev", "train"].index(until) + 1]
    assert {k: len(v) for k, v in parts.items()} == {k: n for k, n in SIZES if k in parts}
    with pytest.raises(AssertionError, match="read row"):  # the bound is tight: one row fewer fails
        carve(tripwire(limit - 1), SIZES, seed=3, buffer_size=BUFFER, until=until)


def test_carve_over_a_streamed_dataset_stops_early() -> None:
    limit = rows_needed(SIZES, "train", BUFFER)
    stream = datasets.IterableDataset.from_generator(tripwire, gen_kwargs={"limit": limit})
    parts = carve(stream, SIZES, seed=0, buffer_size=BUFFER)
    assert len(parts["train"]) == 20


def test_carve_is_deterministic_and_evaluation_comes_first() -> None:
    docs = [{"text": f"doc {i}"} for i in range(200)]
    a = carve(docs, SIZES, seed=7, buffer_size=BUFFER)
    assert a == carve(docs, SIZES, seed=7, buffer_size=BUFFER)
    assert a["test"] != carve(docs, SIZES, seed=8, buffer_size=BUFFER)["test"]
    bigger = carve(docs, [("test", 5), ("dev", 5), ("train", 50)], seed=7, buffer_size=BUFFER)
    assert bigger["test"] == a["test"] and bigger["dev"] == a["dev"]  # train size never moves dev/test
    texts = [[r["text"] for r in a[k]] for k in a]
    assert len(set().union(*map(set, texts))) == 30  # disjoint
    assert [r["text"] for r in a["test"]] != [f"doc {i}" for i in range(5)]  # shuffled, not the head


def test_carve_token_budget_for_the_last_part() -> None:
    docs = [{"text": "a b c"} for _ in range(100)]
    parts = carve(
        docs,
        [("test", 2), ("train", 0)],
        seed=0,
        buffer_size=4,
        token_budget=10,
        count_tokens=lambda r: len(r["text"].split()),
    )
    assert len(parts["test"]) == 2 and len(parts["train"]) == 4  # 4 x 3 tokens >= 10


def test_wikipedia_streamed_from_local_dump(tmp_path: Path) -> None:
    root = fx.write_wikipedia(tmp_path, "en", n=60)
    t = fx.task("wiki", "wikipedia", hub_subset="20231101.{lang}")
    data = SimpleNamespace(
        path=str(root), streaming=True, max_train_examples=20, max_eval_examples=5, shuffle_buffer=8
    )
    parts = {s: mlm.load_source(t, "en", s, data)["text"][:] for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in parts.items()} == {"train": 20, "validation": 5, "test": 5}
    assert len(set().union(*map(set, parts.values()))) == 30
    assert mlm.load_source(t, "en", "test", data)["text"][:] == parts["test"]


def test_wiki_mlm_streams_the_original_sizes_by_default() -> None:
    cfg = make_cfg("task=wiki-mlm", "lang=en")
    assert cfg.data.streaming is True
    assert (cfg.data.max_train_examples, cfg.data.max_eval_examples) == (100_000, 3000)
