"""Language neurons: the statistics pass, LAPE's and AP's selection rules, holding units, the control.

- the hooked pass counts act(·) > 0 where LAPE counts it (act(gate) for gated MLPs), and padding
  never counts: a padded batch gives exactly the counts of its rows run one by one;
- the LAPE selection equals a literal, loop-by-loop transcription of identify.py's rule (with ties by
  index), on random probabilities with zero rows, saturated values and ties;
- average precision equals sklearn's average_precision_score (what Kojima et al.'s code calls);
- holding units at 0 equals gate 0; holding them at v puts v into the down projection;
- the random control keeps every layer's count.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_decoders import tiny
from xsub.mask import Mask
from xsub.model import encoder_layers
from xsub.neurons import collect
from xsub.pruning import lang_ap, lape
from xsub.pruning.neuron_masks import language_neurons, neuron_mask, random_per_layer
from xsub.subnetwork import masked, units_fixed

CPU = torch.device("cpu")


def _batch(seed: int = 1, pad_from: int = 5) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    ids[1, pad_from:], mask[1, pad_from:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def _rows(b: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(len(b["input_ids"])):
        n = int(b["attention_mask"][i].sum())
        out.append({k: v[i : i + 1, :n] for k, v in b.items()})
    return out


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "phi3"])
def test_padding_never_counts(model_type: str) -> None:
    model = tiny(model_type)
    b = _batch()
    together = collect(model, [b], CPU, per_text=True)
    apart = collect(model, _rows(b), CPU, per_text=True)
    assert together.tokens == apart.tokens == int(b["attention_mask"].sum())
    assert torch.equal(together.over_zero, apart.over_zero)
    torch.testing.assert_close(together.text_means, apart.text_means, atol=1e-5, rtol=1e-4)


def test_gated_mlp_counts_act_of_gate_not_the_product() -> None:
    """LAPE's activation.py counts SiLU(gate_proj x) > 0; the unit act(gate)·up has another sign."""
    model = tiny("llama")
    b = _rows(_batch())[0]
    seen = {}
    layer = encoder_layers(model)[0]
    h1 = layer.act.register_forward_hook(lambda m, a, out: seen.__setitem__("act", out.detach()))
    h2 = layer.ffn_out.register_forward_pre_hook(lambda m, a: seen.__setitem__("unit", a[0].detach()))
    try:
        stats = collect(model, [b], CPU, per_text=True)
        model(**b)
    finally:
        h1.remove(), h2.remove()
    assert torch.equal(stats.over_zero[0], (seen["act"] > 0).sum((0, 1)))
    assert not torch.equal((seen["act"] > 0), (seen["unit"] > 0))  # the two really differ
    torch.testing.assert_close(stats.text_means[0, 0], seen["unit"][0].mean(0), atol=1e-4, rtol=1e-3)


def _literal_lape(p: torch.Tensor, top_rate: float, filter_rate: float, bar_ratio: float) -> list[set]:
    """identify.py's rule written out element by element (ties by index)."""
    layers, units, langs = p.shape
    values = sorted(p.flatten().tolist())
    tau = values[max(round(len(values) * filter_rate), 1) - 1]
    bar = values[max(round(len(values) * bar_ratio), 1) - 1]
    entropies = []
    for i in range(layers):
        for j in range(units):
            row = p[i, j].tolist()
            total = sum(row)
            q = [x / total if total > 0 else 0.0 for x in row]
            h = -sum(x * math.log(x) for x in q if x > 0)
            if not any(x > tau for x in row):
                h = math.inf
            entropies.append((h, i * units + j))
    chosen = [idx for _, idx in sorted(entropies)[: round(layers * units * top_rate)]]
    return [{divmod(c, units) for c in chosen if p[divmod(c, units)][k] > bar} for k in range(langs)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(1, 4), st.integers(2, 12), st.integers(2, 5)),
    top_rate=st.sampled_from([0.01, 0.1, 0.3, 1.0]),
    ratios=st.sampled_from([(0.95, 0.95), (0.9, 0.8), (0.5, 0.7)]),
)
def test_lape_selection_is_identify_py_rule(seed, shape, top_rate, ratios) -> None:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(shape, generator=g, dtype=torch.float64)
    p = torch.where(torch.rand(shape, generator=g) < 0.2, torch.zeros_like(p), p)  # zero rows occur
    p = torch.where(torch.rand(shape, generator=g) < 0.1, torch.ones_like(p), p)  # saturated values
    p = torch.round(p * 8) / 8  # ties in probabilities and entropies
    got = lape.select(p, top_rate, *ratios)
    want = _literal_lape(p, top_rate, *ratios)
    for k in range(shape[2]):
        assert {tuple(x) for x in got[k].nonzero().tolist()} == want[k]


