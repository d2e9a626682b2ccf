"""LinearCKA (feature-space, streamed) against the textbook Gram formulas, its invariances, its
cross-process merging, and pooled_hidden_states on a tiny BERT."""

from __future__ import annotations

import itertools
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xsub.analysis.cka import pooled_hidden_states
from xsub.cka import LinearCKA, gram_cka

F64 = torch.float64
KINDS = (("linear", False), ("debiased", True))


def data(seed: int, layers: int, n: int, dim: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """[layers, n, dim] with some shared structure between layers, so CKA is far from 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, dim, generator=g, dtype=F64)
    out = torch.stack(
        [base * (k + 1) ** -0.5 + torch.randn(n, dim, generator=g, dtype=F64) for k in range(layers)]
    )
    return out.to(dtype)


def related(x: torch.Tensor, seed: int, layers: int, dim: int) -> torch.Tensor:
    """Layers that depend on x (linearly and not), plus noise."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[1]
    mix = torch.randn(x.shape[0] * x.shape[2], layers * dim, generator=g, dtype=F64)
    flat = x.double().transpose(0, 1).reshape(n, -1)
    y = (flat @ mix + flat.square() @ mix.flip(0)).reshape(n, layers, dim).transpose(0, 1)
    return y + 3 * torch.randn(layers, n, dim, generator=g, dtype=F64)


def streamed(xs: torch.Tensor, ys: torch.Tensor, sizes: list[int] | None = None) -> dict[str, torch.Tensor]:
    metric = LinearCKA(xs.shape[0], xs.shape[2], ys.shape[0], ys.shape[2])
    start = 0
    for size in sizes or [xs.shape[1]]:
        metric.update(xs[:, start : start + size], ys[:, start : start + size])
        start += size
    assert start == xs.shape[1]
    return metric.compute()


def reference(xs: torch.Tensor, ys: torch.Tensor, debiased: bool) -> torch.Tensor:
    return torch.tensor([[gram_cka(x, y, debiased) for y in ys] for x in xs], dtype=F64)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6, atol: float = 1e-9
) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("sizes", [[41], [5, 1, 13, 22], [2, 2, 30, 7]])
def test_streamed_equals_gram_formulas(sizes: list[int], offset: float) -> None:
    xs = data(0, 3, 41, 5)
    ys = related(xs, 1, 2, 4)
    shift_x = offset * (1 + torch.rand(3, 1, 5, generator=torch.Generator().manual_seed(2), dtype=F64))
    out = streamed(xs + shift_x, ys - offset, sizes)
    for kind, debiased in KINDS:
        # the literal Gram formulas would cancel at +1000, so the reference sees the unshifted data;
        # CKA is translation invariant (test_unbiased_hsic_is_translation_invariant)
        assert_close(out[kind], reference(xs, ys, debiased))
    assert out["linear"].shape == (3, 2) and out["linear"].dtype == F64


def test_every_layer_pair() -> None:
    xs = data(3, 4, 30, 3)
    ys = related(xs, 4, 3, 7)
    out = streamed(xs, ys, [9, 21])
    for kind, debiased in KINDS:
        assert out[kind].shape == (4, 3)
        for i, j in itertools.product(range(4), range(3)):
            assert out[kind][i, j].item() == pytest.approx(
                gram_cka(xs[i], ys[j], debiased), rel=1e-6, abs=1e-9
            )


def test_float32_inputs_are_promoted_exactly() -> None:
    xs = (data(5, 2, 50, 6) + 300).float()
    ys = related(xs - 300, 6, 2, 3).float()
    out = streamed(xs, ys, [20, 30])
    for kind, debiased in KINDS:
        assert_close(out[kind], reference(xs.double() - 300, ys.double(), debiased))


def hsic_u_statistic(x: torch.Tensor, y: torch.Tensor) -> float:
    """Song et al. (2012): the U-statistic over ordered quadruples of distinct indices."""
    k, m = (x @ x.T).tolist(), (y @ y.T).tolist()
    n = len(k)
    total = sum(
        k[i][j] * m[i][j] + k[i][j] * m[q][r] - 2 * k[i][j] * m[i][q]
        for i, j, q, r in itertools.permutations(range(n), 4)
    )
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def test_unbiased_hsic_is_translation_invariant() -> None:
    """The debiased estimator (closed form, as LinearCKA computes it) is the U-statistic, and
    shifting the features leaves it unchanged -- what lets LinearCKA accumulate around any center."""
    x, y = data(7, 1, 7, 3)[0], data(8, 1, 7, 2)[0] + 0.5 * data(7, 1, 7, 3)[0][:, :2]
    hsic = hsic_u_statistic(x, y)
    shifted = hsic_u_statistic(x + torch.tensor([3.0, -2.0, 5.0], dtype=F64), y - 4)
    assert shifted == pytest.approx(hsic, rel=1e-9)
    metric = LinearCKA(1, 3, 1, 2)
    metric.update(x[None], y[None])
    # the closed form in feature space, with the U-statistic: tr(K̃L̃) etc. at 4 examples
    normed = hsic / (hsic_u_statistic(x, x) * hsic_u_statistic(y, y)) ** 0.5
    assert metric.compute()["debiased"].item() == pytest.approx(normed, rel=1e-9)
    assert gram_cka(x + 7, y - 1, debiased=True) == pytest.approx(normed, rel=1e-9)


