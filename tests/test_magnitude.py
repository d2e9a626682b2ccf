"""Magnitude pruning (Prasanna et al. 2020, one-shot global L1) and IMP with rewinding (Foroutan et al.
2022) on a tiny BERT."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertForSequenceClassification

from xsub import store
from xsub.config import PruningConfig
from xsub.mask import Mask, MaskMeta
from xsub.model import config_hash, reinit_weights
from xsub.pruning.imp import Segment, imp_num_events, imp_prune
from xsub.pruning.magnitude import (
    kept_count,
    magnitude_prune,
    prunable_shapes,
    prunable_weights,
    random_like,
    smallest,
    sparsity,
)
from xsub.subnetwork import WeightMasker, apply_weight_mask

torch.set_num_threads(1)

LAYERS, HEADS, HIDDEN, INTER, VOCAB, SEQ = 2, 4, 32, 64, 40, 6
MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
TOTAL = LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTER)


def tiny_model(seed: int = 0, dropout: float = 0.0) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        max_position_embeddings=16,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=2,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def model() -> BertForSequenceClassification:
    return tiny_model()


def params_of(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def zero_fraction(model) -> float:
    """Sparsity as the model shows it (exact zeros): the constructed score reads the weights, not the mask."""
    ws = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def one_minus_sparsity(model) -> float:
    return 1.0 - zero_fraction(model)


def expected_sparsities(fraction: float, rounds: int) -> list[float]:
    kept, out = TOTAL, []
    for _ in range(rounds):
        kept -= round(fraction * kept)
        out.append(1 - kept / TOTAL)
    return out


def reference_smallest(scores: dict[str, torch.Tensor], among: dict[str, torch.Tensor], k: int):
    """First k of a stable ascending sort over the concatenated entries (the documented tie rule)."""
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    allowed = torch.cat([a.reshape(-1) for a in among.values()])
    order = torch.sort(torch.where(allowed, flat, torch.inf), stable=True).indices[:k]
    picked = torch.zeros_like(allowed)
    picked[order] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = picked[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return out


# ---- which weights


def test_prunable_set_is_the_six_matrices_of_every_layer(model):
    weights = prunable_weights(model)
    expected = [f"bert.encoder.layer.{i}.{m}.weight" for i in range(LAYERS) for m in MATRICES]
    assert list(weights) == expected
    named = dict(model.named_parameters())
    assert all(weights[n] is named[n] for n in expected)
    assert sum(w.numel() for w in weights.values()) == TOTAL


# ---- selection


def test_smallest_breaks_ties_by_position():
    scores = {"a": torch.tensor([3.0, 1.0, 1.0]), "b": torch.tensor([1.0, 0.0, 2.0])}
    among = {n: torch.ones(3, dtype=torch.bool) for n in scores}
    got = smallest(scores, among, 3)
    assert got["a"].tolist() == [False, True, True]
    assert got["b"].tolist() == [False, True, False]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.lists(st.integers(0, 4), min_size=1, max_size=12),
    st.data(),
)
def test_smallest_matches_a_stable_sort(a, b, data):
    scores = {"a": torch.tensor(a, dtype=torch.float32), "b": torch.tensor(b, dtype=torch.float32)}
    among = {
        n: torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(s), max_size=len(s))))
        for n, s in scores.items()
    }
    k = data.draw(st.integers(0, len(a) + len(b)))
    got = smallest(scores, among, k)
    want = reference_smallest(scores, among, min(k, sum(int(m.sum()) for m in among.values())))
    assert all(torch.equal(got[n], want[n]) for n in scores)


# ---- applying a weight mask


def half_mask(model, seed: int = 1) -> dict[str, torch.Tensor]:
    """A seeded random mask keeping half of every prunable matrix."""
    half = {n: torch.arange(p.numel()).view(p.shape) % 2 == 0 for n, p in prunable_weights(model).items()}
    return random_like(half, seed)


def train_steps(model, steps: int, after_step=None, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (8, SEQ), generator=g)
        model(input_ids=ids, labels=ids[:, 0] % 2).loss.backward()
        opt.step()
        opt.zero_grad()
        if after_step is not None:
            after_step()
    model.eval()


def masked_values(model, keep) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach()[~k] for n, k in keep.items()])


def test_adamw_with_weight_decay_moves_zeroed_weights_without_a_masker(model):
    keep = half_mask(model)
    apply_weight_mask(model, keep)
    assert bool((masked_values(model, keep) == 0).all())
    train_steps(model, 3)
    assert bool((masked_values(model, keep) != 0).any())  # why the masker exists


def test_masker_keeps_masked_weights_exactly_zero_under_adamw(model):
    keep = half_mask(model)
    before = params_of(model)
    with WeightMasker(model, keep, before_forward=False) as masker:  # after_step alone must suffice
        train_steps(model, 5, after_step=masker.after_step)
        assert bool((masked_values(model, keep) == 0).all())
        model(
            input_ids=torch.ones(2, SEQ, dtype=torch.long), labels=torch.zeros(2, dtype=torch.long)
        ).loss.backward()
        named = dict(model.named_parameters())
        grads_zero = [bool((named[n].grad[~k] == 0).all()) for n, k in keep.items()]
        assert all(grads_zero)
    kept_moved = [
        not torch.equal(before[n][k], dict(model.named_parameters())[n].detach()[k]) for n, k in keep.items()
    ]
    assert all(kept_moved)


def test_masker_forward_hook_covers_a_trainer_without_a_step_hook(model):
    keep = half_mask(model)
    with WeightMasker(model, keep, zero_grad=False):
        train_steps(model, 3)  # no after_step: weights drift until the next forward
        assert bool((masked_values(model, keep) != 0).any())
        with torch.no_grad():
            model(input_ids=torch.ones(1, SEQ, dtype=torch.long))
        assert bool((masked_values(model, keep) == 0).all())


# ---- one-shot magnitude pruning


def test_rounds_remove_the_global_smallest_and_follow_the_sparsity_sequence(model):
    cfg = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=4, threshold=0.0)
    before = params_of(model)
    res = magnitude_prune(model, one_minus_sparsity, cfg)
    got = [h["sparsity"] for h in res.history[1:]]
    assert got == pytest.approx(expected_sparsities(0.1, 4), abs=0)
    assert got == pytest.approx([0.1, 0.19, 0.271, 0.3439], abs=1e-3)
    assert [h["score"] for h in res.history[1:]] == pytest.approx([1 - s for s in got])  # weights were zeroed
    assert all(torch.equal(before[n], p) for n, p in params_of(model).items())  # caller's model untouched
    scores = {n: w.detach().abs() for n, w in prunable_weights(model).items()}
    removed = TOTAL - kept_count(res.mask.weights)
    all_in = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    want = reference_smallest(scores, all_in, removed)
    assert all(torch.equal(~res.mask.weights[n], want[n]) for n in scores)


def test_random_and_bad_masks_match_the_size(model):
    cfg = PruningConfig(weight_fraction_per_round=0.2, weight_rounds=3, threshold=0.0)
    res = magnitude_prune(model, one_minus_sparsity, cfg, seed=7)
    mask, rand, bad = res.mask.weights, res.random.weights, res.bad.weights
    assert {n: int(k.sum()) for n, k in rand.items()} == {n: int(k.sum()) for n, k in mask.items()}
    assert res.mask.jaccard(res.random, "weights") < 0.9
    again = magnitude_prune(model, one_minus_sparsity, cfg, seed=7)
    assert again.random.equals(res.random)
    assert kept_count(bad) == kept_count(mask)
    w = torch.cat([p.detach().abs().reshape(-1) for p in prunable_weights(model).values()])
    bad_flat = torch.cat([bad[n].reshape(-1) for n in prunable_weights(model)])
    assert float(w[bad_flat].max()) <= float(w[~bad_flat].min())
    assert [m.meta.method for m in (res.mask, res.random, res.bad)] == [
        "magnitude",
        "magnitude-random",
        "magnitude-bad",
    ]
    assert all(bool(m.heads.all()) for m in (res.mask, res.random, res.bad))


@pytest.mark.parametrize("threshold", [0.85, 0.75, 0.5])
def test_stop_rule_returns_the_last_round_above_the_line(model, threshold):
    cfg = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=10, threshold=threshold)
    res = magnitude_prune(model, one_minus_sparsity, cfg)
    seq = expected_sparsities(0.1, 10)
    rounds = max([0] + [r + 1 for r, s in enumerate(seq) if all(1 - x >= threshold for x in seq[: r + 1])])
    assert res.mask.meta.rounds == rounds
    assert sparsity(res.mask.weights) == pytest.approx(seq[rounds - 1], abs=0)
    assert res.score >= threshold * res.unpruned_score
    assert len(res.history) == rounds + 2  # round 0, the accepted rounds, the one that fell below
    assert not res.history[-1]["accepted"]


def test_all_rounds_above_the_line_keep_the_last_round(model):
    cfg = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=10, threshold=0.0)
    res = magnitude_prune(model, one_minus_sparsity, cfg)
    assert res.mask.meta.rounds == 10  # Prasanna et al. 2020 returned round 9's mask here
    assert sparsity(res.mask.weights) == pytest.approx(1 - 0.9**10, abs=1e-3)


class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_gives_the_identical_masks(model, tmp_path):
    cfg = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=10, threshold=0.7)
    full = magnitude_prune(model, one_minus_sparsity, cfg)

    def kill_at_round_2(entry):
        if entry["round"] == 2:
            raise Killed

    state = store.Checkpoint(tmp_path / "rounds.pt", "mask:test/abc")
    with pytest.raises(Killed):
        magnitude_prune(model, one_minus_sparsity, cfg, checkpoint=state, on_round=kill_at_round_2)
    assert state.file.is_file()
    calls = []
    resumed = magnitude_prune(
        model, lambda m: calls.append(1) or one_minus_sparsity(m), cfg, checkpoint=state
    )
    assert len(calls) == len(full.history) - 3  # neither the unpruned model nor rounds 1-2 again
    assert all(a.equals(b) for a, b in zip(full.by_method.values(), resumed.by_method.values(), strict=True))
    assert resumed.history == full.history


def test_resume_with_other_settings_or_identity_starts_fresh(model, tmp_path):
    """A state of other settings (or of another artifact: other examples, so another unpruned score)
    is never resumed from: the search starts over and ends as an uninterrupted one (issue 13)."""

    def kill_at_round_2(entry):
        if entry["round"] == 2:
            raise Killed

    killed = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=10, threshold=0.0)
    file = tmp_path / "rounds.pt"
    with pytest.raises(Killed):
        magnitude_prune(
            model,
            one_minus_sparsity,
            killed,
            checkpoint=store.Checkpoint(file, "a"),
            on_round=kill_at_round_2,
        )
    other = PruningConfig(weight_fraction_per_round=0.2, weight_rounds=3, threshold=0.5)
    straight = magnitude_prune(model, one_minus_sparsity, other)
    calls = []
    fresh = magnitude_prune(
        model,
        lambda m: calls.append(1) or one_minus_sparsity(m),
        other,
        checkpoint=store.Checkpoint(file, "a"),
    )
    assert len(calls) == len(straight.history)  # the unpruned model and every round again
    assert fresh.history == straight.history
    assert all(
        a.equals(b) for a, b in zip(straight.by_method.values(), fresh.by_method.values(), strict=True)
    )

    # same settings, another identity (another evaluation: the baseline of other examples)
    with pytest.raises(Killed):
        magnitude_prune(
            model,
            one_minus_sparsity,
            killed,
            checkpoint=store.Checkpoint(file, "a"),
            on_round=kill_at_round_2,
        )
    plain = magnitude_prune(model, one_minus_sparsity, killed)
    halved = magnitude_prune(
        model, lambda m: one_minus_sparsity(m) / 2, killed, checkpoint=store.Checkpoint(file, "b")
    )
    assert halved.unpruned_score == 0.5  # its own baseline, not the killed run's 1.0
    assert [h["score"] for h in halved.history] == pytest.approx([h["score"] / 2 for h in plain.history])
    assert halved.mask.equals(plain.mask)


def test_masks_round_trip_through_save_and_load(model, tmp_path):
    cfg = PruningConfig(weight_fraction_per_round=0.1, weight_rounds=3, threshold=0.0)
    meta = MaskMeta(model_id="tiny", task="toy", lang="xx", seed=0)
    res = magnitude_prune(model, one_minus_sparsity, cfg, meta=meta)
    expect = {
        "num_layers": LAYERS,
        "num_heads": HEADS,
        "config_hash": config_hash(model),
        "param_shapes": prunable_shapes(model),
    }
    for mask in res.by_method.values():
        path = mask.save(tmp_path / mask.meta.method)
        back = Mask.load(path, expect=expect)
        assert back.equals(mask)
        assert (back.meta.method, back.meta.lang, back.meta.rounds) == (mask.meta.method, "xx", 3)
    assert Mask.load(tmp_path / "magnitude", expect=expect).meta.extra["history"] == res.history


# ---- IMP with rewinding


def toy_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable: the label is which of two marker tokens sits at position 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, SEQ), generator=g)
    labels = torch.arange(n) % 2
    ids[:, 1] = torch.where(labels == 1, 3, 4)
    ids[:, 0] = 2
    return ids, labels


class ToyTrainer:
    """A minimal train_fn honouring the Segment contract; records losses and checks the mask holds."""

    def __init__(self, batch_size: int = 8, lr: float = 1e-3) -> None:
        self.ids, self.labels = toy_data()
        self.batch_size, self.lr = batch_size, lr
        self.losses: list[list[float]] = []
        self.zero_sets: list[dict[str, torch.Tensor]] = []

    def zeros(self, model) -> dict[str, torch.Tensor]:
        return {n: w.detach() == 0 for n, w in prunable_weights(model).items()}

    def __call__(self, model, seg: Segment) -> float:
        torch.manual_seed(seg.index)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.01)  # new per segment
        steps_per_epoch = math.ceil(len(self.ids) / self.batch_size)
        order = torch.randperm(len(self.ids), generator=torch.Generator().manual_seed(seg.index))
        start_zeros = self.zeros(model)
        self.zero_sets.append(start_zeros)
        losses = []
        model.train()
        for step in range(seg.steps or steps_per_epoch):
            i = order[(step % steps_per_epoch) * self.batch_size :][: self.batch_size]
            loss = model(input_ids=self.ids[i], labels=self.labels[i]).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            seg.after_step()
            now = self.zeros(model)
            assert all(bool(now[n][z].all()) for n, z in start_zeros.items())  # the mask stays off
            losses.append(loss.item())
        model.eval()
        self.losses.append(losses)
        return losses[-1]


def test_imp_reaches_the_schedule_and_rewinds_kept_weights(model):
    cfg = PruningConfig(imp_prune_every=3, imp_final_sparsity=0.6)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = ToyTrainer()
    res = imp_prune(model, pretrained, trainer, cfg, num_events=3)
    assert [h["sparsity"] for h in res.history] == [round(s * TOTAL) / TOTAL for s in (0.2, 0.4, 0.6)]
    assert sparsity(res.mask.weights) == pytest.approx(0.6, abs=1 / TOTAL)
    assert all(len(loss) == 3 for loss in trainer.losses)
    for a, b in zip(trainer.zero_sets, trainer.zero_sets[1:], strict=False):  # nested: pruned stays pruned
        assert all(bool(b[n][z].all()) for n, z in a.items())
    state = model.state_dict()
    for name, keep in res.mask.weights.items():
        assert torch.equal(state[name][keep], pretrained[name][keep])
        assert bool((state[name][~keep] == 0).all())
    others = [k for k in pretrained if k not in res.mask.weights]
    assert all(torch.equal(state[k], pretrained[k]) for k in others)
    assert res.mask.meta.method == "imp"


def test_imp_resumes_after_a_kill_to_the_identical_mask(tmp_path):
    cfg = PruningConfig(imp_prune_every=2, imp_final_sparsity=0.5)
    full = imp_prune(tiny_model(dropout=0.1), None, ToyTrainer(), cfg, num_events=3)

    def kill_after_event_1(entry):
        if entry["event"] == 1:
            raise Killed

    state = store.Checkpoint(tmp_path / "rounds.pt", "mask:test/imp")
    with pytest.raises(Killed):
        imp_prune(
            tiny_model(dropout=0.1),
            None,
            ToyTrainer(),
            cfg,
            num_events=3,
            checkpoint=state,
            on_event=kill_after_event_1,
        )
    trainer = ToyTrainer()
    resumed = imp_prune(tiny_model(dropout=0.1), None, trainer, cfg, num_events=3, checkpoint=state)
    assert len(trainer.losses) == 2
    assert resumed.mask.equals(full.mask)
    assert resumed.history == full.history

    # another schedule on the same file starts fresh and ends as an uninterrupted run of its own
    other = PruningConfig(imp_prune_every=2, imp_final_sparsity=0.3)
    want = imp_prune(tiny_model(dropout=0.1), None, ToyTrainer(), other, num_events=2)
    trainer = ToyTrainer()
    got = imp_prune(tiny_model(dropout=0.1), None, trainer, other, num_events=2, checkpoint=state)
    assert len(trainer.losses) == 2
    assert got.mask.equals(want.mask) and got.history == want.history


def test_imp_num_events():
    # Foroutan et al. 2022: imp_rate (10%) of the original weights per event, to imp_final_sparsity
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.5)) == 5
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.3, imp_rate=0.1)) == 3


def test_rand_init_reinitialises_a_loaded_model_and_trains(tmp_path):
    tiny_model(seed=5).save_pretrained(tmp_path / "pre")
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "pre").eval()
    pretrained = {k: v.clone() for k, v in loaded.state_dict().items()}
    again = BertForSequenceClassification.from_pretrained(tmp_path / "pre")
    reinit_weights(again, seed=3)
    cfg = PruningConfig(imp_prune_every=24, imp_final_sparsity=0.3)
    trainer = ToyTrainer(lr=3e-3)
    res = imp_prune(loaded, None, trainer, cfg, num_events=1, weight_init="rand", seed=3)
    state = loaded.state_dict()
    name = next(iter(res.mask.weights))
    assert not torch.equal(state[name], pretrained[name])  # _is_hf_initialized did not block the re-init
    keep = res.mask.weights[name]
    assert torch.equal(state[name][keep], again.state_dict()[name][keep])  # seeded: same init twice
    losses = trainer.losses[0]
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    assert res.mask.meta.extra["weight_init"] == "rand"


def test_imp_mask_round_trips(model, tmp_path):
    cfg = PruningConfig(imp_prune_every=1, imp_final_sparsity=0.5)
    res = imp_prune(model, None, ToyTrainer(), cfg, num_events=2)
    back = Mask.load(res.mask.save(Path(tmp_path) / "imp"), expect={"param_shapes": prunable_shapes(model)})
    assert back.equals(res.mask)
