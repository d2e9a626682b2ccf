"""The Mask type: file round-trips, refusal of untrusted files, seed-format imports, overlap algebra."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save, save_file

from xsub.mask import Mask, MaskError, MaskMeta
from xsub.mask_import import import_mask

W_Q = "bert.encoder.layer.0.attention.self.query.weight"
W_I = "bert.encoder.layer.1.intermediate.dense.weight"


class Opaque:
    """A harmless custom class: unpickling it would need arbitrary imports, so it must be refused."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def full_mask() -> Mask:
    g = torch.Generator().manual_seed(0)
    return Mask(
        heads=torch.rand(3, 4, generator=g) > 0.5,
        mlp=torch.rand(3, 8, generator=g) > 0.3,
        weights={W_Q: torch.rand(6, 6, generator=g) > 0.5, W_I: torch.rand(8, 6, generator=g) > 0.5},
        meta=MaskMeta(
            model_id="embedded-bert",
            config_hash="abc123",
            task="xnli",
            lang="de",
            seed=2,
            method="heads",
            score_before=0.81,
            score_after=0.74,
            rounds=5,
            extra={"history": [{"round": 1, "score": 0.8, "kept": 130}]},
        ),
    )


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("mask "), msg
    for n in needles:
        assert n in msg, msg


# ---- save / load ---------------------------------------------------------------------------------


def test_round_trip_all_parts(tmp_path: Path) -> None:
    m = full_mask()
    st_path = m.save(tmp_path / "masks" / "seed2.safetensors")
    assert st_path == tmp_path / "masks" / "seed2.safetensors"
    assert (tmp_path / "masks" / "seed2.json").is_file()
    assert not [p for p in (tmp_path / "masks").iterdir() if p.name.startswith(".seed2")]  # no temp leftovers
    back = Mask.load(tmp_path / "masks" / "seed2")
    assert back.equals(m)
    assert back.heads.dtype == torch.bool and back.mlp is not None and back.weights is not None
    assert back.meta == m.meta
    assert back.meta.fraction_kept == pytest.approx(m.fractions())
    assert back.meta.extra["history"][0]["kept"] == 130
    sidecar = json.loads((tmp_path / "masks" / "seed2.json").read_text())
    assert sidecar["shapes"]["heads"] == [3, 4] and sidecar["shapes"][f"weights/{W_Q}"] == [6, 6]
    # expectations that hold pass
    Mask.load(
        st_path,
        expect={
            "num_layers": 3,
            "num_heads": 4,
            "intermediate_size": 8,
            "config_hash": "abc123",
            "param_shapes": {W_Q: (6, 6), W_I: (8, 6), "other": (1,)},
        },
    )


def test_heads_only_round_trip_and_overwrite(tmp_path: Path) -> None:
    m = Mask.ones(2, 3, meta=MaskMeta(lang="en"))
    m.save(tmp_path / "m")
    m2 = Mask(torch.tensor([[1, 0, 1], [0, 0, 1]]), meta=MaskMeta(lang="fr"))
    m2.save(tmp_path / "m.safetensors")  # overwrite in place, atomically
    back = Mask.load(tmp_path / "m.json")
    assert back.equals(m2) and back.meta.lang == "fr" and back.mlp is None and back.weights is None


def test_truncated_file(tmp_path: Path) -> None:
    p = full_mask().save(tmp_path / "x")
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, str(p), "corrupt or truncated")


def test_edited_sidecar(tmp_path: Path) -> None:
    p = full_mask().save(tmp_path / "x")
    js = tmp_path / "x.json"
    side = json.loads(js.read_text())
    side["meta"]["lang"] = "fr"  # hand-edit; sha still matches the tensor file
    js.write_text(json.dumps(side))
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "disagree")
    side["meta"]["lang"] = "de"
    side["sha256"] = "0" * 64
    js.write_text(json.dumps(side))
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "sha256")


