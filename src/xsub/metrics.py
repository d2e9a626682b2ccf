"""Task metrics as torchmetrics objects (update per batch, compute once, sync across processes).

`task_metric(kind, num_labels)` gives the metric every stage reports for a task: accuracy for
classification, entity-level micro F1 for BIO tagging, perplexity over the masked tokens for MLM.
"""

from __future__ import annotations

import torch
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


class TaskMetric:
    """One task's metric: `update(logits, labels)` per batch, `compute()` -> {name: value}."""

    def __init__(self, kind: str, num_labels: int = 0, label_names: list[str] | None = None) -> None:
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
        else:
            raise ValueError(f"unknown task kind {kind}")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        if self.kind == "mlm":
            self.metric.update(logits, labels)
        else:
            self.metric.update(logits.argmax(-1), labels)

    def compute(self) -> dict[str, float]:
        return {self.name: float(self.metric.compute())}

    def reset(self) -> None:
        self.metric.reset()

    def better(self, a: float, b: float) -> bool:
        """Is score a strictly better than score b?"""
        return a > b if self.higher_is_better else a < b


def task_metric(task) -> TaskMetric:
    return TaskMetric(task.kind, task.num_labels, list(task.label_names))
