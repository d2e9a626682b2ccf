"""Model stitching on tiny random encoders: exactness of self-stitching, init, training, hooks, masks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    T5Config,
    T5ForTokenClassification,
)

from data_fixtures import padded_batches
from xsub.analysis.stitch import (
    StitchedModel,
    evaluate_stitched,
    hidden_at,
    identity_init,
    least_squares_init,
    no_heads,
    shuffle_layers,
    task_loss,
    train_stitch,
)
from xsub.mask import Mask, MaskMeta
from xsub.metrics import IGNORE, TaskMetric
from xsub.model import attach_gates, encoder_layers
from xsub.subnetwork import apply_mask
from xsub.trainer import TrainingDiverged, score_batches

torch.set_num_threads(1)

HEADS, HIDDEN, VOCAB, LABELS, LAYERS = 4, 32, 60, 3, 3
NER_TAGS = ["O", "B-X", "I-X"]


def bert_config(**kw) -> BertConfig:
    base = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
        "num_labels": LABELS,
        "initializer_range": 0.1,  # peaked predictions: a wrong stitch shows in the loss
    }
    return BertConfig(**{**base, **kw})


def tiny(cls=BertForSequenceClassification, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return cls(bert_config(**kw)).eval()


def inputs(n_batches: int = 3, size: int = 16, length: int = 12, seed: int = 1) -> list[dict]:
    """Right-padded batches of varying length (pad id 0)."""
    return padded_batches(VOCAB, n_batches, size, length, seed)


@torch.no_grad()
def self_labelled(model: nn.Module, batches: list[dict]) -> list[dict]:
    """Labels = the model's own predictions (pads ignored for token-level heads)."""
    out = []
    for b in batches:
        pred = model(**b).logits.argmax(-1)
        if pred.ndim == 2:
            pred = pred.masked_fill(b["attention_mask"] == 0, IGNORE)
        out.append({**b, "labels": pred})
    return out


@torch.no_grad()
def sharpen(model: nn.Module, batches: list[dict], scale: float = 10.0) -> nn.Module:
    """Confident, class-balanced sequence classifier: random BERTs predict nearly uniformly (and mostly
    one class), which makes task losses too flat to tell a good stitch from a bad one."""
    out = torch.cat([logits(model, b) for b in batches])
    model.classifier.weight.mul_(scale)
    model.classifier.bias.copy_(model.classifier.bias * scale - (out * scale).mean(0))
    return model


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[dict]) -> float:
    losses = [
        task_loss(model(**{k: v for k, v in b.items() if k != "labels"}).logits, b["labels"]) for b in batches
    ]
    return float(torch.stack(losses).mean())


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def head_mask(seed: int = 3) -> Mask:
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(LAYERS, HEADS, generator=g) < 0.6
    heads[0, 0] = False
    return Mask(heads)


def hook_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks
    }


# ---- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_self_stitch_with_identity_is_exact_at_every_layer(masked):
    model = tiny()
    if masked:
        apply_mask(model, head_mask())
    twin = copy.deepcopy(model)  # the gates' hooks and tensors are copied with it
    batches = self_labelled(tiny(), inputs())  # labels from the unmasked model: accuracy < 1 when masked
    metric = TaskMetric("classification", LABELS)
    own = score_batches(model, batches, metric, torch.device("cpu"))
    for k in range(LAYERS + 1):
        stitched = identity_init(StitchedModel(model, twin, k))
        for b in batches:
            torch.testing.assert_close(logits(stitched, b), logits(model, b), atol=1e-5, rtol=1e-5)
        assert evaluate_stitched(stitched, batches, metric, "cpu") == own
    if masked:
        assert not torch.allclose(logits(model, batches[0]), logits(tiny(), batches[0]), atol=1e-4)


def test_hidden_at_matches_hidden_states():
    model, twin = tiny(), tiny()
    b = inputs()[0]
    with torch.no_grad():
        states = twin(**b, output_hidden_states=True).hidden_states
        for k in range(LAYERS + 1):
            torch.testing.assert_close(hidden_at(model, k, **b), states[k])


@pytest.mark.parametrize("family", ["distilbert", "electra", "t5"])
def test_other_families_self_stitch_exactly(family):
    torch.manual_seed(0)
    if family == "distilbert":
        cfg = DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=2, n_heads=HEADS, hidden_dim=64, max_position_embeddings=32
        )
        model = DistilBertForSequenceClassification(cfg)
    elif family == "electra":  # embedding_size != hidden: hidden_states[0] is after embeddings_project
        cfg = ElectraConfig(
            vocab_size=VOCAB,
            embedding_size=16,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            intermediate_size=64,
            max_position_embeddings=32,
        )
        model = ElectraForSequenceClassification(cfg)
    else:
        cfg = T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_heads=HEADS)
        model = T5ForTokenClassification(cfg)
    model.eval()
    twin = copy.deepcopy(model)
    b = inputs(1)[0]
    with torch.no_grad():
        states = copy.deepcopy(model)(**b, output_hidden_states=True).hidden_states
    for k in range(3):
        if k < 2 or family != "t5":  # T5's hidden_states[L] is after the final layer norm
            torch.testing.assert_close(hidden_at(model, k, **b), states[k])
        stitched = identity_init(StitchedModel(model, twin, k))
        torch.testing.assert_close(logits(stitched, b), logits(model, b), atol=1e-5, rtol=1e-5)