sizes = st.tuples(
    st.integers(4, 14), st.integers(1, 3), st.integers(1, 5), st.integers(1, 3), st.integers(1, 5)
)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), shape=sizes)
def test_self_similarity_is_one(seed: int, shape: tuple[int, ...]) -> None:
    n, layers, dim, _, _ = shape
    xs = data(seed, layers, n, dim) + seed % 7
    out = streamed(xs, xs)
    for kind, _ in KINDS:
        assert_close(out[kind].diagonal(), torch.ones(layers, dtype=F64), rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**20),
    shape=sizes,
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-100, 100),
)
def test_orthogonal_and_isotropic_scaling_invariance(
    seed: int, shape: tuple[int, ...], scale: float, offset: float
) -> None:
    n, lx, dx, ly, dy = shape
    xs = data(seed, lx, n, dx)
    ys = related(xs, seed + 1, ly, dy)
    q, _ = torch.linalg.qr(torch.randn(dx, dx, generator=torch.Generator().manual_seed(seed), dtype=F64))
    before = streamed(xs, ys)
    after = streamed(scale * xs @ q + offset, ys)
    for kind, _ in KINDS:
        assert_close(after[kind], before[kind], rtol=1e-7, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), shape=sizes)
def test_symmetric_and_bounded(seed: int, shape: tuple[int, ...]) -> None:
    n, lx, dx, ly, dy = shape
    xs = data(seed, lx, n, dx)
    ys = related(xs, seed + 1, ly, dy)
    forward, backward = streamed(xs, ys), streamed(ys, xs)
    for kind, _ in KINDS:
        assert_close(forward[kind], backward[kind].T, rtol=1e-9, atol=1e-12)
    assert ((forward["linear"] >= -1e-12) & (forward["linear"] <= 1 + 1e-12)).all()
    assert (forward["debiased"].abs() <= 1 + 1e-9).all()  # Cauchy-Schwarz for the U-centered inner product


def test_debiased_needs_four_examples() -> None:
    xs = data(0, 2, 3, 4)
    metric = LinearCKA(2, 4)
    metric.update(xs, xs)
    with pytest.raises(ValueError, match="at least 4 examples"):
        metric.compute()
    with pytest.raises(ValueError, match="at least 4 examples"):
        gram_cka(xs[0], xs[1], debiased=True)


def test_constant_layer_gives_nan() -> None:
    xs = data(1, 3, 12, 4).float()
    xs[1] = 0.1  # e.g. the embedding-layer [CLS] vector under "first" pooling
    out = streamed(xs, xs, [5, 7])
    for kind, _ in KINDS:
        assert out[kind][1].isnan().all() and out[kind][:, 1].isnan().all()
        keep = torch.tensor([0, 2])
        assert out[kind][keep][:, keep].isfinite().all()


def test_reset_and_memory_independent_of_n() -> None:
    metric = LinearCKA(3, 5, 2, 4)
    counts = []
    for n, seed in ((9, 0), (301, 1)):
        metric.reset()
        xs, ys = data(seed, 3, n, 5) + 50, data(seed + 10, 2, n, 4)
        metric.update(xs, ys)
        assert_close(metric.compute()["linear"], reference(xs - 50, ys, False))
        assert all(n not in t.shape for t in metric.metric_state.values())
        counts.append(sum(t.numel() for t in metric.metric_state.values()))
    assert counts[0] == counts[1]
    # the zero defaults are one-element views, not a second copy of the states, also after .to()
    metric.to("cpu")
    assert all(d.stride() == (0,) * d.ndim for k, d in metric._defaults.items() if k != "n")
    metric.reset()
    assert metric.xy.shape == (15, 8) and metric.xy.is_contiguous() and not metric.xy.any()


