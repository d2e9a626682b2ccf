"""Architecture adapters: where each supported family keeps its heads, MLP units and layers.

Gates, magnitude pruning and stitching all need the same handles on a model (the encoder layer list, and in
each layer the Q/K/V projections, the attention output projection whose input is the concatenated head
contexts, and the FFN in/out projections), so they are found here once, per family, from
`config.model_type`; an unsupported type fails with one line before anything is hooked.
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
}

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
    },
}


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


@dataclasses.dataclass(frozen=True)
class LayerModules:
    """Handles on one encoder layer's modules, so pruning, gates and stitching share one discovery."""

    index: int
    layer: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear  # input = concatenated head contexts [B, T, H·d]
    ffn_in: tuple[nn.Linear, ...]  # T5 gated-GELU has two (wi_0, wi_1)
    ffn_out: nn.Linear  # input = intermediate activation [B, T, I]; output = FFN output


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
    paths = _PATHS[family]
    base = getattr(model, "base_model", model)
    layers = _get(base, paths["layers"])
    out = []
    for i, layer in enumerate(layers):
        ffn_in = tuple(
            _get(layer, p)
            for p in paths["ffn_in"]
            if _has(layer, p) and isinstance(_get(layer, p), nn.Linear)
        )
        out.append(
            LayerModules(
                index=i,
                layer=layer,
                query=_get(layer, paths["query"]),
                key=_get(layer, paths["key"]),
                value=_get(layer, paths["value"]),
                attn_out=_get(layer, paths["attn_out"]),
                ffn_in=ffn_in,
                ffn_out=_get(layer, paths["ffn_out"]),
            )
        )
    return out


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
        head_dim=first.attn_out.in_features // num_heads,
        intermediate_size=first.ffn_out.in_features,
    )