# ---- initialisation -----------------------------------------------------------------------------


def test_least_squares_recovers_identity_on_identical_models():
    model = tiny()
    batches = inputs(4)
    stitched = StitchedModel(model, copy.deepcopy(model), 2)
    info = least_squares_init(stitched, batches, "cpu")
    assert info["tokens"] == sum(int(b["attention_mask"].sum()) for b in batches)
    assert info["residual"] < 1e-6
    for b in batches:
        torch.testing.assert_close(logits(stitched, b), logits(model, b), atol=1e-4, rtol=1e-4)
    capped = least_squares_init(stitched, batches, "cpu", max_tokens=100)
    assert capped["tokens"] == 100


@pytest.mark.parametrize("k", [0, 1, LAYERS])
def test_least_squares_beats_identity_between_seeds(k):
    front, end = tiny(seed=0), sharpen(tiny(seed=1), inputs(6))
    batches = self_labelled(end, inputs(6))
    stitched = StitchedModel(front, end, k)
    identity_loss = mean_loss(identity_init(stitched), batches)
    info = least_squares_init(stitched, batches, "cpu")
    assert 0 < info["residual"] < 1
    ls_loss = mean_loss(stitched, batches)
    assert ls_loss < identity_loss - 0.3, (ls_loss, identity_loss)
    assert ls_loss > mean_loss(end, batches)  # the end model itself (on its own labels) stays best


# ---- training -----------------------------------------------------------------------------------


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_only_moves_the_stitch_and_is_reproducible():
    front, end = tiny(seed=0), sharpen(tiny(seed=1), inputs(4))
    apply_mask(front, head_mask(3))
    apply_mask(end, head_mask(4))
    gates_before = (front._xsub_gates.head.clone(), end._xsub_gates.head.clone())
    front_before, end_before = params(front), params(end)
    batches = self_labelled(end, inputs(4))

    runs = []
    for _ in range(2):
        stitched = identity_init(StitchedModel(front, end, 1))
        start = mean_loss(stitched, batches)
        seen = []
        history = train_stitch(stitched, batches, "cpu", epochs=6, lr=3e-3, seed=5, on_epoch_end=seen.append)
        assert [h["epoch"] for h in history] == list(range(1, 7)) and seen == history
        assert mean_loss(stitched, batches) < start - 0.05
        assert history[-1]["loss"] < history[0]["loss"]
        assert not stitched.training and not front.training and not end.training
        runs.append(stitched.stitch.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], torch.eye(HIDDEN))

    for before, model in ((front_before, front), (end_before, end)):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        assert not any(p.requires_grad for p in model.parameters())
    assert torch.equal(gates_before[0], front._xsub_gates.head)
    assert torch.equal(gates_before[1], end._xsub_gates.head)

    other = identity_init(StitchedModel(front, end, 1))
    train_stitch(other, batches, "cpu", epochs=6, lr=3e-3, seed=6)
    assert not torch.equal(other.stitch.weight, runs[0])  # the seed drives the batch order


def test_train_keeps_the_ends_in_eval_mode_and_raises_on_divergence():
    front, end = tiny(seed=0, hidden_dropout_prob=0.5), tiny(seed=1, hidden_dropout_prob=0.5)
    stitched = identity_init(StitchedModel(front, end, 1))
    stitched.train()
    assert stitched.training and not front.training and not end.training
    b = inputs(1)[0]
    torch.testing.assert_close(logits(stitched, b), logits(stitched, b))  # no dropout
    with torch.no_grad():
        stitched.stitch.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="lower the stitch lr"):
        train_stitch(stitched, self_labelled(end, [b]), "cpu", epochs=1)


