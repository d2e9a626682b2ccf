"""Sentence(-pair) classification sources: XNLI, PAWS-X, MARC.

Every loader returns the same columns, so encoding and training never look at the source:
`text` (str), `text_pair` (str, "" when the source has one sentence), `label` (int64).
Rows with a negative label (PAWS-X marks missing/wrong labels as -1) are dropped for every source.
Raw labels are checked first (`check_labels`): label names, fractional or out-of-range ids are one
ConfigError line naming the file, row and fix, before any model loads.

MARC has one text definition for every source (`marc_text`): title and body joined by a newline where
both exist. The hub mirrors (mteb, SetFit) keep only the body, so a mirror run sees less text than a
run on files in the original schema; `text_definition(ds)` says which one a dataset holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import datasets
import pyarrow.compute as pc

from xsub.config import ConfigError
from xsub.data.hub import check_labels, load_task_split, require_columns, standardize, task_source_name

log = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "text_pair": datasets.Value("string"),
        "label": datasets.Value("int64"),
    }
)

Batch = dict[str, list[Any]]


def _s(x: Any) -> str:
    return "" if x is None else str(x)


def _pairs(texts: list[Any], pairs: list[Any] | None, labels: list[int]) -> Batch:
    """Standard columns, keeping only rows with a label >= 0."""
    pairs = pairs if pairs is not None else [""] * len(texts)
    keep = [i for i, y in enumerate(labels) if y is not None and int(y) >= 0]
    return {
        "text": [_s(texts[i]) for i in keep],
        "text_pair": [_s(pairs[i]) for i in keep],
        "label": [int(labels[i]) for i in keep],
    }


def xnli(ds: datasets.Dataset, what: str = "xnli", where: str = "") -> datasets.Dataset:
    """facebook/xnli: premise/hypothesis, label 0 entailment, 1 neutral, 2 contradiction."""
    require_columns(ds, ("premise", "hypothesis", "label"), what)
    check_labels(ds, "label", what, where or what, num_labels=3)
    return standardize(ds, lambda b: _pairs(b["premise"], b["hypothesis"], b["label"]), FEATURES, what)


def pawsx(ds: datasets.Dataset, what: str = "paws-x", where: str = "") -> datasets.Dataset:
    """google-research-datasets/paws-x: sentence1/sentence2, label 1 = paraphrase; -1 rows dropped."""
    require_columns(ds, ("sentence1", "sentence2", "label"), what)
    check_labels(ds, "label", what, where or what, num_labels=2)
    return standardize(ds, lambda b: _pairs(b["sentence1"], b["sentence2"], b["label"]), FEATURES, what)


MARC_TEXT_ORIGINAL = "marc text: review_title + newline + review_body (original schema)"
MARC_TEXT_MIRROR = "marc text: review body only (the mirror has no review_title)"


def marc_text(title: Any, body: Any) -> str:
    """The one MARC input text: title and body joined by a newline where both exist, else the one there."""
    return "\n".join(x for x in (_s(title).strip(), _s(body).strip()) if x)


def text_definition(ds: datasets.Dataset) -> str:
    """What a standardized dataset's `text` holds, when the loader recorded it (MARC), else ""."""
    return str(ds.info.description or "")


def _described(ds: datasets.Dataset, description: str) -> datasets.Dataset:
    ds.info.description = description
    return ds


def binarize_stars0(stars0: int) -> int:
    """Binarisation of 0-based stars: {0,1,2} (1–3★) -> 0 negative, {3,4} (4–5★) -> 1."""
    return int(stars0 >= 3)


def _mirror_offset(ds: datasets.Dataset, what: str) -> int:
    """0 when mirror labels are stars−1 (0..4), 1 when a mirror stored raw stars (1..5)."""
    mm = pc.min_max(ds.with_format("arrow")["label"])
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if lo is None:
        return 0
    if lo < 0 or hi > 5:
        raise ConfigError(f"{what}: label range {lo}..{hi} is neither stars−1 (0..4) nor stars (1..5)")
    if lo == 0:
        return 0
    if hi == 5:
        log.warning("%s: labels span %d..%d: treating them as raw stars (1..5)", what, lo, hi)
        return 1
    log.warning("%s: labels span %d..%d: ambiguous, assuming stars−1 (0..4)", what, lo, hi)
    return 0


def marc(ds: datasets.Dataset, what: str = "marc", where: str = "") -> datasets.Dataset:
    """Multilingual Amazon Reviews (Keung et al. 2020), binarised: stars 1–3 -> 0, stars 4–5 -> 1.
    text_pair is always "".

    Two schemas are accepted:
    - original (`amazon_reviews_multi`): `stars` 1..5, `review_title`, `review_body`, ... ->
      text = marc_text(review_title, review_body), label = binarize_stars0(stars − 1);
    - mteb/SetFit mirrors: `text` (= review_body; no title), `label` = stars − 1 (0..4) -> text,
      label = binarize_stars0(label). A mirror whose labels span 1..5 (one SetFit `de` revision stored raw
      stars) is shifted by one first.
    The dataset's `text_definition` records which of the two texts it holds.
    """
    cols = set(ds.column_names)
    where = where or what
    if "stars" in cols:
        require_columns(ds, ("stars", "review_title", "review_body"), what)
        check_labels(ds, "stars", what, where)

        def fn(b: Batch) -> Batch:
            labels = [binarize_stars0(int(s) - 1) if s is not None else -1 for s in b["stars"]]
            texts = [marc_text(t, x) for t, x in zip(b["review_title"], b["review_body"])]
            return _pairs(texts, None, labels)

        return _described(standardize(ds, fn, FEATURES, what), MARC_TEXT_ORIGINAL)
    if {"text", "label"} <= cols:
        check_labels(ds, "label", what, where)
        if len(ds) == 0:
            out = standardize(ds, lambda b: _pairs(b["text"], None, b["label"]), FEATURES, what)
            return _described(out, MARC_TEXT_MIRROR)
        offset = _mirror_offset(ds, what)

        def fn_mirror(b: Batch) -> Batch:
            labels = [binarize_stars0(int(y) - offset) if y is not None else -1 for y in b["label"]]
            return _pairs(b["text"], None, labels)

        return _described(standardize(ds, fn_mirror, FEATURES, what), MARC_TEXT_MIRROR)
    raise ConfigError(
        f"{what}: unknown MARC schema (columns {', '.join(sorted(cols))}); expected stars/review_title/"
        f"review_body (original) or text/label (mteb/SetFit mirror)"
    )


STANDARDIZERS: dict[str, Callable[..., datasets.Dataset]] = {
    "xnli": xnli,
    "paws-x": pawsx,
    "pawsx": pawsx,
    "marc": marc,
}


def load_source(task: Any, lang: str, split: str, data: Any) -> datasets.Dataset:
    """One split of a classification task for `lang`, in the standard columns text/text_pair/label."""
    source = str(task.source)
    if source not in STANDARDIZERS:
        raise ConfigError(
            f"task {task.name}: source '{source}' is not a classification source "
            f"({', '.join(sorted(STANDARDIZERS))})"
        )
    raw = load_task_split(task, lang, split, data)
    where = task_source_name(task, lang, split, data)
    return STANDARDIZERS[source](raw, f"{task.name}/{lang}/{split}", where)