def test_mismatched_model(tmp_path: Path) -> None:
    p = full_mask().save(tmp_path / "seed0")
    fix = "prune this model first: python -m xsub stage=prune model=tiny"
    with pytest.raises(MaskError) as e:
        Mask.load(p, expect={"num_layers": 4, "num_heads": 4}, fix=fix)
    assert_one_line(e, str(p), "3×4 model", "4 layers × 4 heads", fix)
    with pytest.raises(MaskError) as e:
        Mask.load(p, expect={"config_hash": "zzz"})
    assert_one_line(e, "abc123", "zzz")
    with pytest.raises(MaskError) as e:
        Mask.load(p, expect={"intermediate_size": 16})
    assert_one_line(e, "MLP units")
    with pytest.raises(MaskError) as e:
        Mask.load(p, expect={"param_shapes": {W_Q: (6, 6), W_I: (6, 8)}})
    assert_one_line(e, W_I)
    with pytest.raises(MaskError) as e:
        Mask.load(p, expect={"param_shapes": {W_Q: (6, 6)}})
    assert_one_line(e, "does not have")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MaskError) as e:
        Mask.load(tmp_path / "nope", fix="make it: python -m xsub stage=prune lang=sw")
    assert_one_line(e, "does not exist", "lang=sw")
    p = full_mask().save(tmp_path / "x")
    (tmp_path / "x.json").unlink()
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "no sidecar")


def test_foreign_files(tmp_path: Path) -> None:
    # random bytes under our name, with a sidecar that vouches for them: safetensors refuses the bytes
    p = full_mask().save(tmp_path / "x")
    junk = np.random.default_rng(0).bytes(300)
    p.write_bytes(junk)
    side = json.loads((tmp_path / "x.json").read_text())
    side["sha256"] = hashlib.sha256(junk).hexdigest()
    (tmp_path / "x.json").write_text(json.dumps(side))
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "not a readable safetensors")
    # a JSON of something else as sidecar (e.g. a model config), and a sidecar that is not JSON
    (tmp_path / "x.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 384}))
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "not an xsub mask sidecar")
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "not JSON")
    # random bytes offered to the importer
    (tmp_path / "r.pkl").write_bytes(junk)
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "r.pkl")
    assert_one_line(e, "neither a torch.save file nor a pickle")
    (tmp_path / "r.npy").write_bytes(junk)
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "r.npy")
    assert_one_line(e, "not a readable .npy")


def test_unsaveable_meta(tmp_path: Path) -> None:
    m = Mask.ones(1, 2, meta=MaskMeta(extra={"f": object()}))
    with pytest.raises(MaskError, match="JSON"):
        m.save(tmp_path / "x")
    assert not (tmp_path / "x.safetensors").exists()


# ---- importers -----------------------------------------------------------------------------------


def test_import_language_specific_subnetworks_pkl(tmp_path: Path) -> None:
    heads = (torch.rand(12, 12, generator=torch.Generator().manual_seed(1)) > 0.4).float()
    torch.save(
        heads, tmp_path / "zh_0.pkl"
    )  # Language-Specific-Subnetworks wrote its .pkl files with torch.save
    m = import_mask(tmp_path / "zh_0.pkl", task="marc", lang="zh", seed=0)
    assert torch.equal(m.heads, heads.bool())
    assert (m.meta.lang, m.meta.method) == ("zh", "imported")
    assert m.meta.extra["imported_from"]["path"].endswith("zh_0.pkl")
    m.save(tmp_path / "zh_0")
    assert Mask.load(tmp_path / "zh_0", expect={"num_layers": 12, "num_heads": 12}).equals(m)
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "zh_0.pkl", num_layers=6, num_heads=12)
    assert_one_line(e, "12×12")


def test_import_npy_and_pt(tmp_path: Path) -> None:
    arr = np.zeros((6, 12), dtype=np.float32)
    arr[:, :3] = 1.0
    np.save(tmp_path / "head_mask.npy", arr)
    m = import_mask(tmp_path / "head_mask.npy")
    assert m.heads.shape == (6, 12) and m.num_heads_kept == 18
    torch.save(torch.from_numpy(arr), tmp_path / "head_mask.pt")
    assert import_mask(tmp_path / "head_mask.pt").equals(m)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "bad.npy")
    assert_one_line(e, "1-D")


