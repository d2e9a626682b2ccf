"""Task metrics as torchmetrics objects (update per batch, compute once, sync across processes).

`task_metric(kind, num_labels)` gives the metric every stage reports for a task: accuracy for
classification, entity-level micro F1 for BIO tagging, perplexity over the masked tokens for MLM, and
for causal LMs (`clm`) perplexity over the predicted tokens (each position predicts the next; padding
and positions labelled -100 excluded), with bits per byte beside it when the token byte lengths are known
(`token_bytes`), so that models with different tokenizers can be compared.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

IGNORE = -100


def bio_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) entity spans of a BIO sequence, as seqeval's default (conlleval) mode reads
    it: an I- tag that does not continue an entity of its type starts a new one."""
    spans: set[tuple[str, int, int]] = set()
    start, etype = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-")
        continues = prefix == "I" and kind == etype and start >= 0
        if start >= 0 and not continues:
            spans.add((etype, start, i))
            start, etype = -1, ""
        if prefix in ("B", "I") and not continues:
            start, etype = i, kind
    return spans


class SpanF1(Metric):
    """Entity-level micro F1 over BIO tags (exact type and boundaries); tokens labelled -100 are
    skipped, so only first sub-tokens count, as in word-level evaluation."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, label_names: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        for name in ("tp", "n_pred", "n_gold"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        for p_row, t_row in zip(preds.tolist(), target.tolist()):
            keep = [(p, t) for p, t in zip(p_row, t_row) if t != IGNORE]
            pred = bio_spans([self.label_names[p] for p, _ in keep])
            gold = bio_spans([self.label_names[t] for _, t in keep])
            self.tp += len(pred & gold)
            self.n_pred += len(pred)
            self.n_gold += len(gold)

    def compute(self) -> torch.Tensor:
        denom = self.n_pred + self.n_gold
        return (2 * self.tp / denom).float() if denom > 0 else torch.tensor(0.0)


class CausalPerplexity(Metric):
    """Perplexity of a causal LM over its predicted tokens: logits at t score labels at t+1.

    The negative log-likelihood is summed on the logits' device (no [B, T, V] copy to the CPU, which
    matters for 150k-token vocabularies), in float32. With `token_bytes` (UTF-8 bytes of each vocabulary
    entry) it also sums the bytes of the predicted tokens, for bits per byte = Σ NLL / (ln 2 · Σ bytes).
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, token_bytes: torch.Tensor | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.token_bytes = None if token_bytes is None else token_bytes.to(torch.float64)
        for name in ("nll", "count", "n_bytes"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pred = logits[:, :-1].float()
        target = labels[:, 1:].to(pred.device)
        nll = F.cross_entropy(
            pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        kept = target != IGNORE
        self.nll += nll.detach().double().cpu()
        self.count += float(kept.sum())
        if self.token_bytes is not None:
            ids = target[kept].cpu()
            self.n_bytes += self.token_bytes[ids.clamp(0, len(self.token_bytes) - 1)].sum()

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll / self.count) if self.count > 0 else torch.tensor(math.nan)

    def bits_per_byte(self) -> float:
        if self.token_bytes is None or float(self.n_bytes) <= 0:
            return math.nan
        return float(self.nll / (math.log(2) * self.n_bytes))


_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def token_bytes(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each vocabulary entry stands for, as text (0 for special tokens).

    Byte-level BPE (GPT-2, Llama 3, Qwen): one character per byte. SentencePiece (Llama 2, Gemma, XGLM,
    mGPT): "▁" is a space, `<0xNN>` one byte. WordPiece: "##x" continues a word, any other piece starts one
    after a space; a word-level vocabulary (the synthetic languages) counts the word plus its space.
    """
    vocab = tokenizer.get_vocab()
    out = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.float64)
    special = set(getattr(tokenizer, "all_special_ids", []))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    desc = str(backend.pre_tokenizer) + str(backend.decoder) if backend is not None else ""
    byte_level = "ByteLevel" in desc
    for piece, i in vocab.items():
        if i in special:
            continue
        if byte_level:
            n = len(piece)
        elif _BYTE_TOKEN.match(piece):
            n = 1
        elif "▁" in piece:
            n = len(piece.replace("▁", " ").encode())
        elif piece.startswith("##"):
            n = len(piece[2:].encode())
        else:
            n = len(piece.encode()) + 1
        out[i] = n
    return out


class TaskMetric:
    """One task's metric: `update(logits, labels)` per batch, `compute()` -> {name: value}."""

    def __init__(
        self,
        kind: str,
        num_labels: int = 0,
        label_names: list[str] | None = None,
        token_bytes: torch.Tensor | None = None,
    ) -> None:
        self.kind = kind
        if kind == "classification":
            self.name, self.higher_is_better = "accuracy", True
            self.metric: Metric = MulticlassAccuracy(num_classes=num_labels, average="micro")
        elif kind == "ner":
            self.name, self.higher_is_better = "f1", True
            self.metric = SpanF1(label_names or [])
        elif kind == "mlm":
            self.name, self.higher_is_better = "perplexity", False
            self.metric = Perplexity(ignore_index=IGNORE)
        elif kind == "clm":
            self.name, self.higher_is_better = "perplexity", False
            self.metric = CausalPerplexity(token_bytes)
        else:
            raise ValueError(f"unknown task kind {kind}")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if self.kind == "clm":  # summed on the logits' device
            self.metric.update(logits.detach(), labels.detach())
            return
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        if self.kind == "mlm":
            self.metric.update(logits, labels)
        else:
            self.metric.update(logits.argmax(-1), labels)

    def compute(self) -> dict[str, float]:
        out = {self.name: float(self.metric.compute())}
        if isinstance(self.metric, CausalPerplexity) and self.metric.token_bytes is not None:
            out["bits_per_byte"] = self.metric.bits_per_byte()
        return out

    def reset(self) -> None:
        self.metric.reset()

    def better(self, a: float, b: float) -> bool:
        """Is score a strictly better than score b?"""
        return a > b if self.higher_is_better else a < b


def task_metric(task, tokenizer=None) -> TaskMetric:
    """The task's metric; for a causal LM with its `tokenizer`, bits per byte are reported too."""
    tb = token_bytes(tokenizer) if tokenizer is not None and task.kind == "clm" else None
    return TaskMetric(task.kind, task.num_labels, list(task.label_names), token_bytes=tb)
