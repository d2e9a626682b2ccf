"""Hub layouts as the hub holds them today, loaded through `datasets.load_dataset` itself (never mocked):
FLORES-200's parquet branch, FLORES+, parallel alignment checks, MARC's one text, bad local files."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import dataclasses
from pathlib import Path

import datasets
import pytest

import data_fixtures as fx
from conftest import make_cfg
from xsub.config import ConfigError
from xsub.data import classification, load_split, parallel, text_definition
from xsub.data.hub import load_hub


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
        yield


def _hub_copy(monkeypatch: pytest.MonkeyPatch, source: str, directory: Path) -> None:
    """Point a parallel source's hub id at a local copy of its repository (same files, same README)."""
    src = parallel.HUB_SOURCES[source]
    monkeypatch.setitem(parallel.HUB_SOURCES, source, dataclasses.replace(src, hub_id=str(directory)))


# --- FLORES-200: facebook/flores, parquet conversion branch without README configs -------------------
def test_flores_parquet_branch_has_no_configs(tmp_path: Path) -> None:
    """Why the loader names files: the subset-as-config call fails on this layout (as on the hub)."""
    root = fx.write_flores(tmp_path, splits=fx.FLORES_SPLITS)
    with pytest.raises(ValueError, match="deu_Latn"):
        datasets.load_dataset(str(root), "deu_Latn", split="dev")


@pytest.mark.parametrize(("split", "raw", "n"), [("dev", "dev", 3), ("test", "devtest", 4)])
def test_flores_loads_dev_and_devtest_from_hub_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str, raw: str, n: int
) -> None:
    root = fx.write_flores(tmp_path, splits=fx.FLORES_SPLITS)
    _hub_copy(monkeypatch, "flores", root)
    ds = parallel.load_parallel("flores", ["en", "de"], split)
    assert ds.column_names == ["id", "en", "de"]
    assert ds["id"][:] == [str(i) for i in range(1, n + 1)]
    assert ds["en"][:] == fx.flores_sentences("eng_Latn", raw, n)
    assert ds["de"][:] == fx.flores_sentences("deu_Latn", raw, n)


def test_flores_local_copy_of_the_repository(tmp_path: Path) -> None:
    root = fx.write_flores(tmp_path, splits=fx.FLORES_SPLITS)
    ds = parallel.load_parallel("flores", ["eng_Latn", "de"], "devtest", path=str(root))
    assert len(ds) == 4 and ds[0]["de"] == "deu_Latn devtest sentence 1"


# --- FLORES+: openlanguagedata/flores_plus, README configs, <split>/<code>.jsonl ---------------------
@pytest.mark.parametrize(("split", "raw", "n"), [("validation", "dev", 3), ("devtest", "devtest", 4)])
def test_flores_plus_loads_through_readme_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str, raw: str, n: int
) -> None:
    root = fx.write_flores_plus(tmp_path)
    _hub_copy(monkeypatch, "flores_plus", root)
    ds = parallel.load_parallel("flores_plus", ["en", "de"], split)
    assert ds["id"][:] == [str(i) for i in range(1, n + 1)]  # German rows are reversed on disk
    assert ds["de"][:] == fx.flores_sentences("deu_Latn", raw, n)
    assert ds["en"][:] == fx.flores_sentences("eng_Latn", raw, n)
    assert len(parallel.load_parallel("flores_plus", ["en", "de"], split, path=str(root))) == n


def test_hub_failure_is_one_line_config_error() -> None:
    """A real load_dataset failure (offline, unknown repository) becomes one line naming the fixes."""
    with pytest.raises(ConfigError) as err:
        load_hub("no-such-owner/no-such-dataset", "de", "train", what="wikiann/de")
    msg = str(err.value)
    assert "\n" not in msg and "data.path=" in msg and "offline mode reads only the local cache" in msg


# --- parallel sets: aligned by id where there is one, checked where there is none --------------------
def test_xnli_position_alignment_checks_counts(tmp_path: Path) -> None:
    root = fx.write_xnli(tmp_path, splits=("test",))
    extra = {"premise": ["Extra."], "hypothesis": ["More."], "label": [0]}
    de = root / "de" / fx.SHARD.format(split="test")
    rows = datasets.Dataset.from_parquet(str(de)).to_dict()
    fx.write_parquet(de, {k: rows[k] + extra[k] for k in rows}, fx.XNLI_SCHEMA)
    with pytest.raises(ConfigError, match=r"not row-aligned.*sizes") as err:
        parallel.load_parallel("xnli", ["en", "de"], "test", path=str(root))
    assert "\n" not in str(err.value)


