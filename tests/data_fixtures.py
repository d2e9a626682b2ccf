"""Tiny files in each data source's exact hub schema and layout, for offline tests of the real loaders.

Each writer puts a handful of rows where the hub repository keeps them (e.g. `<root>/de/train-00000-of-
00001.parquet`), with the hub's column names and dtypes (ClassLabel columns as plain int64, as in the
hub's parquet files), and returns the root to pass as `data.path`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

SHARD = "{split}-00000-of-00001.parquet"


def write_parquet(path: Path, columns: dict[str, Any], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def task(name: str, source: str, hub_subset: str = "{lang}", **kw: Any) -> SimpleNamespace:
    """TaskConfig-like object with the attributes the loaders read."""
    fields = {"train_split": "train", "dev_split": "validation", "test_split": "test", "hub_id": ""}
    return SimpleNamespace(name=name, source=source, hub_subset=hub_subset, **{**fields, **kw})


def data(path: Path | str) -> SimpleNamespace:
    return SimpleNamespace(path=str(path))


# --- XNLI: facebook/xnli ------------------------------------------------------------------------------
XNLI_SCHEMA = pa.schema([("premise", pa.string()), ("hypothesis", pa.string()), ("label", pa.int64())])
XNLI_ROWS = {
    "en": [
        ("The cat sleeps.", "An animal rests.", 0),
        ("It rains.", "It is sunny.", 2),
        ("He ran.", "He ate.", 1),
    ],
    "de": [
        ("Die Katze schläft.", "Ein Tier ruht.", 0),
        ("Es regnet.", "Es ist sonnig.", 2),
        ("Er lief.", "Er aß.", 1),
    ],
}


def write_xnli(root: Path, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    for lang, rows in XNLI_ROWS.items():
        cols = {
            "premise": [r[0] for r in rows],
            "hypothesis": [r[1] for r in rows],
            "label": [r[2] for r in rows],
        }
        for split in splits:
            write_parquet(root / lang / SHARD.format(split=split), cols, XNLI_SCHEMA)
    return root


# --- PAWS-X: google-research-datasets/paws-x ---------------------------------------------------------
PAWSX_SCHEMA = pa.schema(
    [("id", pa.int32()), ("sentence1", pa.string()), ("sentence2", pa.string()), ("label", pa.int64())]
)
# id -> (en sentence1, de sentence1, label); id 3 has label -1; id 4 exists only in en
PAWSX_ITEMS = {
    1: ("A dog barks.", "Ein Hund bellt.", 1),
    2: ("The sea is blue.", "Das Meer ist blau.", 0),
    3: ("Broken row.", "Kaputte Zeile.", -1),
    4: ("Only English.", None, 1),
    5: ("Birds fly south.", "Vögel fliegen nach Süden.", 1),
}


def write_pawsx(root: Path, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    for li, lang in enumerate(("en", "de")):
        items = [(i, v[li], v[2]) for i, v in PAWSX_ITEMS.items() if v[li] is not None]
        if lang == "de":
            items = items[::-1]  # another row order: alignment must go by id
        cols = {
            "id": [i for i, _, _ in items],
            "sentence1": [s for _, s, _ in items],
            "sentence2": [f"{s} (2)" for _, s, _ in items],
            "label": [y for _, _, y in items],
        }
        for split in splits:
            write_parquet(root / lang / SHARD.format(split=split), cols, PAWSX_SCHEMA)
    return root


# --- MARC: original amazon_reviews_multi schema, and the mteb/SetFit mirror -------------------------
MARC_SCHEMA = pa.schema(
    [
        ("review_id", pa.string()),
        ("product_id", pa.string()),
        ("reviewer_id", pa.string()),
        ("stars", pa.int32()),
        ("review_body", pa.string()),
        ("review_title", pa.string()),
        ("language", pa.string()),
        ("product_category", pa.string()),
    ]
)
MARC_STARS = [1, 2, 3, 4, 5]
MARC_BINARY = [0, 0, 0, 1, 1]  # Language-Specific-Subnetworks: stars 1-3 -> 0, 4-5 -> 1


def write_marc_original(root: Path, lang: str = "de", splits: tuple[str, ...] = ("train", "test")) -> Path:
    n = len(MARC_STARS)
    cols = {
        "review_id": [f"{lang}_{i:07d}" for i in range(n)],
        "product_id": [f"product_{lang}_{i}" for i in range(n)],
        "reviewer_id": [f"reviewer_{lang}_{i}" for i in range(n)],
        "stars": MARC_STARS,
        "review_body": [f"Body {s} stars." for s in MARC_STARS],
        "review_title": [f"Title {s}" for s in MARC_STARS],
        "language": [lang] * n,
        "product_category": ["home"] * n,
    }
    for split in splits:
        write_parquet(root / lang / SHARD.format(split=split), cols, MARC_SCHEMA)
    return root


def write_marc_mirror(
    root: Path, raw_stars: bool = False, splits: tuple[str, ...] = ("train", "test")
) -> Path:
    """SetFit/amazon_reviews_multi_<lang> layout: flat <split>.jsonl with id, text, label, label_text."""
    for split in splits:
        rows = [
            {
                "id": f"de_{i}",
                "text": f"Body {s} stars.",
                "label": s if raw_stars else s - 1,
                "label_text": str(s - 1),
            }
            for i, s in enumerate(MARC_STARS)
        ]
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


# --- WikiANN: unimelb-nlp/wikiann --------------------------------------------------------------------
WIKIANN_SCHEMA = pa.schema(
    [
        ("tokens", pa.list_(pa.string())),
        ("ner_tags", pa.list_(pa.int64())),
        ("langs", pa.list_(pa.string())),
        ("spans", pa.list_(pa.string())),
    ]
)
WIKIANN_ROWS = [
    (
        ["Quetzalcoatl", "visited", "Ouagadougou", "."],
        [1, 0, 5, 0],
        ["PER: Quetzalcoatl", "LOC: Ouagadougou"],
    ),
    (["Angela", "Merkel", "leitet", "die", "CDU"], [1, 2, 0, 0, 3], ["PER: Angela Merkel", "ORG: CDU"]),
]


def write_wikiann(
    root: Path, lang: str = "de", splits: tuple[str, ...] = ("train", "validation", "test")
) -> Path:
    cols = {
        "tokens": [r[0] for r in WIKIANN_ROWS],
        "ner_tags": [r[1] for r in WIKIANN_ROWS],
        "langs": [[lang] * len(r[0]) for r in WIKIANN_ROWS],
        "spans": [r[2] for r in WIKIANN_ROWS],
    }
    for split in splits:
        write_parquet(root / lang / SHARD.format(split=split), cols, WIKIANN_SCHEMA)
    return root


# --- Wikipedia: wikimedia/wikipedia 20231101.<lang>, and mbelitsky/wikipedia_subset ---------------------
WIKI_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("title", pa.string()), ("text", pa.string())]
)


def wiki_texts(n: int) -> list[str]:
    return [f"Article number {i} is about the town of Example{i} and its {i % 7} rivers." for i in range(n)]


def write_wikipedia(root: Path, lang: str = "en", n: int = 60, date: str = "20231101") -> Path:
    texts = wiki_texts(n)
    cols = {
        "id": [str(i + 1) for i in range(n)],
        "url": [f"https://{lang}.wikipedia.org/wiki?curid={i + 1}" for i in range(n)],
        "title": [f"Example{i}" for i in range(n)],
        "text": texts,
    }
    write_parquet(root / f"{date}.{lang}" / SHARD.format(split="train"), cols, WIKI_SCHEMA)
    return root


def write_wikipedia_subset(root: Path, langs: tuple[str, ...] = ("en", "de"), n: int = 20) -> Path:
    """push_to_hub layout of a DatasetDict whose split names are language codes: data/<lang>-*.parquet."""
    for lang in langs:
        cols = {"text": [f"{lang}: {t}" for t in wiki_texts(n)]}
        write_parquet(root / "data" / SHARD.format(split=lang), cols, pa.schema([("text", pa.string())]))
    return root


# --- Parallel: FLORES-200 (facebook/flores@refs/convert/parquet) and FLORES+ (openlanguagedata/flores_plus) -
FLORES_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("URL", pa.string()),
        ("domain", pa.string()),
        ("topic", pa.string()),
        ("has_image", pa.int32()),
        ("has_hyperlink", pa.int32()),
        ("sentence", pa.string()),
    ]
)
FLORES_SPLITS = ("dev", "devtest")


def flores_sentences(code: str, split: str, n: int = 3) -> list[str]:
    return [f"{code} {split} sentence {i}" for i in range(1, n + 1)]


def write_flores(
    root: Path, sentences: dict[str, list[str]] | None = None, split: str = "dev", *, splits: tuple = ()
) -> Path:
    """The parquet conversion branch of facebook/flores: `<root>/<code>/<split>/0000.parquet`, ids 1..n.

    That branch has no README (no configs), exactly like the hub's `refs/convert/parquet`. Either
    `sentences` for one `split`, or `splits` with generated sentences (flores_sentences) for eng/deu.
    """
    plan = {(code, split): sents for code, sents in (sentences or {}).items()}
    for sp in splits:
        for code in ("eng_Latn", "deu_Latn"):
            plan[(code, sp)] = flores_sentences(code, sp, 3 if sp == "dev" else 4)
    for (code, sp), sents in plan.items():
        n = len(sents)
        cols = {
            "id": list(range(1, n + 1)),
            "URL": [f"https://en.wikinews.org/wiki/{i}" for i in range(n)],
            "domain": ["wikinews"] * n,
            "topic": ["science"] * n,
            "has_image": [0] * n,
            "has_hyperlink": [0] * n,
            "sentence": sents,
        }
        write_parquet(root / code / sp / "0000.parquet", cols, FLORES_SCHEMA)
    return root


def write_flores_plus(root: Path, codes: tuple[str, ...] = ("eng_Latn", "deu_Latn")) -> Path:
    """openlanguagedata/flores_plus: `<root>/<split>/<code>.jsonl` and a README whose YAML `configs`
    name one config per language with its dev/devtest files, as the hub repository has them.

    Rows carry FLORES+'s columns (id, iso_639_3, iso_15924, glottocode, text, url, domain, topic,
    has_image, has_hyperlink, last_updated; the flag and version types are unconfirmed). German rows
    are written in reverse order (align by id).
    """
    configs = []
    for code in codes:
        iso, script = code.split("_")
        configs.append(f"- config_name: {code}\n  data_files:")
        for sp in FLORES_SPLITS:
            sents = flores_sentences(code, sp, 3 if sp == "dev" else 4)
            rows = [
                {
                    "id": i,
                    "iso_639_3": iso,
                    "iso_15924": script,
                    "glottocode": "stan1293" if iso == "eng" else "stan1295",
                    "text": t,
                    "url": f"https://en.wikinews.org/wiki/{i}",
                    "domain": "wikinews",
                    "topic": "science",
                    "has_image": 0,
                    "has_hyperlink": 0,
                    "last_updated": "2.1",
                }
                for i, t in enumerate(sents, 1)
            ]
            if iso == "deu":
                rows = rows[::-1]
            write_jsonl(root / sp / f"{code}.jsonl", rows)
            configs.append(f"  - split: {sp}\n    path: {sp}/{code}.jsonl")
    readme = "---\nlicense: cc-by-sa-4.0\nconfigs:\n" + "\n".join(configs) + "\n---\n# FLORES+\n"
    (root / "README.md").write_text(readme, encoding="utf-8")
    return root


def write_csv(path: Path, text: str) -> Path:
    """A local CSV file with exactly `text` (for malformed-file tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_parallel_local(root: Path, items: dict[str, dict[str, str]], fmt: str = "parquet") -> Path:
    """`<root>/<lang>.parquet|jsonl` with columns id, sentence; items: lang -> {id: sentence}."""
    for lang, rows in items.items():
        if fmt == "jsonl":
            write_jsonl(root / f"{lang}.jsonl", [{"id": i, "sentence": s} for i, s in rows.items()])
        else:
            cols = {"id": list(rows), "sentence": list(rows.values())}
            write_parquet(
                root / f"{lang}.parquet", cols, pa.schema([("id", pa.string()), ("sentence", pa.string())])
            )
    return root


def padded_batches(vocab: int, n_batches: int, size: int, length: int, seed: int) -> list[dict[str, Any]]:
    """Random token batches, right-padded (pad id 0) to varying lengths, so token counts matter."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, vocab, (size, length), generator=g)
        lengths = torch.randint(length // 2, length + 1, (size,), generator=g)
        attention = (torch.arange(length)[None] < lengths[:, None]).long()
        out.append({"input_ids": ids * attention, "attention_mask": attention})
    return out
