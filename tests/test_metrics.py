"""Metrics agree with the references users compare against (seqeval, the perplexity definition)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import f1_score

from xsub.metrics import IGNORE, SpanF1, TaskMetric, bio_spans

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
sequences = st.lists(st.integers(0, len(TAGS) - 1), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(sequences, sequences), min_size=1, max_size=6))
def test_span_f1_equals_seqeval(pairs):
    pairs = [(p[: len(g)] + [0] * (len(g) - len(p)), g) for p, g in pairs]
    metric = SpanF1(TAGS)
    for pred, gold in pairs:
        metric.update(torch.tensor([pred]), torch.tensor([gold]))
    expected = f1_score([[TAGS[t] for t in g] for _, g in pairs], [[TAGS[t] for t in p] for p, _ in pairs])
    assert math.isclose(float(metric.compute()), expected, abs_tol=1e-6)


def test_span_f1_skips_ignored_subtokens():
    gold = torch.tensor([[1, IGNORE, 2, 0]])  # B-PER, (sub-token), I-PER, O
    pred = torch.tensor([[1, 5, 2, 0]])  # the prediction on the ignored position must not matter
    metric = SpanF1(TAGS)
    metric.update(pred, gold)
    assert float(metric.compute()) == 1.0
    assert bio_spans(["B-PER", "I-PER", "O", "I-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}


def test_perplexity_counts_masked_tokens_only():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), IGNORE)
    labels[0, 1], labels[1, 3] = 4, 7
    metric = TaskMetric("mlm")
    metric.update(logits, labels)
    nll = -(logits.log_softmax(-1)[0, 1, 4] + logits.log_softmax(-1)[1, 3, 7]) / 2
    assert math.isclose(metric.compute()["perplexity"], math.exp(float(nll)), rel_tol=1e-5)
    assert metric.better(2.0, 3.0) and not TaskMetric("classification", 3).better(2.0, 3.0)