def test_xnli_position_alignment_checks_labels(tmp_path: Path) -> None:
    root = fx.write_xnli(tmp_path, splits=("test",))
    de = root / "de" / fx.SHARD.format(split="test")
    rows = datasets.Dataset.from_parquet(str(de)).to_dict()
    fx.write_parquet(de, {k: v[::-1] for k, v in rows.items()}, fx.XNLI_SCHEMA)  # same count, reordered
    with pytest.raises(ConfigError, match="row 1 has label 0 in en but 1 in de"):
        parallel.load_parallel("xnli", ["en", "de"], "test", path=str(root))


# --- MARC: one text for every source -------------------------------------------------------------------
def test_marc_one_text_definition(tmp_path: Path) -> None:
    orig = fx.write_marc_original(tmp_path / "orig")
    ds = classification.load_source(fx.task("marc", "marc"), "de", "test", fx.data(orig))
    assert ds[2] == {"text": "Title 3\nBody 3 stars.", "text_pair": "", "label": 0}
    assert "review_title" in text_definition(ds)
    mirror = fx.write_marc_mirror(tmp_path / "mirror")
    ds = classification.load_source(fx.task("marc", "marc", hub_subset=""), "de", "test", fx.data(mirror))
    assert ds[2] == {"text": "Body 3 stars.", "text_pair": "", "label": 0}
    assert "body only" in text_definition(ds)


# --- bad local data: one line naming the file, the row or column, and the fix --------------------------
LANG = "xsvo"  # a synth-cls language: source text-classification, 3 labels, <path>/<lang>/<split>.csv
HEADER = "text,text_pair,label\n"


def _bad(tmp_path: Path, body: str, *, split: str = "train") -> tuple[Path, Exception]:
    root = tmp_path / "data"
    for sp in ("train", "validation", "test"):
        fx.write_csv(root / LANG / f"{sp}.csv", HEADER + "ok,fine,1\nalso,fine,0\n")
    path = fx.write_csv(root / LANG / f"{split}.csv", body)
    cfg = make_cfg("task=synth-cls", f"lang={LANG}", f"data.path={root}")
    with pytest.raises(ConfigError) as err:
        load_split(cfg, LANG, {"train": "train", "validation": "dev"}[split])
    assert "\n" not in str(err.value), str(err.value)
    assert str(path) in str(err.value), str(err.value)
    return path, err.value


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (HEADER + "a,b,1\nc,d,positive\n", "row 2 is 'positive', not an integer label; use integer ids 0..2"),
        (HEADER + "a,b,1\nc,d,6\n", "row 2 is 6, out of range for task.num_labels=3"),
        (HEADER + "a,b,1.5\nc,d,0\n", "row 1 is 1.5, a fractional label"),
        (HEADER, "has a header but no rows"),
        ("", "is empty (0 bytes)"),
        (HEADER + "a,b,1\nc,d,0\ne,f,1\ng,h,0\ni,j,1,x,y,z,w,v\n", "Expected 3 fields in line 6, saw 8"),
    ],
    ids=["string", "out-of-range", "float", "header-only", "zero-byte", "extra-fields"],
)
def test_bad_local_csv_is_one_line(tmp_path: Path, body: str, expect: str) -> None:
    _, err = _bad(tmp_path, body)
    assert expect in str(err)


def test_bad_dev_split_names_its_file(tmp_path: Path) -> None:
    _, err = _bad(tmp_path, HEADER + "a,b,9\n", split="validation")
    assert "validation.csv" in str(err)


def test_integral_float_labels_are_accepted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for sp in ("train", "validation", "test"):
        fx.write_csv(root / LANG / f"{sp}.csv", HEADER + "a,b,1.0\nc,d,2.0\n")
    cfg = make_cfg("task=synth-cls", f"lang={LANG}", f"data.path={root}")
    assert load_split(cfg, LANG, "train")["label"][:] == [1, 2]


def test_bad_data_fails_before_the_model_loads(tmp_path: Path) -> None:
    """stage=train with bad labels and a model that cannot load offline: the data error comes first."""
    from xsub.__main__ import run_stage

    root = tmp_path / "data"
    for sp in ("train", "validation", "test"):
        fx.write_csv(root / LANG / f"{sp}.csv", HEADER + "a,b,7\n")
    cfg = make_cfg(
        "stage=train",
        "task=synth-cls",
        f"lang={LANG}",
        "model=xlmr-base",
        f"data.path={root}",
        f"paths.artifacts={tmp_path / 'store'}",
    )
    with pytest.raises(ConfigError, match=r"out of range for task\.num_labels=3"):
        run_stage(cfg)
