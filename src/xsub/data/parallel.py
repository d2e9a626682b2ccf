"""Parallel corpora for CKA, stitching and token overlap: the same sentences in several languages.

`load_parallel` returns columns `id` (str) and one str column per requested language (named by the code
the caller passed), rows aligned: row i is one sentence in every language. Sources:
- `xnli`: validation/test premises, aligned by row position. XNLI's dev and test sets are professional
  translations of the same English items (Conneau et al. 2018), and the hub's per-language files keep
  that order but carry no id; so the row counts must agree, and the language-independent `label` must
  agree row by row, or the load fails (one line) instead of misaligning;
- `paws-x`: validation/test `sentence1`, aligned on `id` (PAWS-X's human-translated dev/test sets share
  the English ids, Yang et al. 2019); ids missing in a language are dropped (logged);
- `flores`: `facebook/flores` (FLORES-200) `sentence`, aligned on `id`; languages are 2-letter codes from
  FLORES_CODES or FLORES codes (`eng_Latn`); splits dev/devtest (validation/test are accepted aliases).
  The hub repository's main branch is a loading script (refused by datasets >= 4), and its parquet
  conversion (`refs/convert/parquet`: `<code>/<split>/0000.parquet`) has no README configs, so the
  split's files are named with `data_files=` (`<code>/<split>/*.parquet`) instead of a config name;
- `flores_plus`: `openlanguagedata/flores_plus` (FLORES+, the maintained successor; gated: accept the
  terms on its page, then `hf auth login` or `HF_TOKEN`), column `text`, aligned on `id`; configs are
  FLORES codes, splits dev/devtest, read through the repository's own README configs;
- `local` (alias `synthetic`, or a directory given as `source`): per-language files with columns
  `id, sentence` at `<path>/<lang>.parquet|jsonl|…` or `<path>/<split>/<lang>.…` (FLORES-like; the
  project's synthetic generator writes this format).
With `path` set, xnli/paws-x read local files in their hub layout (see xsub.data.hub), and flores/
flores_plus read `path` as a local copy of the hub repository, through the same call as the hub.
Rows whose id is missing in some language are dropped (logged).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets

from xsub.config import ConfigError
from xsub.data.hub import load_hub, load_raw, require_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSource:
    """Where a parallel corpus lives on the hub and how its rows line up."""

    hub_id: str  # owner/name[@revision], or a directory holding a copy of the repository
    id_col: str  # "" = aligned by row position
    text_col: str
    data_files: str = ""  # glob of one split's files ({subset}, {split}); "" = the README's configs
    flores_codes: bool = False  # subsets are FLORES codes (eng_Latn); 2-letter codes are mapped
    repo_layout: bool = False  # a local `path` is a copy of the hub repository, read like the hub
    check_col: str = ""  # position-aligned sources: a language-independent column that must agree


HUB_SOURCES: dict[str, HubSource] = {
    "xnli": HubSource("facebook/xnli", "", "premise", check_col="label"),
    "paws-x": HubSource("google-research-datasets/paws-x", "id", "sentence1"),
    "flores": HubSource(
        "facebook/flores@refs/convert/parquet",
        "id",
        "sentence",
        data_files="{subset}/{split}/*.parquet",
        flores_codes=True,
        repo_layout=True,
    ),
    "flores_plus": HubSource(
        "openlanguagedata/flores_plus", "id", "text", flores_codes=True, repo_layout=True
    ),
}
LOCAL_SOURCES = ("local", "synthetic")
SPLIT_ALIASES: dict[str, dict[str, str]] = {
    "xnli": {"dev": "validation"},
    "paws-x": {"dev": "validation"},
    "flores": {"validation": "dev", "test": "devtest"},
    "flores_plus": {"validation": "dev", "test": "devtest"},
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


def load_hub_lang(source: str, lang: str, split: str, path: str = "") -> datasets.Dataset:
    """One language of a hub parallel source, as the hub (or a local copy of it at `path`) lays it out."""
    src = HUB_SOURCES[source]
    raw_split = SPLIT_ALIASES.get(source, {}).get(split, split)
    subset = flores_code(lang) if src.flores_codes else lang
    what = f"{source}/{lang}"
    if path and not src.repo_layout:
        return load_raw(src.hub_id, subset, raw_split, path, what=what)
    hub_id = str(Path(path).expanduser()) if path else src.hub_id
    files = {raw_split: src.data_files.format(subset=subset, split=raw_split)} if src.data_files else None
    hint = (
        f"analysis.parallel_path=<dir> with the hub's files of {src.hub_id} ({source}), or "
        "analysis.parallel_source=<dir> of <lang>.parquet files with id, sentence columns"
    )
    ds = load_hub(hub_id, subset, raw_split, what=what, data_files=files, local_hint=hint)
    if len(ds) == 0:
        raise ConfigError(f"{what}: {hub_id} has no rows for {subset} {raw_split}; check the language code")
    return ds


def _check_positions(source: str, split: str, per_lang: dict[str, datasets.Dataset], col: str) -> None:
    """Position-aligned sources: equal row counts, and `col` (language-independent) equal row by row."""
    sizes = {lang: len(ds) for lang, ds in per_lang.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"{source} {split} is not row-aligned across languages: sizes {sizes}; use the hub's files "
            f"unchanged (or a source aligned by id: paws-x, flores)"
        )
    if not col or not all(col in ds.column_names for ds in per_lang.values()):
        return
    (first, ref), *rest = [(lang, ds[col]) for lang, ds in per_lang.items()]
    for lang, values in rest:
        bad = next((i for i, (a, b) in enumerate(zip(ref, values)) if a != b), None)
        if bad is not None:
            raise ConfigError(
                f"{source} {split} is not row-aligned: row {bad + 1} has {col} {ref[bad]} in {first} but "
                f"{values[bad]} in {lang}; use the hub's files unchanged (same order in every language)"
            )


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
            raise ConfigError(
                f"parallel source '{source}' needs a directory: pass analysis.parallel_path=<dir>"
            )
        for lang in langs:
            per_lang[lang] = _columns(_local_lang(path, lang, split), "id", "sentence", f"parallel/{lang}")
        return align(per_lang, n)
    if source not in HUB_SOURCES:
        raise ConfigError(
            f"unknown parallel source '{source}'; use one of {', '.join([*HUB_SOURCES, *LOCAL_SOURCES])} "
            f"or a directory of <lang>.parquet files"
        )
    src = HUB_SOURCES[source]
    raw = {lang: load_hub_lang(source, lang, split, path) for lang in langs}
    if not src.id_col:
        _check_positions(source, split, raw, src.check_col)
    for lang, ds in raw.items():
        per_lang[lang] = _columns(ds, src.id_col, src.text_col, f"{source}/{lang}")
    return align(per_lang, n)