def test_mlm_and_token_classification_ends():
    batches = inputs(2)
    g = torch.Generator().manual_seed(0)
    for cls, kind in ((BertForMaskedLM, "mlm"), (BertForTokenClassification, "ner")):
        front, end = tiny(BertForSequenceClassification, seed=0), tiny(cls, seed=1)
        labelled = []
        for b in batches:
            chosen = (torch.rand(b["input_ids"].shape, generator=g) < 0.3) & (b["attention_mask"] == 1)
            target = (
                b["input_ids"] if kind == "mlm" else torch.randint(LABELS, b["input_ids"].shape, generator=g)
            )
            labelled.append({**b, "labels": torch.where(chosen, target, IGNORE)})
        stitched = StitchedModel(front, end, 2)
        least_squares_init(stitched, labelled, "cpu")
        out = stitched(**labelled[0])
        width = VOCAB if kind == "mlm" else LABELS
        assert out.logits.shape == (*labelled[0]["input_ids"].shape, width)
        assert torch.isfinite(out.loss)  # labels reach the end model
        torch.testing.assert_close(task_loss(out.logits, labelled[0]["labels"]), out.loss)
        history = train_stitch(stitched, labelled, "cpu", epochs=2)
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
        metric = TaskMetric(kind, LABELS, NER_TAGS)
        score = evaluate_stitched(stitched, labelled, metric, "cpu")[metric.name]
        assert torch.isfinite(torch.tensor(score))


# ---- hooks --------------------------------------------------------------------------------------


def test_front_stops_early_and_no_hooks_remain():
    front, end = tiny(seed=0), tiny(seed=1)
    apply_mask(front, head_mask())
    attach_gates(end)
    gated = {
        id(m) for model in (front, end) for lm in encoder_layers(model) for m in (lm.attn_out, lm.ffn_out)
    }
    before = (hook_counts(front), hook_counts(end))
    assert all(id(m) in gated for model in (front, end) for m in model.modules() if m._forward_hooks)

    calls = {"last": 0, "head": 0}
    b = inputs(1)[0]
    for k in range(LAYERS + 1):
        stitched = identity_init(StitchedModel(front, end, k))
        last = encoder_layers(front)[-1].layer.register_forward_hook(
            lambda *_: calls.__setitem__("last", calls["last"] + 1)
        )
        head = front.classifier.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
        stitched(**b)
        last.remove()
        head.remove()
        assert calls["last"] == (1 if k == LAYERS else 0), k
        assert calls["head"] == 0
        calls["last"] = 0
        assert (hook_counts(front), hook_counts(end)) == before

    bad = StitchedModel(front, end, 1, dim_end=HIDDEN // 2)  # wrong width: the end hook raises
    with pytest.raises(RuntimeError, match="dim_end"):
        bad(**b)
    assert (hook_counts(front), hook_counts(end)) == before


def test_bad_layer_index():
    model = tiny()
    for k in (-1, LAYERS + 1):
        with pytest.raises(ValueError, match=rf"0\.\.{LAYERS}"):
            StitchedModel(model, copy.deepcopy(model), k)
    shallow = tiny(num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        StitchedModel(model, shallow, 3)


# ---- front-mask options -------------------------------------------------------------------------


def test_shuffle_layers_and_no_heads():
    g = torch.Generator().manual_seed(0)
    heads = torch.rand(6, HEADS, generator=g) < 0.5
    mlp = torch.rand(6, 10, generator=g) < 0.5
    weights = {
        f"encoder.layer.{i}.output.dense.weight": torch.rand(4, 4, generator=g) < 0.5 for i in range(6)
    }
    weights["embeddings.word_embeddings.weight"] = torch.rand(3, 4, generator=g) < 0.5
    mask = Mask(heads, mlp, weights, MaskMeta(method="prune", lang="de", score_after=0.9))

    shuffled = shuffle_layers(mask, seed=1)
    perm = shuffled.meta.extra["shuffle_layers"]["perm"]
    assert sorted(perm) == list(range(6)) and perm != list(range(6))
    assert torch.equal(shuffled.heads, heads[perm]) and torch.equal(shuffled.mlp, mlp[perm])
    for i, j in enumerate(perm):
        key = f"encoder.layer.{i}.output.dense.weight"
        assert torch.equal(shuffled.weights[key], weights[f"encoder.layer.{j}.output.dense.weight"])
    assert shuffled.num_kept("heads") == mask.num_kept("heads")
    assert shuffled.num_kept("mlp") == mask.num_kept("mlp")
    assert shuffled.num_kept("weights") == mask.num_kept("weights")
    assert shuffled.meta.lang == "de" and shuffled.meta.score_after is None
    assert torch.equal(shuffle_layers(mask, seed=1).heads, shuffled.heads)
    assert torch.equal(mask.heads, heads)  # the source is untouched

    empty = no_heads(mask)
    assert empty.num_heads_kept == 0 and empty.heads.shape == heads.shape
    assert torch.equal(empty.mlp, mlp) and empty.meta.method == "no_heads(prune)"

    front, end = tiny(seed=0), tiny(seed=1)  # a model without heads still stitches
    apply_mask(front, no_heads(Mask(torch.ones(LAYERS, HEADS))))
    stitched = StitchedModel(front, end, 2)
    least_squares_init(stitched, inputs(2), "cpu")
    assert torch.isfinite(logits(stitched, inputs(1)[0])).all()
