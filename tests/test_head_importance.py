"""Gate-gradient importance and the iterative structured-pruning loop, on tiny random BERTs."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from data_fixtures import padded_batches
from xsub import store
from xsub.config import ConfigError, PruningConfig
from xsub.mask import Mask
from xsub.metrics import IGNORE, TaskMetric
from xsub.model import attach_gates
from xsub.pruning.importance import importance, normalize
from xsub.pruning.structured import (
    RoundRecord,
    masked_importance,
    per_round,
    phases,
    prune_heads,
    select_lowest,
)
from xsub.subnetwork import apply_mask

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fp32_auto(monkeypatch):
    """These tests check the fp32 arithmetic and trajectories exactly: precision=auto stays fp32 here
    even on a CPU with native bf16 (bf16 against fp32: tests/test_precision.py)."""
    monkeypatch.setattr("xsub.precision.cpu_has_native_bf16", lambda: False)


HEADS, HIDDEN, VOCAB, LABELS = 4, 32, 60, 3
HEAD_DIM = HIDDEN // HEADS


def bert_config(layers: int, **kw) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=LABELS,
        initializer_range=0.1,  # heads matter enough that pruning crosses a threshold
        **kw,
    )


def tiny_cls(layers: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(layers)).eval()


def inputs(n_batches: int = 2, size: int = 16, length: int = 12, seed: int = 1) -> list[dict]:
    """Deterministic batches with right padding of varying length (so token counts matter)."""
    return padded_batches(VOCAB, n_batches, size, length, seed)


@torch.no_grad()
def self_labelled(model: nn.Module, batches: list[dict]) -> list[dict]:
    """Labels = the unpruned model's own predictions, so score0 is 1 and pruning can only lose."""
    return [{**b, "labels": model(**b).logits.argmax(-1)} for b in batches]