def test_merge_and_forward_move_centers() -> None:
    """Parts accumulated around different provisional centers combine exactly (merge_state in both
    directions, and forward, which merges each batch's state into the running one)."""
    xs = data(11, 2, 40, 3)
    ys = related(xs, 12, 2, 4)
    xs[:, 25:] += 40  # the second part has a very different first-batch mean
    ys[:, 25:] -= 15
    whole = LinearCKA(2, 3, 2, 4)
    whole.update(xs[:, :25], ys[:, :25])
    whole.update(xs[:, 25:], ys[:, 25:])
    expected = {kind: reference(xs, ys, debiased) for kind, debiased in KINDS}
    for big_into_small in (False, True):
        a, b = LinearCKA(2, 3, 2, 4), LinearCKA(2, 3, 2, 4)
        a.update(xs[:, :25], ys[:, :25])
        b.update(xs[:, 25:], ys[:, 25:])
        merged = b if big_into_small else a
        merged.merge_state(a if big_into_small else b)
        assert int(merged.n) == 40
        for name, value in whole.metric_state.items():  # both keep the bigger part's center
            assert_close(merged.metric_state[name], value, rtol=1e-9, atol=1e-6)
        for kind, _ in KINDS:
            assert_close(merged.compute()[kind], expected[kind])
    stepped = LinearCKA(2, 3, 2, 4)
    for start, stop in ((0, 6), (6, 25), (25, 31), (31, 40)):
        batch = stepped(xs[:, start:stop], ys[:, start:stop])
        assert_close(batch["linear"], reference(xs[:, start:stop], ys[:, start:stop], False))
    for kind, _ in KINDS:
        assert_close(stepped.compute()[kind], expected[kind])


def test_sync_across_processes_with_different_centers() -> None:
    """Two simulated ranks (threads whose gather is a barrier-synchronised all-gather) with different
    first batches compute the CKA of all the data, and keep their own states afterwards."""
    xs = data(21, 2, 30, 3)
    ys = related(xs, 22, 3, 2)
    xs[:, 12:] *= 3
    xs[:, 12:] += 100
    parts = [(0, 12), (12, 30)]
    barrier = threading.Barrier(2, timeout=60)
    slots: list[torch.Tensor | None] = [None, None]

    def gather_for(rank: int):
        def gather(t: torch.Tensor, group=None) -> list[torch.Tensor]:
            slots[rank] = t.clone()
            barrier.wait()
            out = [s.clone() for s in slots]
            barrier.wait()
            return out

        return gather

    metrics = [
        LinearCKA(2, 3, 3, 2, dist_sync_fn=gather_for(rank), distributed_available_fn=lambda: True)
        for rank in range(2)
    ]
    results: list[dict[str, torch.Tensor] | BaseException | None] = [None, None]

    def run(rank: int) -> None:
        try:
            start, stop = parts[rank]
            metrics[rank].update(xs[:, start:stop], ys[:, start:stop])
            results[rank] = metrics[rank].compute()
        except BaseException as err:  # reported below
            barrier.abort()
            results[rank] = err

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rank, result in enumerate(results):
        assert isinstance(result, dict), result
        for kind, debiased in KINDS:
            assert_close(result[kind], reference(xs, ys, debiased))
        assert int(metrics[rank].n) == parts[rank][1] - parts[rank][0]  # unsynced afterwards


def test_bad_shapes() -> None:
    metric = LinearCKA(2, 3, 1, 4)
    with pytest.raises(ValueError, match=r"xs must be \[2, B, 3\]"):
        metric.update(torch.zeros(3, 5, 3), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="same number of examples"):
        metric.update(torch.zeros(2, 5, 3), torch.zeros(1, 6, 4))
    with pytest.raises(ValueError, match="float"):
        metric.update(torch.zeros(2, 5, 3, dtype=torch.long), torch.zeros(1, 5, 4))


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def bert_batch(pad_token: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 60, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    ids[mask == 0] = pad_token
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0])}


def test_pooled_hidden_states(tiny_bert) -> None:
    batch = bert_batch()
    with torch.no_grad():
        hidden = torch.stack(tiny_bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                       output_hidden_states=True).hidden_states)  # fmt: skip
    first = pooled_hidden_states(tiny_bert, batch, "first")
    assert first.shape == (3, 3, 32) and first.dtype == torch.float32
    torch.testing.assert_close(first, hidden[:, :, 0])
    mean = pooled_hidden_states(tiny_bert, batch, "mean")
    assert mean.shape == (3, 3, 32)
    torch.testing.assert_close(mean[:, 2], hidden[:, 2, :2].mean(1))
    torch.testing.assert_close(mean[:, 0], hidden[:, 0].mean(1))
    # tokens under attention_mask = 0 change nothing
    torch.testing.assert_close(pooled_hidden_states(tiny_bert, bert_batch(pad_token=17), "mean"), mean)
    with pytest.raises(ValueError, match="first, mean"):
        pooled_hidden_states(tiny_bert, batch, "max")


def test_pooled_hidden_states_base_model() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    model = BertModel(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=16)).eval()  # fmt: skip
    batch = {k: v for k, v in bert_batch().items() if k != "labels"}
    out = pooled_hidden_states(model, batch, "mean")
    assert out.shape == (3, 3, 32)
    assert not torch.is_grad_enabled() or not out.requires_grad