def test_import_refuses_object_npy_and_accepts_bare_safetensors(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "obj.npy")
    assert_one_line(e, "object array")
    save_file({"heads": torch.eye(3)}, str(tmp_path / "bare.safetensors"))  # released without our sidecar
    assert torch.equal(import_mask(tmp_path / "bare.safetensors").heads, torch.eye(3, dtype=torch.bool))


def test_load_refuses_float_tensors_even_with_valid_sidecar(tmp_path: Path) -> None:
    p = Mask.ones(2, 2).save(tmp_path / "x")
    side = json.loads((tmp_path / "x.json").read_text())
    blob = save({"heads": torch.ones(2, 2)}, metadata={"meta": json.dumps(side["meta"])})
    p.write_bytes(blob)
    side["sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp_path / "x.json").write_text(json.dumps(side))
    with pytest.raises(MaskError) as e:
        Mask.load(p)
    assert_one_line(e, "dtype torch.float32")


def test_mask_owns_its_tensors() -> None:
    heads = torch.ones(2, 2, dtype=torch.bool)
    m = Mask(heads)
    heads[0, 0] = False
    assert m.num_heads_kept == 4


def test_import_thresholds_at_half(tmp_path: Path) -> None:
    torch.save(torch.tensor([[0.2, 0.5, 0.9]]), tmp_path / "s.pt")
    assert import_mask(tmp_path / "s.pt").heads.tolist() == [[False, True, True]]


def test_import_foroutan_weight_dict(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    q, i = (torch.rand(6, 6, generator=g) > 0.5).float(), (torch.rand(8, 6, generator=g) > 0.5).float()
    torch.save({f"{W_Q}_mask": q, f"{W_I}_mask": i}, tmp_path / "fr_mask.pt")
    m = import_mask(tmp_path / "fr_mask.pt", num_heads=12, lang="fr", method="imp")
    assert set(m.weights) == {W_Q, W_I} and m.heads.shape == (2, 12) and bool(m.heads.all())
    assert torch.equal(m.weights[W_Q], q.bool())
    assert m.fraction("weights") == pytest.approx(float(q.sum() + i.sum()) / (36 + 48))
    remapped = import_mask(tmp_path / "fr_mask.pt", num_heads=12, prefix_map={"bert.": ""})
    assert "encoder.layer.0.attention.self.query.weight" in remapped.weights
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "fr_mask.pt")
    assert_one_line(e, "num_heads")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_import_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    with open(tmp_path / "obj.pkl", "wb") as fh:
        pickle.dump({"mask": Opaque()}, fh)
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "obj.pkl")
    assert_one_line(e, "not a plain tensor file", "torch.save")
    torch.save({"mask": Opaque()}, tmp_path / "obj.pt")
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "obj.pt")
    assert_one_line(e, "not a plain tensor file")
    torch.save({"epoch": torch.tensor(3)}, tmp_path / "ckpt.pt")
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "ckpt.pt")
    assert_one_line(e, "not a '{param}_mask' dict")
    torch.save([torch.ones(2, 2)], tmp_path / "list.pt")
    with pytest.raises(MaskError) as e:
        import_mask(tmp_path / "list.pt")
    assert_one_line(e, "holds a list")


# ---- algebra -------------------------------------------------------------------------------------


def test_per_layer_uses_the_layer_axis() -> None:
    heads = torch.zeros(2, 5, dtype=torch.bool)  # L≠H so the wrong axis gives the wrong shape
    heads[0] = True
    heads[1, :2] = True
    m = Mask(heads)
    assert m.per_layer().tolist() == pytest.approx([1.0, 0.4])
    assert m.fraction_kept == pytest.approx(0.7) and m.num_heads_kept == 7
    fm = full_mask()
    assert fm.per_layer("mlp").shape == (3,) and fm.per_layer("weights").shape == (3,)
    assert bool(torch.isnan(fm.per_layer("weights")[2]))  # layer 2 has no masked parameters


