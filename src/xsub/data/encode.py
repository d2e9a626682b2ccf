"""Tokenisation for the train stage, from the standard columns of xsub.data's loaders to model inputs.

`encode` returns torch-formatted, unpadded rows: padding is per batch in `pad_collate`, so short
batches stay short. Kinds:
- classification (`text`, `text_pair`, `label`) -> input_ids, attention_mask, [token_type_ids], labels;
- ner (`tokens`, `ner_tags`) -> the same with per-token labels: the first sub-token of a word carries the
  word's tag, later sub-tokens and special tokens -100 (ignored by the loss and by span F1);
- mlm (`text`) -> every document tokenised without special tokens and without truncation, followed by
  the tokenizer's separator (so document boundaries stay visible), all concatenated and cut into blocks
  that the tokenizer's own special tokens wrap to exactly `max_length`; the short tail is dropped unless
  it is the only block. No labels: masking is the collator's job.
- clm (`text`) -> the same document stream (each document followed by the tokenizer's end-of-sequence
  token), cut into blocks of `max_length` that start with the tokenizer's own leading special tokens
  (Llama's <s>, the synthetic [CLS]; none for GPT-2 or Qwen). Labels are the inputs (the model shifts
  them); the collator marks padding -100, so perplexity counts predicted tokens only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
KINDS = ("classification", "ner", "mlm", "clm")


def _inputs(enc: Any) -> dict[str, Any]:
    """The model-input fields of a tokenizer output (drops e.g. offsets or overflow info)."""
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def _encode_classification(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    col = ds.with_format("arrow")["text_pair"] if "text_pair" in ds.column_names else None
    has_pair = bool(col is not None and len(col) and pc.any(pc.not_equal(col, "")).as_py())

    def fn(b: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pairs = b["text_pair"] if has_pair else None
        enc = tokenizer(b["text"], pairs, truncation=True, max_length=max_length)
        return {**_inputs(enc), "labels": [int(y) for y in b["label"]]}

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc="encode classification")


def ner_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """Word tags on sub-tokens: first sub-token of each word gets its tag, the rest and specials -100."""
    labels, prev = [], None
    for w in word_ids:
        labels.append(IGNORE_INDEX if w is None or w == prev else int(tags[w]))
        prev = w
    return labels


def _encode_ner(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"NER encoding needs a fast tokenizer (word_ids for label alignment); {type(tokenizer).__name__} "
            f"is not: load it with use_fast=True or use a checkpoint that ships tokenizer.json"
        )

    def fn(b: dict[str, list[Any]]) -> dict[str, list[Any]]:
        enc = tokenizer(b["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = [ner_labels(enc.word_ids(i), tags) for i, tags in enumerate(b["ner_tags"])]
        return {**_inputs(enc), "labels": labels}

    return ds.map(fn, batched=True, remove_columns=ds.column_names, desc="encode ner")


def special_layout(tokenizer: Any) -> tuple[list[int], list[int], bool]:
    """(prefix, suffix, has_token_type_ids): the special tokens the tokenizer wraps one sequence in.

    Found by comparing a sample with and without special tokens, which works for any tokenizer
    (BERT [CLS] x [SEP], XLM-R <s> x </s>, T5 x </s>) without version-specific helpers.
    """
    sample = "hello world"
    full = tokenizer(sample)
    bare = list(tokenizer(sample, add_special_tokens=False)["input_ids"])
    ids = list(full["input_ids"])
    for i in range(len(ids) - len(bare) + 1):
        if ids[i : i + len(bare)] == bare:
            return ids[:i], ids[i + len(bare) :], "token_type_ids" in full
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}: {ids} vs {bare}")


def _list_array(blocks: np.ndarray, lengths: list[int]) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(blocks))


def _encode_mlm(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    prefix, suffix, has_tt = special_layout(tokenizer)
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return _blocks(ds, tokenizer, max_length, prefix, suffix, has_tt, sep, "mlm")


def _encode_clm(ds: datasets.Dataset, tokenizer: Any, max_length: int) -> datasets.Dataset:
    prefix, _, _ = special_layout(tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    if not prefix and bos is not None and getattr(tokenizer, "add_bos_token", False):
        prefix = [bos]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return _blocks(ds, tokenizer, max_length, prefix[:1], [], False, eos, "clm")


def _blocks(
    ds: datasets.Dataset,
    tokenizer: Any,
    max_length: int,
    prefix: list[int],
    suffix: list[int],
    has_tt: bool,
    sep: int | None,
    kind: str,
) -> datasets.Dataset:
    """Documents (each followed by `sep`) concatenated and cut into `prefix + block + suffix` rows."""
    inner = max_length - len(prefix) - len(suffix)
    if inner < 1:
        raise ValueError(
            f"max_length {max_length} leaves no room beside {len(prefix) + len(suffix)} special tokens"
        )

    def fn(b: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = tokenizer(b["text"], add_special_tokens=False, verbose=False)["input_ids"]
        return {"ids": [[*x, sep] if x and sep is not None else x for x in ids]}

    tokd = ds.map(fn, batched=True, remove_columns=ds.column_names, desc=f"tokenize {kind}")
    col = tokd.with_format("arrow")["ids"]
    flat = pc.list_flatten(col).to_numpy().astype(np.int32) if len(col) else np.zeros(0, np.int32)
    n_blocks = len(flat) // inner
    if n_blocks == 0 and len(flat) == 0:
        raise ValueError(f"{kind} encoding: the dataset has no tokens")
    if n_blocks == 0:  # the tail is the only block: keep it, shorter than max_length
        body = flat[None, :]
    else:
        body = flat[: n_blocks * inner].reshape(n_blocks, inner)
        if len(flat) > n_blocks * inner:
            log.debug("%s encoding: dropped a tail of %d tokens", kind, len(flat) - n_blocks * inner)
    rows = len(body)
    blocks = np.concatenate(
        [
            np.tile(np.asarray(prefix, np.int32), (rows, 1)),
            body,
            np.tile(np.asarray(suffix, np.int32), (rows, 1)),
        ],
        axis=1,
    )
    lengths = [blocks.shape[1]] * rows
    cols = {
        "input_ids": _list_array(blocks.ravel(), lengths),
        "attention_mask": _list_array(np.ones(blocks.size, np.int8), lengths),
    }
    if has_tt:
        cols["token_type_ids"] = _list_array(np.zeros(blocks.size, np.int8), lengths)
    return datasets.Dataset.from_dict(cols)


ENCODERS: dict[str, Callable[[datasets.Dataset, Any, int], datasets.Dataset]] = {
    "classification": _encode_classification,
    "ner": _encode_ner,
    "mlm": _encode_mlm,
    "clm": _encode_clm,
}


def encode(ds: datasets.Dataset, tokenizer: Any, kind: str, max_length: int) -> datasets.Dataset:
    """Tokenise a standardized dataset for `kind` (classification | ner | mlm | clm); torch, unpadded."""
    if kind not in ENCODERS:
        raise ValueError(f"unknown task kind '{kind}'; expected one of {', '.join(KINDS)}")
    return ENCODERS[kind](ds, tokenizer, max_length).with_format("torch")


def pad_collate(tokenizer: Any, pad_to_multiple_of: int | None = None) -> Callable[[list[dict]], dict]:
    """collate_fn padding sequences to the longest in the batch (the tokenizer's padding side).

    input_ids take the pad id, attention_mask 0, token_type_ids the pad type id, labels -100; scalar
    fields (classification labels) are stacked. Every padded field comes back as a long tensor.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    pad_values = {
        "input_ids": int(tokenizer.pad_token_id),
        "attention_mask": 0,
        "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "special_tokens_mask": 1,
        "labels": IGNORE_INDEX,
    }

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        left = getattr(tokenizer, "padding_side", "right") == "left"
        batch: dict[str, torch.Tensor] = {}
        for key in features[0]:
            values = [torch.as_tensor(f[key]) for f in features]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
                continue
            length = max(len(v) for v in values)
            if pad_to_multiple_of:
                length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
            out = torch.full((len(values), length), pad_values.get(key, 0), dtype=torch.long)
            for i, v in enumerate(values):
                if left:
                    out[i, length - len(v) :] = v
                else:
                    out[i, : len(v)] = v
            batch[key] = out
        return batch

    return collate