def mlm_batches(seed: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in inputs(seed=seed):
        chosen = (torch.rand(b["input_ids"].shape, generator=g) < 0.3) & (b["attention_mask"] == 1)
        labels = torch.where(chosen, b["input_ids"], torch.full_like(b["input_ids"], IGNORE))
        out.append({**b, "input_ids": torch.where(chosen, 4, b["input_ids"]), "labels": labels})
    return out


def accuracy() -> TaskMetric:
    return TaskMetric("classification", LABELS)


@functools.cache
def cls_case(layers: int = 3) -> tuple[BertForSequenceClassification, list[dict]]:
    """Shared model + data for tests that only read them (gates are reset by every prune run)."""
    model = tiny_cls(layers)
    return model, self_labelled(model, inputs())


@torch.no_grad()
def score_with(model: nn.Module, mask: Mask, batches: list[dict], metric: TaskMetric) -> float:
    """Independent evaluation of a mask: forward only, gates set from the Mask object."""
    apply_mask(model, mask)
    metric.reset()
    for b in batches:
        metric.update(model(**b).logits, b["labels"])
    return metric.compute()[metric.name]


def check_history(history: list[RoundRecord], cfg: PruningConfig, mask: Mask) -> None:
    """Invariants of every run: each round turns off exactly k units of its phase's parts, starting
    from the last accepted mask, never re-masks, and the result is the last accepted mask."""
    plan = dict(phases(cfg))
    parent = history[0]
    assert parent.round == 0 and parent.accepted and all(bool(m.all()) for m in parent.mask.values())
    for rec in history[1:]:
        for part, m in rec.mask.items():
            off = parent.mask[part] & ~m
            assert not bool((m & ~parent.mask[part]).any()), "a masked unit came back"
            expected = per_round(part, m.numel(), cfg) if part in plan[rec.phase] else 0
            assert int(off.sum()) == expected
            if expected:  # the lowest-importance units of the parent, ties by index
                chosen = select_lowest(parent.importance[part], parent.mask[part], expected)
                assert sorted(off.flatten().nonzero().flatten().tolist()) == sorted(chosen.tolist())
        if rec.accepted:
            parent = rec
    assert torch.equal(mask.heads, parent.mask["head"])
    assert mask.meta.score_after == parent.score and mask.meta.score_before == history[0].score


# ---- gates really prune ---------------------------------------------------------------------------


def test_returned_mask_equals_manual_zeroing():
    model, batches = tiny_cls(), self_labelled(tiny_cls(), inputs())
    cfg = PruningConfig(threshold=0.0, heads_per_round=0.25, max_rounds=1)
    mask = prune_heads(model, batches, accuracy(), "cpu", cfg).mask
    assert mask.num_heads_kept == 6

    reference = tiny_cls()  # same weights, no gates: zero the pruned heads' output-projection columns
    with torch.no_grad():
        for layer, head in (~mask.heads).nonzero().tolist():
            dense = reference.bert.encoder.layer[layer].attention.output.dense
            dense.weight[:, head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
        gates = apply_mask(model, mask)
        pruned = model(**inputs()[0]).logits
        manual = reference(**inputs()[0]).logits
        gates.reset()
        full = model(**inputs()[0]).logits
    torch.testing.assert_close(pruned, manual, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(pruned, full, atol=1e-4)


# ---- importance against brute force ---------------------------------------------------------------

SCALES = (1.0, 0.0, 2.0, 0.5)  # last layer: output projection of head h = SCALES[h] × head 0's


def constructed_model() -> BertForSequenceClassification:
    """A model whose loss is a convex function F(s) of s = Σ_h g[1,h]·SCALES[h] alone.

    Layer 0's heads are inert (zero output projection). In the last layer every head computes the
    same context (shared Q/K/V slices) and writes it through a scaled copy of one output projection,
    and everything after it is affine (LayerNorms and pooler tanh removed, FFN zeroed). So
    ∂L/∂g[1,h] = F'(s)·SCALES[h], and F convex and decreasing (see `signal_labels`) makes the loss
    increase under ablation, F(s - c) - F(s), strictly increasing in c: ranking by |∂L/∂g| and by
    ablation provably agree, and inert heads have exactly zero of both.
    """
    model = tiny_cls(layers=2, seed=3)
    first, last = model.bert.encoder.layer
    d = HEAD_DIM
    with torch.no_grad():
        first.attention.output.dense.weight.zero_()
        for lin in (last.attention.self.query, last.attention.self.key, last.attention.self.value):
            for h in range(1, HEADS):
                lin.weight[h * d : (h + 1) * d] = lin.weight[:d]
                lin.bias[h * d : (h + 1) * d] = lin.bias[:d]
        out = last.attention.output.dense.weight
        source = out[:, :d].clone()
        for h, c in enumerate(SCALES):
            out[:, h * d : (h + 1) * d] = c * source
        last.output.dense.weight.zero_()
        last.output.dense.bias.zero_()
    last.attention.output.LayerNorm = nn.Identity()
    last.output.LayerNorm = nn.Identity()
    model.bert.pooler.activation = nn.Identity()
    return model


@torch.no_grad()
def signal_labels(model: nn.Module, batches: list[dict]) -> list[dict]:
    """y = argmax of u = ∂logits/∂s, so F'(s) = Σ (p·u − max u) ≤ 0 per example: F is decreasing."""
    gates = attach_gates(model)
    with_signal = [model(**b).logits for b in batches]
    gates.head[1] = 0
    without = [model(**b).logits for b in batches]
    gates.reset()
    return [{**b, "labels": (a - z).argmax(-1)} for b, a, z in zip(batches, with_signal, without)]


@torch.no_grad()
def total_loss(model: nn.Module, batches: list[dict]) -> float:
    return sum(float(model(**b).loss) for b in batches)


def test_importance_agrees_with_single_head_ablation():
    model = constructed_model()
    batches = signal_labels(model, inputs())
    gates = attach_gates(model)
    raw = importance(
        model, gates, batches, accuracy(), "cpu",
        normalize_tokens=False, normalize_layers=False, normalize_global=False,
    ).head  # fmt: skip
    base = total_loss(model, batches)
    ablation = torch.zeros(2, HEADS)
    for layer in range(2):
        for head in range(HEADS):
            gates.reset().head[layer, head] = 0
            ablation[layer, head] = total_loss(model, batches) - base
    gates.reset()

    inert = {(0, h) for h in range(HEADS)} | {(1, 1)}
    assert {tuple(i) for i in (raw == 0).nonzero().tolist()} == inert
    assert {tuple(i) for i in (ablation.abs() < 1e-9).nonzero().tolist()} == inert
    live = [(1, h) for h in range(HEADS) if (1, h) not in inert]
    by_importance = sorted(live, key=lambda lh: float(raw[lh]))
    by_ablation = sorted(live, key=lambda lh: float(ablation[lh]))
    assert by_importance == by_ablation == [(1, 3), (1, 0), (1, 2)]
    assert all(ablation[lh] > 0 for lh in live)
    # |∂L/∂g| = |F'(s)|·c exactly: proportional to the output scales
    torch.testing.assert_close(raw[1] / raw[1].max(), torch.tensor(SCALES) / max(SCALES))

    normalised = importance(model, gates, batches, accuracy(), "cpu").head
    assert {tuple(i) for i in (normalised == 0).nonzero().tolist()} == inert
    assert sorted(live, key=lambda lh: float(normalised[lh])) == by_ablation


# ---- normalisations and the cumulative variant ----------------------------------------------------


def manual_gradients(model: nn.Module, batches: list[dict]) -> list[torch.Tensor]:
    """∂L_b/∂g_head per batch, by autograd.grad directly (no parameter .grad touched)."""
    gates = attach_gates(model).reset()
    gates.head.requires_grad_(True)
    try:
        return [torch.autograd.grad(model(**b).loss, gates.head)[0] for b in batches]
    finally:
        gates.head.requires_grad_(False)


def test_normalisations_match_direct_computation():
    model, batches = cls_case()
    gates = attach_gates(model).reset()
    run = functools.partial(importance, model, gates, batches, accuracy(), "cpu")
    raw = run(normalize_tokens=False, normalize_layers=False, normalize_global=False)
    grads = manual_gradients(model, batches)
    torch.testing.assert_close(raw.head, sum(g.abs() for g in grads))

    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert raw.tokens == tokens < sum(b["input_ids"].numel() for b in batches)
    per_token = raw.head / tokens
    per_layer = per_token / (per_token.pow(2).sum(-1, keepdim=True).sqrt() + 1e-20)
    minmax = (per_layer - per_layer.min()) / (per_layer.max() - per_layer.min())
    torch.testing.assert_close(run(normalize_layers=False, normalize_global=False).head, per_token)
    torch.testing.assert_close(run(normalize_global=False).head, per_layer)
    full = run()
    torch.testing.assert_close(full.head, minmax)
    assert float(full.head.min()) == 0.0 and float(full.head.max()) == 1.0
    torch.testing.assert_close(per_layer.norm(dim=-1), torch.ones(3))


def test_cumulative_reproduces_never_zeroed_gradient():
    model, batches = cls_case()
    gates = attach_gates(model).reset()
    flags = {"normalize_tokens": False, "normalize_layers": False, "normalize_global": False}
    default = importance(model, gates, batches, accuracy(), "cpu", **flags).head
    cumulative = importance(model, gates, batches, accuracy(), "cpu", cumulative=True, **flags).head
    grads = manual_gradients(model, batches)
    running = [sum(grads[: i + 1]) for i in range(len(grads))]
    torch.testing.assert_close(cumulative, sum(r.abs() for r in running))
    assert len(batches) >= 2 and not torch.allclose(cumulative, default)


def test_normalize_edge_cases():
    assert torch.equal(normalize(torch.full((2, 3), 5.0), 10), torch.zeros(2, 3))  # seeds: 0/0 = NaN
    mlp = torch.tensor([1.0, 3.0, 2.0])  # [L] MLP scores are not layer-normalised (Prasanna et al. 2020)
    torch.testing.assert_close(normalize(mlp, 2, global_minmax=False), mlp / 2)


# ---- side effects ---------------------------------------------------------------------------------


def test_importance_leaves_no_parameter_grads_and_restores_flags():
    model = tiny_cls()
    batches = self_labelled(model, inputs())
    model.bert.embeddings.requires_grad_(False)  # a mixed state to restore
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    gates = attach_gates(model)
    result = importance(model, gates, batches, accuracy(), "cpu", parts=("head", "mlp"))
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training
    assert all(not t.requires_grad and t.grad is None for t in gates.tensors().values())
    assert result.score == 1.0  # dropout was off during the pass: predictions match eval mode
    assert result.head.shape == (2, HEADS) and result.mlp.shape == (2,)
    assert result.tokens_per_s > 0


def test_bf16_autocast_gives_fp32_importance():
    model, batches = cls_case()
    result = importance(model, attach_gates(model).reset(), batches, accuracy(), "cpu", precision="bf16")
    assert result.head.dtype == torch.float32 and bool(torch.isfinite(result.head).all())
    assert float(result.head.max()) == 1.0


# ---- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "fraction", "max_rounds", "kept"),
    [
        (2, 0.25, 0, [8, 6, 4, 2]),  # stops when another round would leave no head
        (3, 0.1, 0, list(range(12, 0, -1))),  # int(1.2) = 1 head per round
        (3, 0.25, 2, [12, 9, 6]),
    ],
)
def test_threshold_zero_masks_fixed_count_per_round(layers, fraction, max_rounds, kept):
    model = tiny_cls(layers)
    batches = self_labelled(model, inputs())
    cfg = PruningConfig(threshold=0.0, heads_per_round=fraction, max_rounds=max_rounds)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    assert [r.kept()["head"] for r in result.history] == kept
    assert all(r.accepted for r in result.history)
    assert result.mask.num_heads_kept == kept[-1] and result.mask.mlp is None
    assert result.mask.meta.rounds == len(kept) - 1
    check_history(result.history, cfg, result.mask)


def test_threshold_returns_last_acceptable_mask():
    model, batches = cls_case()
    cfg = PruningConfig(threshold=0.9, heads_per_round=0.1)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    *accepted, last = result.history
    assert all(r.accepted for r in accepted) and not last.accepted  # stopped by the threshold
    assert last.score < 0.9 * result.score0
    score = score_with(model, result.mask, batches, accuracy())
    assert score == result.mask.meta.score_after >= 0.9 * result.score0
    assert result.mask.num_heads_kept == accepted[-1].kept()["head"] < 12
    check_history(result.history, cfg, result.mask)
    assert len(result.timings) == len(result.history) and result.tokens_per_s > 0


def test_mlm_perplexity_threshold():
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(2)).eval()
    batches = mlm_batches()
    metric = TaskMetric("mlm")
    cfg = PruningConfig(mlm_threshold=1.01, heads_per_round=0.125)
    result = prune_heads(model, batches, metric, "cpu", cfg, mlm=True)
    last = result.history[-1]
    assert not last.accepted and last.score > 1.01 * result.score0
    ppl = score_with(model, result.mask, batches, metric)
    assert ppl == pytest.approx(result.mask.meta.score_after)
    assert ppl <= 1.01 * result.score0
    assert result.mask.meta.extra["lower_is_better"] is True
    check_history(result.history, cfg, result.mask)


def test_heads_mlp_phases_run_in_order_until_exhausted():
    model, batches = cls_case()
    cfg = PruningConfig(method="heads_mlp", threshold=0.0, heads_per_round=0.25)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    steps = [(r.phase, r.kept()["head"], r.kept()["mlp"]) for r in result.history]
    assert steps == [
        ("unpruned", 12, 3),
        ("heads+mlp", 9, 2),
        ("heads+mlp", 6, 1),  # MLPs exhausted: the joint phase ends
        ("heads", 3, 1),  # heads exhausted; the MLP phase has nothing left either
    ]
    assert result.mask.mlp.shape == (3,) and result.mask.mlp.sum() == 1
    check_history(result.history, cfg, result.mask)


def test_heads_mlp_phase_continues_from_last_accepted_mask():
    model, batches = cls_case()
    cfg = PruningConfig(method="heads_mlp", threshold=0.97, heads_per_round=0.1)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    steps = [(r.phase, r.kept()["head"], r.kept()["mlp"], r.accepted) for r in result.history]
    assert steps == [  # each phase ends by crossing the threshold and restarts from the accepted mask
        ("unpruned", 12, 3, True),
        ("heads+mlp", 11, 2, True),
        ("heads+mlp", 10, 1, False),
        ("heads", 10, 2, True),
        ("heads", 9, 2, True),
        ("heads", 8, 2, False),
        ("mlp", 9, 1, False),
    ]
    check_history(result.history, cfg, result.mask)
    assert result.mask.num_heads_kept == 9 and int(result.mask.mlp.sum()) == 2
    assert score_with(model, result.mask, batches, accuracy()) >= 0.97 * result.score0


def test_heads_mlp_units():
    model = tiny_cls(2)
    batches = self_labelled(model, inputs())
    cfg = PruningConfig(method="heads_mlp", mlp_units=True, threshold=0.0, heads_per_round=0.25, max_rounds=2)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    assert result.mask.mlp.shape == (2, 64)
    assert [r.kept()["mlp_units"] for r in result.history] == [128, 96, 64]
    check_history(result.history, cfg, result.mask)
    assert score_with(model, result.mask, batches, accuracy()) == result.mask.meta.score_after


# ---- resume ---------------------------------------------------------------------------------------


class Killed(RuntimeError):
    pass


def kill_after(round_: int):
    def on_round(record: RoundRecord) -> None:
        if record.round == round_:
            raise Killed(f"killed after round {round_}")

    return on_round


def checkpoint(file: Path, identity: str = "mask:test/abc") -> store.Checkpoint:
    return store.Checkpoint(file, identity)


@pytest.mark.parametrize("kill_round", [1, 5])
def test_resume_after_kill_is_identical(tmp_path: Path, kill_round: int):
    model, batches = cls_case()
    cfg = PruningConfig(method="heads_mlp", threshold=0.97, heads_per_round=0.1)
    run = functools.partial(prune_heads, model, batches, accuracy(), "cpu", cfg)
    straight = run(checkpoint=checkpoint(tmp_path / "a.pt"))
    assert len(straight.history) > kill_round + 1

    state = checkpoint(tmp_path / "b.pt")
    with pytest.raises(Killed):
        run(checkpoint=state, on_round=kill_after(kill_round))
    assert state.file.is_file()
    calls: list[int] = []
    resumed = run(checkpoint=state, on_round=lambda r: calls.append(r.round))
    assert calls == list(range(kill_round + 1, len(straight.history)))
    assert resumed.mask.equals(straight.mask)
    assert resumed.mask.meta.to_dict() == straight.mask.meta.to_dict()
    assert len(resumed.history) == len(straight.history)
    assert all(a.same_as(b) for a, b in zip(resumed.history, straight.history))

    again = run(checkpoint=state, on_round=kill_after(-1))  # finished: nothing recomputed
    assert again.mask.equals(straight.mask)


def test_resume_with_other_settings_starts_fresh(tmp_path: Path):
    """A state written under other pruning settings is not resumed from (issue 13: "a resume with other
    settings starts fresh"): the run redoes every round and ends as an uninterrupted run would."""
    model, batches = cls_case(2)
    run = functools.partial(prune_heads, model, batches, accuracy(), "cpu")
    other = PruningConfig(threshold=0.5, heads_per_round=0.25)
    state = checkpoint(tmp_path / "s.pt")
    with pytest.raises(Killed):
        run(PruningConfig(threshold=0.0, heads_per_round=0.125), checkpoint=state, on_round=kill_after(2))
    straight = run(other)
    calls: list[int] = []
    resumed = run(other, checkpoint=state, on_round=lambda r: calls.append(r.round))
    assert calls == list(range(len(straight.history)))  # from round 0: nothing of the old state
    assert resumed.mask.equals(straight.mask)
    assert resumed.mask.meta.to_dict() == straight.mask.meta.to_dict()
    assert all(a.same_as(b) for a, b in zip(resumed.history, straight.history, strict=True))


def test_resume_of_another_identity_does_not_mix_baselines(tmp_path: Path):
    """Same file, same pruning settings, but another artifact (e.g. other `pruning.n_examples`): the
    loop starts fresh, so round 0's unpruned score is that of its own batches, not the killed run's."""
    model, batches = cls_case(2)
    fewer = batches[:1]
    cfg = PruningConfig(threshold=0.0, heads_per_round=0.125, max_rounds=4)
    file = tmp_path / "rounds.pt"
    with pytest.raises(Killed):
        prune_heads(
            model, batches, accuracy(), "cpu", cfg, checkpoint=checkpoint(file, "a"), on_round=kill_after(2)
        )
    straight = prune_heads(model, fewer, accuracy(), "cpu", cfg)
    calls: list[int] = []
    resumed = prune_heads(
        model,
        fewer,
        accuracy(),
        "cpu",
        cfg,
        checkpoint=checkpoint(file, "b"),
        on_round=lambda r: calls.append(r.round),
    )
    assert calls == [0, 1, 2, 3, 4]
    assert resumed.history[0].tokens == sum(int(b["attention_mask"].sum()) for b in fewer)
    assert resumed.score0 == straight.score0
    assert resumed.mask.equals(straight.mask)
    assert all(a.same_as(b) for a, b in zip(resumed.history, straight.history, strict=True))


# ---- properties -----------------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, math.nan]), min_size=1, max_size=24),
    st.data(),
)
def test_select_lowest_properties(values, data):
    importance_ = torch.tensor(values)
    on = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    k = data.draw(st.integers(1, len(values)))
    chosen = select_lowest(importance_, on, k)
    if int(on.sum()) <= k:
        assert chosen is None
        return
    ranked = masked_importance(importance_, on)
    assert bool(torch.isinf(ranked[~on]).all())
    assert len(set(chosen.tolist())) == k and bool(on[chosen].all())  # never an already-off unit
    expected = sorted((float(ranked[i]), i) for i in on.nonzero().flatten().tolist())[:k]
    assert chosen.tolist() == [i for _, i in expected]  # lowest first, ties by index


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fraction=st.floats(0.05, 0.5),
    threshold=st.floats(0.0, 1.0),
    max_rounds=st.integers(0, 4),
    method=st.sampled_from(["heads", "heads_mlp"]),
)
def test_loop_properties(fraction, threshold, max_rounds, method):
    model, batches = cls_case()
    cfg = PruningConfig(method=method, heads_per_round=fraction, threshold=threshold, max_rounds=max_rounds)
    result = prune_heads(model, batches, accuracy(), "cpu", cfg)
    check_history(result.history, cfg, result.mask)
    accepted = [r.kept()["head"] for r in result.history if r.accepted]
    assert accepted == sorted(accepted, reverse=True)
    assert result.mask.num_heads_kept >= 1
    assert result.mask.meta.score_after >= threshold * result.score0
    assert not max_rounds or len(result.history) - 1 <= max_rounds


def test_unknown_method_is_a_config_error():
    model, batches = cls_case(2)
    cfg = dataclasses.replace(PruningConfig(), method="magnitude")
    with pytest.raises(ConfigError, match=r"pruning\.method"):
        prune_heads(model, batches, accuracy(), "cpu", cfg)
