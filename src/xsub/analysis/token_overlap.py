"""token_overlap: how much of each language's tokenized text is vocabulary the reference language uses.

As MaxBelitsky/cross-lingual-subnetworks' token-overlap script: the share of a language's token ids that
also occur in the reference language (English there) on parallel data. Subnetworks of two languages that
share many tokens share input embeddings and may overlap for that reason alone, so a high mask overlap
between such languages says less about shared structure than the same overlap between languages with
disjoint vocabularies.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.tables import format_table

BATCH = 1000  # texts per tokenizer call (fast tokenizers batch in Rust)

log = logging.getLogger(__name__)


def _token_counts(tokenizer: Any, texts: Sequence[str], unk: int | None) -> tuple[dict[int, int], int]:
    """Occurrences per token id over `texts` (no special tokens, [UNK] left out) and the [UNK] count."""
    texts = list(texts)
    ids: list[np.ndarray] = []
    for start in range(0, len(texts), BATCH):
        enc = tokenizer(texts[start : start + BATCH], add_special_tokens=False)["input_ids"]
        ids.append(np.fromiter(itertools.chain.from_iterable(enc), dtype=np.int64))
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    values, counts = np.unique(flat, return_counts=True)
    out = dict(zip(values.tolist(), counts.tolist()))
    n_unk = out.pop(unk, 0) if unk is not None else 0
    return out, n_unk


def token_overlap(
    tokenizer: Any, texts: Mapping[str, Sequence[str]], reference: str
) -> dict[str, dict[str, float]]:
    """Per language, how much of its vocabulary (types) and text (tokens) the reference language shares.

    `texts[lang]` are the language's texts (ideally parallel data, so every language says the same);
    each is tokenized without special tokens. For each language L, with ids_L its set of token ids:

    - "types": |ids_L|; "shared_types": |ids_L ∩ ids_ref|;
    - "type_overlap": |ids_L ∩ ids_ref| / |ids_L|;
    - "token_overlap": the share of L's token occurrences whose id is in ids_ref;
    - "unk_share": the share of L's occurrences that were [UNK] (not part of the other figures).

    The [UNK] id (`tokenizer.unk_token_id`, when the tokenizer has one) is left out of the sets and of
    the occurrence counts: an unknown token is not shared vocabulary, it is the absence of any, and two
    languages the tokenizer cannot read would otherwise look as if they overlapped. `unk_share` reports
    how much text that dropped. The reference language's own row is 1.0 by definition; a language
    without any known token gets 0.0.
    """
    if reference not in texts:
        raise ValueError(f"unknown reference language {reference!r}; options: {', '.join(texts)}")
    for lang, lang_texts in texts.items():
        if isinstance(lang_texts, str):
            raise TypeError(f"texts[{lang!r}] must be a sequence of texts, not a single string")
    unk = getattr(tokenizer, "unk_token_id", None)
    counts = {lang: _token_counts(tokenizer, lang_texts, unk) for lang, lang_texts in texts.items()}
    ref_ids = set(counts[reference][0])
    out: dict[str, dict[str, float]] = {}
    for lang, (lang_counts, n_unk) in counts.items():
        ids = set(lang_counts)
        shared = ids & ref_ids
        total = sum(lang_counts.values())
        own = lang == reference
        out[lang] = {
            "types": float(len(ids)),
            "shared_types": float(len(shared)),
            "type_overlap": 1.0 if own else (len(shared) / len(ids) if ids else 0.0),
            "token_overlap": 1.0 if own else (sum(lang_counts[i] for i in shared) / total if total else 0.0),
            "unk_share": n_unk / (total + n_unk) if total + n_unk else 0.0,
        }
    return out


def run(inputs: Inputs) -> Result:
    """stage=analyze analysis=token_overlap: parallel data, the finetuned model's tokenizer."""
    ref = inputs.an.reference
    if ref not in inputs.task(inputs.tasks[0]).languages:
        log.warning(
            "token_overlap: task %s has no reference language %r; using %s, the first language of the "
            "run (set analysis.reference=<code>)",
            inputs.tasks[0],
            ref,
            inputs.langs[0],
        )
        ref = inputs.langs[0]  # e.g. the synthetic languages have no English
    langs = list(dict.fromkeys([ref, *inputs.langs]))
    data = inputs.parallel(langs)
    tokenizer = inputs.tokenizer(inputs.tasks[0], inputs.seeds[0])
    stats = token_overlap(tokenizer, {lang: data[lang] for lang in langs}, reference=ref)
    table = pd.DataFrame(
        [{"lang": lang, "reference": ref, "sentences": len(data), **s} for lang, s in stats.items()]
    )
    matrix = table[["type_overlap", "token_overlap"]].to_numpy().T
    figure = plots.heatmap(
        matrix,
        ["token types", "token occurrences"],
        list(table.lang),
        inputs.out / "token_overlap.png",
        title=f"share of each language's tokens also used by {ref} ({len(data)} parallel sentences)",
        vmin=0.0,
        vmax=1.0,
        colorbar_label="share",
        note=inputs.note(n=f"{len(data)} parallel sentences ({inputs.an.parallel_source})")
        + f" · tokenizer of the finetuned {inputs.model_name}",
    )
    rows = [
        [r.lang, int(r.types), int(r.shared_types), r.type_overlap, r.token_overlap]
        for r in table.itertuples()
    ]
    summary = format_table(["lang", "types", f"shared with {ref}", "type overlap", "token overlap"], rows)
    return Result({"token_overlap": table}, {"token_overlap": figure}, summary)