def test_ops_and_meta() -> None:
    a = full_mask()
    b = a.random_like(seed=7)
    both, either, inv = a & b, a | b, ~a
    assert torch.equal(both.heads, a.heads & b.heads) and torch.equal(either.mlp, a.mlp | b.mlp)
    assert torch.equal(inv.weights[W_Q], ~a.weights[W_Q])
    assert inv.meta.method == "not(heads)" and inv.meta.score_after is None
    assert inv.meta.extra["derived"]["op"] == "not" and inv.meta.lang == "de"
    assert both.meta.extra["derived"]["op"] == "and"
    assert b.meta.extra["derived"]["random_seed"] == 7
    assert a.random_like(7).equals(b) and not a.random_like(8).equals(b)
    # an absent part means "not pruned": & keeps the other side's part, | leaves it absent
    h = Mask(a.heads)
    assert (a & h).equals(a) and (h | a).mlp is None
    with pytest.raises(MaskError):
        _ = a & Mask.ones(4, 4)
    with pytest.raises(MaskError):
        _ = a & Mask(a.heads, meta=MaskMeta(config_hash="other"))


def test_jaccard_empty_and_parts() -> None:
    empty = Mask(torch.zeros(2, 2, dtype=torch.bool))
    assert empty.jaccard(empty) == 1.0  # empty ∪ empty: identical, so 1 by definition
    assert empty.jaccard(Mask.ones(2, 2)) == 0.0
    a = full_mask()
    assert a.jaccard(~a, "weights") == 0.0 and a.jaccard(a, "mlp") == 1.0
    with pytest.raises(MaskError):
        Mask.ones(2, 2).jaccard(Mask.ones(2, 2), "mlp")


def test_rejects_non_binary_tensors() -> None:
    with pytest.raises(MaskError):
        Mask(torch.tensor([[0.3, 1.0]]))
    with pytest.raises(MaskError):
        Mask(torch.ones(3, dtype=torch.bool))


@st.composite
def masks(draw: st.DrawFn, shape: tuple[int, int] | None = None) -> Mask:
    L, H = shape or (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    bits = draw(st.lists(st.booleans(), min_size=L * H, max_size=L * H))
    mlp_bits = draw(st.lists(st.booleans(), min_size=L * 3, max_size=L * 3))
    return Mask(torch.tensor(bits).reshape(L, H), torch.tensor(mlp_bits).reshape(L, 3))


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[Mask, Mask]:
    a = draw(masks())
    return a, draw(masks(shape=(a.num_layers, a.num_heads)))


@settings(max_examples=60, deadline=None)
@given(masks())
def test_prop_self_and_complement(m: Mask) -> None:
    assert m.jaccard(m) == 1.0
    if m.num_heads_kept and (~m).num_heads_kept:
        assert m.jaccard(~m) == 0.0
    assert (~~m).equals(m)
    assert (~m).num_heads_kept == m.heads.numel() - m.num_heads_kept


@settings(max_examples=60, deadline=None)
@given(mask_pairs())
def test_prop_jaccard_symmetric_bounded(pair: tuple[Mask, Mask]) -> None:
    a, b = pair
    for part in ("heads", "mlp"):
        j = a.jaccard(b, part)
        assert j == b.jaccard(a, part) and 0.0 <= j <= 1.0


@settings(max_examples=60, deadline=None)
@given(masks(), st.integers(0, 2**31 - 1))
def test_prop_random_like_same_count(m: Mask, seed: int) -> None:
    r = m.random_like(seed)
    assert r.num_heads_kept == m.num_heads_kept
    assert r.num_kept("mlp") == m.num_kept("mlp")
    assert r.heads.shape == m.heads.shape


@settings(max_examples=60, deadline=None)
@given(masks())
def test_prop_per_layer_mean_is_fraction(m: Mask) -> None:
    per = m.per_layer()
    assert per.shape == (m.num_layers,)
    assert bool(((per >= 0) & (per <= 1)).all())
    assert float(per.mean()) == pytest.approx(m.fraction_kept)
    assert m.meta.fraction_kept["heads"] == pytest.approx(m.fraction_kept)
