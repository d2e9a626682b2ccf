"""Decoder LLM families: gates on tiny random configs of every supported family, built offline.

For each family (Llama with GQA, Mistral, Qwen2, Qwen3, Gemma 1/2/3, Cohere/Aya, Cohere2, OLMo 2,
Phi-3, BLOOM, XGLM, OPT, GPT-2/mGPT, Phi):
- gate 1 is the identity (gates attached and open, and open but grad-tracked so the multiply runs);
- gate 0 on a head equals zeroing that head's input columns of the output projection by weight surgery
  (an independent way of removing it), and equals a hand-written pre-hook exactly; the same for MLP
  units (columns of the down projection) and, with GQA, for a key/value group;
- gradients w.r.t. the gates match central finite differences (float64);
- the importance pass gives parameters no gradient.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from xsub.metrics import TaskMetric
from xsub.model import (
    attach_gates,
    encoder_layers,
    gate_shape,
    is_decoder,
    kv_group_of_heads,
    model_family,
    num_kv_heads,
)
from xsub.pruning.importance import importance

transformers.logging.set_verbosity_error()

V, L, H, D, INTER = 64, 2, 4, 32, 48
GQA = dict(
    hidden_size=D, intermediate_size=INTER, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2
)
SPECIALS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES: dict[str, dict] = {
    "llama": GQA,
    "mistral": GQA,
    "qwen2": GQA,
    "qwen3": {**GQA, "head_dim": 16},  # head_dim set explicitly: H·d = 64 != hidden 32
    "gemma": {**GQA, "head_dim": 8},
    "gemma2": {**GQA, "head_dim": 16},
    "gemma3_text": {**GQA, "head_dim": 16},
    "cohere": GQA,  # Command-R / Aya 23
    "cohere2": GQA,
    "olmo2": GQA,
    "phi3": GQA,
    "bloom": dict(hidden_size=D, n_layer=L, n_head=H),
    "xglm": dict(d_model=D, ffn_dim=INTER, num_layers=L, attention_heads=H),
    "opt": dict(
        hidden_size=D, ffn_dim=INTER, num_hidden_layers=L, num_attention_heads=H, word_embed_proj_dim=D
    ),
    "gpt2": dict(n_embd=D, n_layer=L, n_head=H, n_inner=INTER),  # mGPT's architecture
    "phi": dict(hidden_size=D, intermediate_size=INTER, num_hidden_layers=L, num_attention_heads=H),
}
HEAD_DIM = {"qwen3": 16, "gemma": 8, "gemma2": 16, "gemma3_text": 16}
GROUPED = [f for f, kw in FAMILIES.items() if kw.get("num_key_value_heads", H) < H]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(model_type: str, attn: str = "sdpa", dtype: torch.dtype = torch.float32) -> nn.Module:
    config = AutoConfig.for_model(model_type, vocab_size=V, **SPECIALS, **FAMILIES[model_type])
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
        except ValueError as e:  # BLOOM and Gemma 2 have no sdpa path in transformers 5: eager only
            assert attn == "sdpa" and "scaled_dot_product_attention" in str(e)
            model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.to(dtype).eval()


def batch() -> dict[str, torch.Tensor]:
    """Two rows, the second right-padded (exercises the attention mask)."""
    ids = torch.randint(3, V, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = 0, 0
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def logits(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    return out * b["attention_mask"][..., None]  # padded positions are not compared


def _zero_input_columns(module: nn.Module, cols: list[int]) -> None:
    """Weight surgery: the projection ignores these input features (Linear: columns; Conv1D: rows)."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight[:, cols] = 0
        else:  # GPT-2 Conv1D, weight [in, out]
            module.weight[cols, :] = 0


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_adapter_shape(model_type: str) -> None:
    model = tiny(model_type)
    assert is_decoder(model) and model_family(model)
    shape = gate_shape(model)
    head_dim = HEAD_DIM.get(model_type, D // H)
    inter = 4 * D if model_type == "bloom" else INTER
    assert tuple(shape) == (L, H, head_dim, inter)
    kv = FAMILIES[model_type].get("num_key_value_heads", H)
    assert num_kv_heads(model) == kv
    assert kv_group_of_heads(model) == [h // (H // kv) for h in range(H)]
    layers = encoder_layers(model)
    assert len(layers) == L and all(lm.attn_in for lm in layers)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@torch.no_grad()
def test_gate_one_is_identity(model_type: str, attn: str) -> None:
    model, b = tiny(model_type, attn), batch()
    ref = logits(model, b)
    with attach_gates(model, units=True, groups=True) as gates:
        assert torch.equal(logits(model, b), ref)  # open gates skip the multiply
        gates.requires_grad_(True)  # ... and forced through it, still the identity
        with torch.enable_grad():
            assert torch.allclose(logits(model, b), ref, atol=1e-6, rtol=0)
        gates.requires_grad_(False)
    assert torch.equal(logits(model, b), ref)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@torch.no_grad()
def test_head_gate_zero_equals_zeroing_the_slice(model_type: str) -> None:
    model, b = tiny(model_type), batch()
    d = gate_shape(model).head_dim
    layer, head = 1, 2
    with attach_gates(model) as gates:
        gates.head[layer, head] = 0
        gated = logits(model, b)
    out_proj = encoder_layers(model)[layer].attn_out

    def zero_slice(module: nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., head * d : (head + 1) * d] = 0
        return (x, *args[1:])

    handle = out_proj.register_forward_pre_hook(zero_slice)
    by_hook = logits(model, b)
    handle.remove()
    assert torch.equal(gated, by_hook)
    ref = logits(model, b)
    _zero_input_columns(out_proj, list(range(head * d, (head + 1) * d)))
    surgery = logits(model, b)
    assert not torch.allclose(gated, ref, atol=1e-4)
    assert torch.allclose(gated, surgery, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@torch.no_grad()
def test_mlp_unit_gate_zero_equals_zeroing_down_projection_columns(model_type: str) -> None:
    model, b = tiny(model_type), batch()
    units = [3, 4, 10]
    with attach_gates(model, units=True) as gates:
        gates.mlp_units[0, units] = 0
        gated = logits(model, b)
    ref = logits(model, b)
    _zero_input_columns(encoder_layers(model)[0].ffn_out, units)
    assert not torch.allclose(gated, ref, atol=1e-5)
    assert torch.allclose(gated, logits(model, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", GROUPED)
@torch.no_grad()
def test_kv_group_gate_zero_equals_zeroing_its_query_heads(model_type: str) -> None:
    model, b = tiny(model_type), batch()
    with attach_gates(model, groups=True) as gates:
        gates.kv_group[1, 1] = 0
        grouped = logits(model, b)
        gates.kv_group[1, 1] = 1
        members = [h for h, g in enumerate(kv_group_of_heads(model)) if g == 1]
        assert members == [2, 3]
        gates.head[1, members] = 0
        by_heads = logits(model, b)
    assert torch.equal(grouped, by_heads)


# Families whose float64 forward is float64 throughout: the check is entry by entry at 1e-6. The others
# compute RMSNorm (Llama layout) or the softmax (BLOOM) in float32 even in a float64 model, which puts
# ~1e-7 relative noise on the loss: there the check is the directional derivative along sign(grad) of a
# whole part (a large signal) at 1e-3, plus the largest entries at 2e-2. XGLM builds its attention bias
# from the float32 range and cannot run in float64: float32 noise allows the directional check only (1e-2).
EXACT = ("gpt2", "opt", "phi")


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_gate_gradients_match_finite_differences(model_type: str) -> None:
    dtype = torch.float32 if model_type == "xglm" else torch.float64
    model, b = tiny(model_type, "sdpa", dtype), batch()
    grouped = model_type in GROUPED
    parts = ("head", "mlp_units", "kv_group") if grouped else ("head", "mlp_units")
    gen = torch.Generator().manual_seed(0)
    with attach_gates(model, units=True, groups=grouped) as gates:
        for p in model.parameters():
            p.requires_grad_(False)
        gates.to(dtype=dtype).requires_grad_(True)
        with torch.no_grad():  # a generic point, not only the identity
            gates.head.copy_(0.7 + 0.3 * torch.rand(gates.head.shape, generator=gen, dtype=dtype))

        def loss() -> float | torch.Tensor:  # in the model's dtype (the models' own loss upcasts to float32)
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            return nn.functional.cross_entropy(
                out[:, :-1].reshape(-1, out.shape[-1]), b["labels"][:, 1:].reshape(-1), ignore_index=-100
            )

        loss().backward()

        def central(g: torch.Tensor, step: torch.Tensor) -> float:
            with torch.no_grad():
                g.add_(step)
                up = float(loss())
                g.sub_(2 * step)
                down = float(loss())
                g.add_(step)
            return (up - down) / 2

        exact = model_type in EXACT
        eps = 1e-6 if exact else (1e-2 if dtype == torch.float32 else 1e-3)
        rel_along = 1e-6 if exact else (1e-2 if dtype == torch.float32 else 1e-3)
        rel_entry = 1e-6 if exact else 2e-2
        for part in parts:
            g = gates.tensors()[part]
            grad = g.grad.detach().clone()
            direction = grad.sign()
            along = central(g, eps * direction) / eps
            assert along == pytest.approx(float((grad * direction).sum()), rel=rel_along), part
            if dtype == torch.float32:
                continue
            largest = torch.topk(grad.abs().flatten(), 2).indices
            for flat in largest.tolist():
                step = torch.zeros_like(g)
                step.view(-1)[flat] = eps
                numeric = central(g, step) / eps
                assert grad.view(-1)[flat].item() == pytest.approx(numeric, rel=rel_entry), (
                    part,
                    flat,
                )


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_importance_gives_parameters_no_gradient(model_type: str) -> None:
    model, b = tiny(model_type), batch()
    with attach_gates(model, groups=model_type in GROUPED) as gates:
        parts = ("head", "kv_group") if model_type in GROUPED else ("head",)
        result = importance(
            model,
            gates,
            [b, b],
            TaskMetric("clm"),
            "cpu",
            parts=parts,
        )
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert result.head.shape == (L, H) and torch.isfinite(result.head).all() and result.head.max() == 1
    if model_type in GROUPED:
        assert result.kv_group.shape == (L, 2)
    assert result.score > 1  # a perplexity over the predicted tokens
