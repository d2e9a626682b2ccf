"""LAPE's released language-neuron files (Tang et al. 2024) as xsub masks: round trip, meta, refusals."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xsub.mask import MaskError
from xsub.mask_import import LAPE_LANGS, import_lape_neurons

INTER = 16


class Opaque:
    """A harmless custom class: unpickling it would need arbitrary imports, so it must be refused."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("mask "), msg
    for n in needles:
        assert n in msg, msg


def lape_file(path: Path, neurons: list[list[list[int]]]) -> Path:
    """Write [languages][layers] neuron indices exactly as identify.py saves them (sorted LongTensors)."""
    torch.save([[torch.tensor(sorted(ix)).long() for ix in layers] for layers in neurons], path)
    return path


def refused(path: Path, **kw) -> pytest.ExceptionInfo:
    kw = {"num_heads": 2, "intermediate_size": INTER, **kw}
    with pytest.raises(MaskError) as e:
        import_lape_neurons(path, **kw)
    return e


# [languages][layers] of neuron indices, one layer empty as in the released files
NEURONS = [[[0, 3], [], [15]], [[3], [1, 2, 4], []], [[], [], [0, 7, 8]]]


def test_round_trip_and_meta(tmp_path: Path) -> None:
    p = lape_file(tmp_path / "tiny.neuron.pth", NEURONS)
    masks = import_lape_neurons(
        p, num_heads=2, intermediate_size=INTER, langs=["de", "sw", "fr"], num_layers=3, model_id="m", seed=4
    )
    assert list(masks) == ["de", "sw", "fr"]
    for (lang, m), layers in zip(masks.items(), NEURONS):
        assert m.heads.shape == (3, 2) and bool(m.heads.all())
        assert m.mlp is not None and m.mlp.shape == (3, INTER) and m.mlp.dtype == torch.bool
        for layer, ix in enumerate(layers):
            assert torch.where(~m.mlp[layer])[0].tolist() == ix  # exactly the neurons are off, all else on
        meta = m.meta
        assert (meta.method, meta.lang, meta.model_id, meta.seed) == ("lape", lang, "m", 4)
        assert meta.extra["imported_from"] == {
            "path": str(p),
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        assert meta.extra["neurons_per_layer"] == [len(ix) for ix in layers]
        assert meta.extra["language_neurons"] == sum(map(len, layers))
        assert meta.extra["languages"] == ["de", "sw", "fr"]
    other = import_lape_neurons(
        p, num_heads=2, intermediate_size=INTER, method="lape-0.01", langs=list("abc")
    )
    assert other["b"].meta.method == "lape-0.01"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(1, 7).flatmap(
        lambda n_lang: st.integers(1, 4).flatmap(
            lambda n_layer: st.lists(
                st.lists(st.lists(st.integers(0, INTER - 1), max_size=6), min_size=n_layer, max_size=n_layer),
                min_size=n_lang,
                max_size=n_lang,
            )
        )
    )
)
def test_neurons_are_exactly_the_false_entries(tmp_path: Path, neurons: list[list[list[int]]]) -> None:
    p = lape_file(tmp_path / "h.neuron.pth", neurons)  # duplicates inside a layer: set semantics
    masks = import_lape_neurons(p, num_heads=3, intermediate_size=INTER)
    assert list(masks) == list(LAPE_LANGS[: len(neurons)])
    for m, layers in zip(masks.values(), neurons):
        want = torch.ones(len(layers), INTER, dtype=torch.bool)
        for layer, ix in enumerate(layers):
            want[layer, ix] = False
        assert torch.equal(m.mlp, want) and bool(m.heads.all())
        assert m.meta.extra["neurons_per_layer"] == [len(set(ix)) for ix in layers]
        assert m.meta.extra["language_neurons"] == sum(len(set(ix)) for ix in layers)


def test_bloom_six_languages(tmp_path: Path) -> None:
    p = lape_file(tmp_path / "BLOOM.neuron.pth", [[[i], [], [i + 1]] for i in range(6)])
    masks = import_lape_neurons(p, num_heads=2, intermediate_size=INTER, num_layers=3)
    assert tuple(masks) == LAPE_LANGS[:6] == ("en", "zh", "fr", "es", "vi", "id")
    assert masks["id"].meta.extra["languages"] == list(LAPE_LANGS[:6])
    assert torch.where(~masks["vi"].mlp[2])[0].tolist() == [5]


def test_refuses_missing_and_malformed(tmp_path: Path) -> None:
    assert_one_line(refused(tmp_path / "nope.neuron.pth"), "does not exist")
    for name, obj in {
        "tensor": torch.zeros(3, INTER),
        "flat": [torch.tensor([1, 2])],
        "float": [[torch.tensor([1.0, 2.0])]],
        "2d": [[torch.tensor([[1, 2]])]],
        "bool": [[torch.tensor([True])]],
        "empty": [],
        "nolayers": [[]],
    }.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        assert_one_line(refused(tmp_path / f"{name}.pth"), "not a list of lists of 1-D integer tensors")


def test_refuses_mismatched_layers(tmp_path: Path) -> None:
    p = lape_file(tmp_path / "ragged.pth", [[[1], [2]], [[1], [2], [3]]])
    assert_one_line(refused(p), "different layer counts [2, 3]")
    p = lape_file(tmp_path / "ok.pth", NEURONS)
    assert_one_line(refused(p, num_layers=32), "3-layer model", "32 layers")


def test_refuses_out_of_range_indices(tmp_path: Path) -> None:
    p = lape_file(tmp_path / "big.pth", [[[1], [2]], [[0], [3, INTER + 4]]])
    assert_one_line(refused(p), "zh layer 1", str(INTER + 4), "intermediate_size")
    p = lape_file(tmp_path / "neg.pth", [[[-1, 2], []]])
    assert_one_line(refused(p), "en layer 0", "-1", "intermediate_size")


def test_refuses_bad_langs(tmp_path: Path) -> None:
    p = lape_file(tmp_path / "ok.pth", NEURONS)
    assert_one_line(refused(p, langs=["en", "zh"]), "has 3 languages", "names 2")
    assert_one_line(refused(p, langs=["en", "zh", "en"]), "duplicate", "'en'")
    p = lape_file(tmp_path / "many.pth", [[[1]]] * (len(LAPE_LANGS) + 1))
    assert_one_line(refused(p), f"has {len(LAPE_LANGS) + 1} languages", "langs=")
    with pytest.raises(TypeError):
        import_lape_neurons(p, num_heads=2, intermediate_size=INTER, lang="en")  # lang comes from langs
    with pytest.raises(TypeError):
        import_lape_neurons(p, num_heads=2, intermediate_size=INTER, langs="enzhfr")


def test_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    with open(tmp_path / "obj.neuron.pth", "wb") as fh:
        pickle.dump([[Opaque()]], fh)
    assert_one_line(refused(tmp_path / "obj.neuron.pth"), "not a plain tensor file")
    torch.save([[torch.tensor([1]), Opaque()]], tmp_path / "mixed.neuron.pth")
    assert_one_line(refused(tmp_path / "mixed.neuron.pth"), "not a plain tensor file")
