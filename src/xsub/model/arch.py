"""Architecture adapters: where each supported family keeps its heads, MLP units and layers.

Gates, magnitude pruning and stitching all need the same handles on a model (the layer list, and in
each layer the Q/K/V projections, the attention output projection whose input is the concatenated head
contexts, and the FFN in/out projections), so they are found here once, per family, from
`config.model_type`; an unsupported type fails with one line before anything is hooked.

Encoders: BERT-style (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT), DistilBERT, the T5 encoder. Decoders
(causal LMs): the Llama layout (Llama 2/3, Mistral, Qwen2/2.5/3, Gemma 1/2/3, Cohere/Aya, OLMo 2:
`self_attn.o_proj`, gated MLP `mlp.down_proj`), Phi-3 (fused `qkv_proj` and `gate_up_proj`), BLOOM
(fused `query_key_value`, ALiBi), XGLM and OPT (`out_proj`, `fc2`), GPT-2 / mGPT (Conv1D `c_attn`,
`c_proj`) and Phi (`dense`, `fc2`). Grouped-query attention: `num_kv_heads` gives the key/value heads;
query head h belongs to group h // (num_heads / num_kv_heads), as `repeat_kv` lays them out.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from xsub.config import ConfigError

# model_type -> family; a family fixes the module paths the gates hook.
MODEL_FAMILIES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "xlm-roberta-xl": "bert",
    "camembert": "bert",
    "electra": "bert",
    "distilbert": "distilbert",
    "t5": "t5",
    "mt5": "t5",
    "umt5": "t5",
    # decoders
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gemma": "llama",
    "gemma2": "llama",
    "gemma3_text": "llama",
    "cohere": "llama",
    "cohere2": "llama",
    "olmo2": "llama",
    "phi3": "phi3",
    "bloom": "bloom",
    "xglm": "xglm",
    "opt": "opt",
    "gpt2": "gpt2",
    "phi": "phi",
}
DECODER_FAMILIES = ("llama", "phi3", "bloom", "xglm", "opt", "gpt2", "phi")

# Attribute paths relative to the base model (layer list) and to one layer (the rest).
_PATHS: dict[str, dict[str, Any]] = {
    "bert": {
        "layers": "encoder.layer",
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "ffn_in": ("intermediate.dense",),
        "ffn_out": "output.dense",
    },
    "distilbert": {
        "layers": "transformer.layer",
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "ffn_in": ("ffn.lin1",),
        "ffn_out": "ffn.lin2",
    },
    "t5": {  # encoder stack only; the decoder of an encoder-decoder model is never gated
        "layers": "encoder.block",
        "query": "layer.0.SelfAttention.q",
        "key": "layer.0.SelfAttention.k",
        "value": "layer.0.SelfAttention.v",
        "attn_out": "layer.0.SelfAttention.o",
        "ffn_in": ("layer.1.DenseReluDense.wi", "layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_1"),
        "ffn_out": "layer.1.DenseReluDense.wo",
        "act": "layer.1.DenseReluDense.act",
    },
    # decoders; "qkv" names a fused Q/K/V projection (query = key = value = None then)
    "llama": {
        "layers": "layers",
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attn_out": "self_attn.o_proj",
        "ffn_in": ("mlp.gate_proj", "mlp.up_proj"),
        "ffn_out": "mlp.down_proj",
        "act": "mlp.act_fn",
    },
    "phi3": {
        "layers": "layers",
        "qkv": "self_attn.qkv_proj",
        "attn_out": "self_attn.o_proj",
        "ffn_in": ("mlp.gate_up_proj",),
        "ffn_out": "mlp.down_proj",
        "act": "mlp.activation_fn",
    },
    "bloom": {
        "layers": "h",
        "qkv": "self_attention.query_key_value",
        "attn_out": "self_attention.dense",
        "ffn_in": ("mlp.dense_h_to_4h",),
        "ffn_out": "mlp.dense_4h_to_h",
    },
    "xglm": {
        "layers": "layers",
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attn_out": "self_attn.out_proj",
        "ffn_in": ("fc1",),
        "ffn_out": "fc2",
    },
    "gpt2": {  # Conv1D: weight [in, out]
        "layers": "h",
        "qkv": "attn.c_attn",
        "attn_out": "attn.c_proj",
        "ffn_in": ("mlp.c_fc",),
        "ffn_out": "mlp.c_proj",
    },
    "phi": {
        "layers": "layers",
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attn_out": "self_attn.dense",
        "ffn_in": ("mlp.fc1",),
        "ffn_out": "mlp.fc2",
    },
}


_PATHS["opt"] = {**_PATHS["xglm"], "layers": "decoder.layers"}  # OPT's layers are XGLM's, one level down

# --------------------------------------------------------------------------------------------------
# Discovery


def model_family(model_or_config: PreTrainedModel | PretrainedConfig) -> str:
    """Family of a model from `config.model_type`; unsupported types fail here, before any hooking."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FAMILIES:
        raise ConfigError(
            f"model_type '{model_type}' is not supported by xsub gates; "
            f"supported: {', '.join(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[model_type]


def is_decoder(model_or_config: PreTrainedModel | PretrainedConfig) -> bool:
    """A causal-LM family (gated on its decoder stack)."""
    return model_family(model_or_config) in DECODER_FAMILIES


def _check_supported_layout(config: PretrainedConfig) -> None:
    """Layouts whose head outputs never pass through the hooked module as one tensor."""
    if (
        config.model_type == "bloom"
        and int(getattr(config, "pretraining_tp", 1)) > 1
        and getattr(config, "slow_but_exact", False)
    ):
        raise ConfigError(
            "BLOOM with slow_but_exact=true multiplies slices of self_attention.dense by hand, past the "
            "head gates; load it with slow_but_exact=false (the default)"
        )


@dataclasses.dataclass(frozen=True)
class LayerModules:
    """Handles on one encoder layer's modules, so pruning, gates and stitching share one discovery."""

    index: int
    layer: nn.Module
    query: nn.Module | None  # None where Q/K/V are one fused projection (`qkv`)
    key: nn.Module | None
    value: nn.Module | None
    attn_out: nn.Module  # input = concatenated head contexts [B, T, H·d] (nn.Linear or GPT-2's Conv1D)
    ffn_in: tuple[nn.Module, ...]  # T5 gated-GELU and gated decoder MLPs have two (wi_0/wi_1, gate/up)
    ffn_out: nn.Module  # input = intermediate activation [B, T, I]; output = FFN output
    qkv: nn.Module | None = None  # fused Q/K/V (BLOOM, GPT-2, Phi-3)
    # gated MLPs only (act(gate)·up): the activation function's module, whose output act(gate) is what
    # LAPE counts; elsewhere the activation output is ffn_out's input and this is None
    act: nn.Module | None = None

    @property
    def attn_in(self) -> tuple[nn.Module, ...]:
        """The projections that read the layer input for attention (Q, K, V or the fused one)."""
        mods = (self.query, self.key, self.value) if self.qkv is None else (self.qkv,)
        return tuple(m for m in mods if m is not None)


def _is_projection(module: Any) -> bool:
    """nn.Linear, or GPT-2's Conv1D (a Linear with a transposed weight)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def in_features(module: nn.Module) -> int:
    """Input width of a projection (nn.Linear, or Conv1D whose weight is [in, out])."""
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    if type(module).__name__ == "Conv1D":
        return int(module.weight.shape[0])
    raise TypeError(f"{type(module).__name__} is not a projection xsub can gate")


def _get(module: nn.Module, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), module)


def _has(module: nn.Module, path: str) -> bool:
    try:
        _get(module, path)
    except AttributeError:
        return False
    return True


def encoder_layers(model: nn.Module) -> list[LayerModules]:
    """Per-layer module handles of the (encoder) stack of a supported model."""
    family = model_family(model)
    _check_supported_layout(model.config)
    paths = _PATHS[family]
    base = getattr(model, "base_model", model)
    layers = _get(base, paths["layers"])
    out = []
    for i, layer in enumerate(layers):
        ffn_in = tuple(
            _get(layer, p) for p in paths["ffn_in"] if _has(layer, p) and _is_projection(_get(layer, p))
        )
        fused = "qkv" in paths
        gated = len(ffn_in) == 2 or family == "phi3"
        act = _get(layer, paths["act"]) if gated and "act" in paths and _has(layer, paths["act"]) else None
        out.append(
            LayerModules(
                index=i,
                layer=layer,
                query=None if fused else _get(layer, paths["query"]),
                key=None if fused else _get(layer, paths["key"]),
                value=None if fused else _get(layer, paths["value"]),
                attn_out=_get(layer, paths["attn_out"]),
                ffn_in=ffn_in,
                ffn_out=_get(layer, paths["ffn_out"]),
                qkv=_get(layer, paths["qkv"]) if fused else None,
                act=act,
            )
        )
    return out


def num_kv_heads(model_or_config: nn.Module | PretrainedConfig) -> int:
    """Key/value heads per layer (GQA: fewer than the query heads; otherwise equal to them)."""
    config = getattr(model_or_config, "config", model_or_config)
    heads = int(config.num_attention_heads)
    kv = getattr(config, "num_key_value_heads", None)
    kv = int(kv) if kv else heads
    if heads % kv:
        raise ConfigError(f"{heads} query heads do not split into {kv} key/value groups")
    return kv


def kv_group_of_heads(model_or_config: nn.Module | PretrainedConfig) -> list[int]:
    """Query head h -> its key/value group (h // heads-per-group, the layout of `repeat_kv`)."""
    config = getattr(model_or_config, "config", model_or_config)
    heads = int(config.num_attention_heads)
    per = heads // num_kv_heads(config)
    return [h // per for h in range(heads)]


class GateShape(NamedTuple):
    num_layers: int
    num_heads: int
    head_dim: int
    intermediate_size: int


def gate_shape(model: nn.Module, layers: list[LayerModules] | None = None) -> GateShape:
    layers = layers if layers is not None else encoder_layers(model)
    num_heads = int(model.config.num_attention_heads)
    first = layers[0]
    return GateShape(
        num_layers=len(layers),
        num_heads=num_heads,
        head_dim=in_features(first.attn_out) // num_heads,
        intermediate_size=in_features(first.ffn_out),
    )
