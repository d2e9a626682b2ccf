"""Mode connectivity (Qin et al. 2022): interpolation, distances, Bezier bends, forgetting, tiny BERTs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from data_fixtures import padded_batches
from xsub.analysis.interpolate import (
    bezier_into,
    comparable,
    distances,
    forgetting,
    interpolate_into,
    midpoint,
    path,
    path_mask,
    predictions,
    train_bend,
)
from xsub.config import ConfigError
from xsub.mask import Mask
from xsub.metrics import IGNORE, TaskMetric
from xsub.trainer import TrainingDiverged, score_batches

torch.set_num_threads(1)

VOCAB, LABELS = 60, 3
CPU = torch.device("cpu")


def config(hidden: int = 32, labels: int = LABELS) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=labels,
    )


def tiny(seed: int, hidden: int = 32, labels: int = LABELS) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(config(hidden, labels)).eval()


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def data(n_batches: int = 3, size: int = 16, length: int = 10, seed: int = 1) -> list[dict]:
    """Fixed batches whose label is a function of the first real token (learnable, not random)."""
    out = padded_batches(VOCAB, n_batches, size, length, seed)
    return [{**b, "labels": b["input_ids"][:, 0] % LABELS} for b in out]


def score(model, batches) -> float:
    return score_batches(model, batches, TaskMetric("classification", LABELS), CPU)["accuracy"]


@pytest.fixture(scope="module")
def ends():
    m1, m2 = tiny(0), tiny(1)
    return state(m1), state(m2), score(m1, data()), score(m2, data())


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- interpolation ---------------------------------------------------------------------------------


def test_ends_are_bitwise_and_middle_differs(ends):
    sd1, sd2, acc1, acc2 = ends
    sd1 = dict(sd1)
    w = sd1["bert.encoder.layer.0.output.dense.weight"].clone()
    w[0, 0] = -0.0  # torch.lerp(a, b, 0) would turn this into +0.0
    sd1["bert.encoder.layer.0.output.dense.weight"] = w
    model = tiny(7)
    names = comparable(sd1, sd2)
    interpolate_into(model, sd1, sd2, 0.0, names)
    assert same_state(state(model), sd1)
    assert torch.signbit(model.bert.encoder.layer[0].output.dense.weight[0, 0])
    interpolate_into(model, ends[0], sd2, 0.0, names)
    assert score(model, data()) == acc1
    interpolate_into(model, sd1, sd2, 1.0, names)
    assert same_state(state(model), sd2)
    assert score(model, data()) == acc2
    interpolate_into(model, sd1, sd2, 0.5, names)
    mid = state(model)
    assert not torch.equal(mid["classifier.weight"], sd1["classifier.weight"])
    assert torch.allclose(mid["classifier.weight"], (sd1["classifier.weight"] + sd2["classifier.weight"]) / 2)


def test_other_parameters_keep_model_values(ends):
    sd1, sd2, _, _ = ends
    model = tiny(7)
    before = state(model)
    names = [n for n in comparable(sd1, sd2) if not n.startswith("classifier.")]
    interpolate_into(model, sd1, sd2, 1.0, names)
    after = state(model)
    assert torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert torch.equal(after["bert.pooler.dense.weight"], sd2["bert.pooler.dense.weight"])


# ---- distances -------------------------------------------------------------------------------------


def test_distances_self_symmetry_and_rms(ends):
    sd1, sd2, _, _ = ends
    same = distances(sd1, sd1)
    assert same["l2"] == 0.0 and same["rms"] == 0.0 and same["cosine"] == 1.0
    d12, d21 = distances(sd1, sd2), distances(sd2, sd1)
    assert d12 == pytest.approx(d21, rel=1e-12)
    assert d12["n_params"] == sum(sd1[n].numel() for n in comparable(sd1, sd2))
    assert d12["rms"] == pytest.approx(d12["l2"] / math.sqrt(d12["n_params"]), rel=1e-12)
    assert d12["l2"] > 0 and -1 <= d12["cosine"] < 1


def test_distances_by_hand():
    a = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0], [0.0]]), "ids": torch.tensor([1, 2])}
    b = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([[0.0], [0.0]]), "ids": torch.tensor([3, 4])}
    assert comparable(a, b) == ["w", "b"]  # integer tensors are never interpolated
    d = distances(a, b)
    assert d == {"l2": 5.0, "cosine": 0.0, "rms": 2.5, "n_params": 4}
    c = {"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([[0.0], [0.0]])}
    one = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([[0.0], [0.0]])}
    assert distances(one, c)["cosine"] == pytest.approx(1 / math.sqrt(2))
    assert distances(one, c, names=["w"])["n_params"] == 2


# ---- comparable ------------------------------------------------------------------------------------


def test_comparable_skips_head_of_other_task(ends):
    sd1 = ends[0]
    other = state(tiny(2, labels=2))
    names = comparable(sd1, other)
    assert "classifier.weight" not in names and "classifier.bias" not in names
    assert "bert.embeddings.word_embeddings.weight" in names
    assert set(names) == {k for k, v in sd1.items() if v.is_floating_point()} - {
        "classifier.weight",
        "classifier.bias",
    }
    # The heads keep the model's own values; the encoder is interpolated.
    model = tiny(2, labels=2)
    head = model.classifier.weight.detach().clone()
    interpolate_into(model, sd1, other, 0.0, names)
    assert torch.equal(model.classifier.weight, head)
    assert torch.equal(model.bert.pooler.dense.weight, sd1["bert.pooler.dense.weight"])


def test_comparable_rejects_other_encoder(ends):
    with pytest.raises(ConfigError, match=r"encoder shape at bert\.embeddings\.word_embeddings\.weight"):
        comparable(ends[0], state(tiny(3, hidden=64)))
    with pytest.raises(ConfigError, match="no floating-point tensor"):
        comparable({"a": torch.zeros(2)}, {"b": torch.zeros(2)})


# ---- Bezier ----------------------------------------------------------------------------------------


def test_bezier_exact_ends_and_midpoint_bend_is_the_line(ends):
    sd1, sd2, _, _ = ends
    names = comparable(sd1, sd2)
    bend = midpoint(sd1, sd2, names)
    model = tiny(7)
    bezier_into(model, sd1, bend, sd2, 0.0, names)
    assert same_state(state(model), sd1)
    bezier_into(model, sd1, bend, sd2, 1.0, names)
    assert same_state(state(model), sd2)
    bezier_into(model, sd1, bend, sd2, 0.3, names)
    curve = state(model)
    interpolate_into(model, sd1, sd2, 0.3, names)
    line = state(model)
    for n in names:
        assert torch.allclose(curve[n], line[n], atol=1e-6), n


# ---- bend training ---------------------------------------------------------------------------------


@torch.no_grad()
def curve_loss(sd1, bend, sd2, names, batches, ts=(0.25, 0.5, 0.75)) -> float:
    model = tiny(7)
    losses = []
    for t in ts:
        bezier_into(model, sd1, bend, sd2, t, names)
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            losses.append(F.cross_entropy(logits, b["labels"]).item())
    return sum(losses) / len(losses)


def test_train_bend_lowers_curve_loss_and_touches_nothing_else(ends):
    sd1, sd2, _, _ = ends
    ref1, ref2 = state(tiny(0)), state(tiny(1))
    names = comparable(sd1, sd2)
    model = tiny(7)
    before = state(model)
    batches = data()
    bend, history = train_bend(model, sd1, sd2, names, batches, CPU, epochs=4, lr=1e-2, seed=3)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and all(h["steps"] == 3 for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(bend) == set(names) and not any(b.requires_grad for b in bend.values())
    line = curve_loss(sd1, midpoint(sd1, sd2, names), sd2, names, batches)
    trained = curve_loss(sd1, bend, sd2, names, batches)
    assert trained < line - 0.05, (trained, line)
    # Only the bend changed: the model, its gradients and the endpoints are as before.
    assert same_state(state(model), before)
    assert all(p.grad is None for p in model.parameters())
    assert same_state(sd1, ref1) and same_state(sd2, ref2)
    # Reproducible for a seed, different for another.
    again, history2 = train_bend(tiny(7), sd1, sd2, names, batches, CPU, epochs=4, lr=1e-2, seed=3)
    assert history2 == history and same_state(again, bend)
    other, _ = train_bend(tiny(7), sd1, sd2, names, batches, CPU, epochs=1, lr=1e-2, seed=4)
    assert not same_state(other, bend)


def test_train_bend_nan_is_one_line(ends):
    sd1, sd2, _, _ = ends
    broken = dict(sd1)
    broken["bert.pooler.dense.weight"] = torch.full_like(sd1["bert.pooler.dense.weight"], math.nan)
    with pytest.raises(TrainingDiverged, match="bend loss is nan") as err:
        train_bend(tiny(7), broken, sd2, comparable(sd1, sd2), data(1), CPU, lr=1e-2)
    assert "\n" not in str(err.value)


# ---- path ------------------------------------------------------------------------------------------


def test_path_records_and_restores(ends):
    sd1, sd2, acc1, acc2 = ends
    model = tiny(7)
    before = state(model)
    names = comparable(sd1, sd2)
    batches = data()
    records = path(model, sd1, sd2, names, 5, lambda m: {"accuracy": score(m, batches)})
    assert [r["x"] for r in records] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert records[0]["accuracy"] == acc1 and records[-1]["accuracy"] == acc2
    assert same_state(state(model), before)
    bend = midpoint(sd1, sd2, names)
    curve = path(model, sd1, sd2, names, 5, lambda m: {"accuracy": score(m, batches)}, curve_bend=bend)
    assert curve[0] == records[0] and curve[-1] == records[-1]
    assert same_state(state(model), before)

    def boom(m):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        path(model, sd1, sd2, names, 3, boom)
    assert same_state(state(model), before)
    with pytest.raises(ConfigError, match="at least 2 points"):
        path(model, sd1, sd2, names, 1, boom)


def test_path_mask_policy():
    a = Mask(torch.tensor([[True, False], [True, True]]))
    b = Mask(torch.tensor([[False, False], [True, False]]))
    assert path_mask(a, b, "union").equals(a | b)
    assert path_mask(a, b, "intersection").equals(a & b)
    assert path_mask(a, None, "union") is None
    assert path_mask(None, b, "intersection") is b
    with pytest.raises(ConfigError, match="mask_policy"):
        path_mask(a, b, "average")


# ---- predictions and forgetting --------------------------------------------------------------------


def test_predictions_classification_is_bool_per_example():
    model = tiny(0)
    batches = data(2, size=5)
    right = predictions(model, batches, CPU)
    assert right.dtype == torch.bool and right.shape == (10,)
    with torch.no_grad():
        expect = torch.cat(
            [
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
                == b["labels"]
                for b in batches
            ]
        )
    assert torch.equal(right, expect)
    assert right.float().mean().item() == pytest.approx(score(model, batches))


def test_predictions_token_level_is_fraction_of_labelled_tokens():
    torch.manual_seed(0)
    model = BertForTokenClassification(config()).eval()
    ids = torch.randint(5, VOCAB, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(input_ids=ids).logits.argmax(-1)
    labels = torch.full_like(ids, IGNORE)
    labels[0, :4] = pred[0, :4]  # 4/4 right
    labels[1, :2] = pred[1, :2]
    labels[1, 2:4] = (pred[1, 2:4] + 1) % LABELS  # 2/4 right
    frac = predictions(model, [{"input_ids": ids, "labels": labels}], CPU)  # row 2: nothing labelled
    assert frac.dtype == torch.float32
    assert frac[:2].tolist() == [1.0, 0.5] and math.isnan(frac[2])


def test_forgetting_by_hand():
    correct = torch.tensor(
        [
            # ex0   ex1    ex2    ex3    ex4
            [True, True, False, True, True],
            [True, False, False, True, False],
            [True, True, True, False, True],
            [True, False, True, True, False],
        ]
    )
    df = forgetting(correct)
    assert list(df.columns) == [
        "example",
        "correct_at_start",
        "correct_at_end",
        "flips",
        "first_wrong",
        "forgotten",
    ]
    assert df["example"].tolist() == [0, 1, 2, 3, 4]
    assert df["correct_at_start"].tolist() == [True, True, False, True, True]
    assert df["correct_at_end"].tolist() == [True, False, True, True, False]
    assert df["flips"].tolist() == [0, 2, 0, 1, 2]
    assert df["first_wrong"].tolist() == [-1, 1, 0, 2, 1]
    assert df["forgotten"].tolist() == [False, True, False, True, True]
    # Token-level fractions: right when >= 0.5, nan is wrong.
    frac = torch.tensor([[1.0, 0.5, math.nan], [0.4, 0.5, math.nan]])
    df = forgetting(frac)
    assert df["flips"].tolist() == [1, 0, 0]
    assert df["forgotten"].tolist() == [True, False, False]
    assert df["first_wrong"].tolist() == [1, -1, 0]