def test_lape_finds_the_only_language_specific_neuron() -> None:
    p = torch.full((1, 100, 3), 0.5, dtype=torch.float64)
    p[0, 7] = torch.tensor([0.99, 0.01, 0.01])  # fires for language 0 only
    p[0, 50] = torch.tensor([0.0, 0.98, 0.97])  # shared by languages 1 and 2
    member = lape.select(p, top_rate=0.02, filter_rate=0.95, bar_ratio=0.95)
    assert member[0, 0].nonzero().flatten().tolist() == [7]
    assert member[1, 0].nonzero().flatten().tolist() == [50] == member[2, 0].nonzero().flatten().tolist()


def test_average_precision_equals_sklearn() -> None:
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    means = {k: torch.randn(n, 2, 5, generator=g) + shift for k, n, shift in (("a", 6, 0.5), ("b", 9, 0.0))}
    means["a"][:, 0, 0] = means["b"][0, 0, 0]  # ties between a positive and a negative
    ap = lang_ap.average_precision(means, "a")
    scores = torch.cat([means["a"], means["b"]]).reshape(15, -1)
    labels = [1] * 6 + [0] * 9
    want = torch.tensor([average_precision_score(labels, scores[:, j].numpy()) for j in range(10)])
    torch.testing.assert_close(ap.flatten().double(), want.double(), atol=1e-6, rtol=1e-6)


def test_ap_selection_takes_top_and_bottom_k() -> None:
    ap = torch.tensor([[0.9, 0.1, 0.5, 0.8], [0.2, 0.7, 0.05, 0.6]])
    chosen = lang_ap.select(ap, 2)
    assert chosen.nonzero().tolist() == [[0, 0], [0, 1], [0, 3], [1, 2]]


def test_holding_at_zero_is_gate_zero_and_values_reach_the_down_projection() -> None:
    model = tiny("llama")
    b = _batch()
    units = torch.zeros(2, 48, dtype=torch.bool)
    units[0, [1, 5]], units[1, 7] = True, True
    mask = neuron_mask(units, 4, Mask(torch.ones(2, 4)).meta)
    with masked(model, mask):
        gated = model(**b).logits
    with units_fixed(model, units, torch.zeros(2, 48)):
        held = model(**b).logits
    torch.testing.assert_close(held, gated)
    values, seen = torch.randn(2, 48), {}
    layer = encoder_layers(model)[1]
    with units_fixed(model, units, values):
        h = layer.ffn_out.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
        model(**b)
        h.remove()
    # the hold runs first (registered first), so the down projection receives the value everywhere
    assert torch.allclose(seen["x"][..., 7], values[1, 7].expand_as(seen["x"][..., 7]))
    full = model(**b).logits
    assert not torch.allclose(full, held)  # restored on exit, and holding changed something


def test_random_control_keeps_every_layers_count() -> None:
    units = torch.zeros(3, 20, dtype=torch.bool)
    units[0, :5], units[2, 3] = True, True
    mask = neuron_mask(units, 2, Mask(torch.ones(3, 2)).meta)
    control = random_per_layer(mask, seed=3)
    assert language_neurons(control).sum(1).tolist() == [5, 0, 1]
    assert not torch.equal(language_neurons(control), units)
    assert mask.meta.extra["neurons_per_layer"] == [5, 0, 1]
