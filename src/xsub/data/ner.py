"""Token classification source: WikiANN (`unimelb-nlp/wikiann`).

Standard columns: `tokens` (list[str]) and `ner_tags` (list[int], WikiANN's IOB2 ids below); `langs`
and `spans` are dropped since nothing downstream reads them.
"""

from __future__ import annotations

from typing import Any

import datasets

from xsub.config import ConfigError
from xsub.data.hub import load_task_split, require_columns, standardize

LABEL_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]

FEATURES = datasets.Features(
    {
        "tokens": datasets.List(datasets.Value("string")),
        "ner_tags": datasets.List(datasets.Value("int64")),
    }
)

SOURCES = ("wikiann",)


def wikiann(ds: datasets.Dataset, what: str = "wikiann") -> datasets.Dataset:
    """tokens/ner_tags in WikiANN's schema; a row whose tag count differs from its token count is an error."""
    require_columns(ds, ("tokens", "ner_tags"), what)

    def fn(b: dict[str, list[Any]]) -> dict[str, list[Any]]:
        tokens = [[str(t) for t in toks] for toks in b["tokens"]]
        tags = [[int(t) for t in ys] for ys in b["ner_tags"]]
        for toks, ys in zip(tokens, tags):
            if len(toks) != len(ys):
                raise ConfigError(f"{what}: a row has {len(toks)} tokens but {len(ys)} ner_tags: {toks[:5]}")
        return {"tokens": tokens, "ner_tags": tags}

    return standardize(ds, fn, FEATURES, what)


def load_source(task: Any, lang: str, split: str, data: Any) -> datasets.Dataset:
    """One split of a NER task for `lang`, in the standard columns tokens/ner_tags."""
    if str(task.source) not in SOURCES:
        raise ConfigError(
            f"task {task.name}: source '{task.source}' is not a NER source ({', '.join(SOURCES)})"
        )
    return wikiann(load_task_split(task, lang, split, data), f"{task.name}/{lang}/{split}")
