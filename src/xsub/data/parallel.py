"""Parallel corpora for CKA, stitching and token overlap: the same sentences in several languages.

`load_parallel` returns columns `id` (str) and one str column per requested language (named by the code
the caller passed), rows aligned: row i is one sentence in every language. Sources:
- `xnli`: validation/test premises, aligned by row position (the splits are translations of the same items);
- `paws-x`: validation/test `sentence1`, aligned on `id`;
- `flores`: `facebook/flores` (FLORES-200) `sentence`, aligned on `id`; languages are 2-letter codes from
  FLORES_CODES or FLORES codes (`eng_Latn`); splits dev/devtest (validation/test are accepted aliases).
  The hub repo is a loading script, so it is read from its parquet conversion (`refs/convert/parquet`);
- `local` (alias `synthetic`, or a directory given as `source`): per-language files with columns
  `id, sentence` at `<path>/<lang>.parquet|jsonl|…` or `<path>/<split>/<lang>.…` (FLORES-like; the
  project's synthetic generator writes this format).
With `path` set, xnli/paws-x/flores read local files in their hub layout instead (see xsub.data.hub).
Rows whose id is missing in some language are dropped (logged).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import datasets

from xsub.config import ConfigError
from xsub.data.hub import load_raw, require_columns

log = logging.getLogger(__name__)

# source -> (hub id, id column or "" for row position, text column)
HUB_SOURCES: dict[str, tuple[str, str, str]] = {
    "xnli": ("facebook/xnli", "", "premise"),
    "paws-x": ("google-research-datasets/paws-x", "id", "sentence1"),
    "flores": ("facebook/flores@refs/convert/parquet", "id", "sentence"),
}
LOCAL_SOURCES = ("local", "synthetic")
SPLIT_ALIASES: dict[str, dict[str, str]] = {
    "xnli": {"dev": "validation"},
    "paws-x": {"dev": "validation"},
    "flores": {"validation": "dev", "test": "devtest"},
}

FLORES_CODES = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hu": "hun_Latn",
    "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "lt": "lit_Latn",
    "lv": "lvs_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "sk": "slk_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "th": "tha_Thai",
    "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}  # fmt: skip
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


def flores_code(lang: str) -> str:
    """FLORES-200 config name for a 2-letter code (FLORES_CODES) or a FLORES code given as is."""
    if lang in FLORES_CODES:
        return FLORES_CODES[lang]
    if _FLORES_CODE.match(lang):
        return lang
    raise ConfigError(
        f"no FLORES code known for '{lang}'; pass the FLORES code (e.g. eng_Latn) or one of "
        f"{' '.join(sorted(FLORES_CODES))}"
    )


def _local_lang(path: str, lang: str, split: str) -> datasets.Dataset:
    """`<path>/<split>/<lang>.*` when that split directory exists, else `<path>/<lang>.*`."""
    base = Path(path).expanduser()
    if split and (base / split).is_dir():
        base = base / split
    return load_raw("", "", lang, str(base), what=f"parallel/{lang}")


def _columns(ds: datasets.Dataset, id_col: str, text_col: str, what: str) -> tuple[list[str], list[str]]:
    """(ids as str, sentences) of one language; ids are row positions when id_col is ""."""
    require_columns(ds, [c for c in (id_col, text_col) if c], what)
    texts = ["" if t is None else str(t) for t in ds[text_col]]
    ids = [str(i) for i in ds[id_col]] if id_col else [str(i) for i in range(len(texts))]
    return ids, texts


def align(per_lang: dict[str, tuple[list[str], list[str]]], n: int = 0) -> datasets.Dataset:
    """Rows whose id occurs in every language, in the first language's order; first n when n > 0."""
    maps: dict[str, dict[str, str]] = {}
    for lang, (ids, texts) in per_lang.items():
        m: dict[str, str] = {}
        for i, t in zip(ids, texts):
            m.setdefault(i, t)
        if len(m) < len(ids):
            log.warning("parallel/%s: %d duplicate id(s), keeping the first", lang, len(ids) - len(m))
        maps[lang] = m
    first = next(iter(maps.values()))
    common = [i for i in first if all(i in m for m in maps.values())]
    dropped = {lang: len(m) - len(common) for lang, m in maps.items() if len(m) > len(common)}
    if dropped:
        log.info("parallel: %d aligned rows; dropped unaligned rows per language: %s", len(common), dropped)
    if n > 0:
        common = common[:n]
    cols = {"id": common, **{lang: [m[i] for i in common] for lang, m in maps.items()}}
    features = datasets.Features({c: datasets.Value("string") for c in cols})
    return datasets.Dataset.from_dict(cols, features=features)


def load_parallel(source: str, langs: list[str], split: str, path: str = "", n: int = 0) -> datasets.Dataset:
    """Aligned sentences of `langs` from `source` (see module docstring); columns `id` + one per lang."""
    langs = list(dict.fromkeys(langs))
    if not langs:
        raise ConfigError("load_parallel: no languages given")
    if "id" in langs:
        raise ConfigError("load_parallel: 'id' cannot be a language column name")
    per_lang: dict[str, tuple[list[str], list[str]]] = {}
    if source in LOCAL_SOURCES or (source not in HUB_SOURCES and Path(source).expanduser().is_dir()):
        path = path or (source if source not in LOCAL_SOURCES else "")
        if not path:
            raise ConfigError(f"parallel source '{source}' needs a directory: pass path=<dir> (data.path)")
        for lang in langs:
            per_lang[lang] = _columns(_local_lang(path, lang, split), "id", "sentence", f"parallel/{lang}")
        return align(per_lang, n)
    if source not in HUB_SOURCES:
        raise ConfigError(
            f"unknown parallel source '{source}'; use one of {', '.join([*HUB_SOURCES, *LOCAL_SOURCES])} "
            f"or a directory of <lang>.parquet files"
        )
    hub_id, id_col, text_col = HUB_SOURCES[source]
    raw_split = SPLIT_ALIASES.get(source, {}).get(split, split)
    for lang in langs:
        subset = flores_code(lang) if source == "flores" else lang
        what = f"{source}/{lang}"
        per_lang[lang] = _columns(
            load_raw(hub_id, subset, raw_split, path, what=what), id_col, text_col, what
        )
    if not id_col:
        sizes = {lang: len(ids) for lang, (ids, _) in per_lang.items()}
        if len(set(sizes.values())) > 1:
            raise ConfigError(f"{source} {raw_split} is not row-aligned across languages: sizes {sizes}")
    return align(per_lang, n)
