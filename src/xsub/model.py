"""Load models and tokenizers from any source, and gate attention heads and MLPs through hooks.

transformers 5 removed `head_mask` and `prune_heads`, and a `head_mask=` argument is now silently
ignored, so masks are applied by `Gates`: forward hooks, registered once, that multiply each head's
context vector (the input of the attention output projection) and each FFN's output (or its
intermediate units) by plain tensors. The same tensors, with `requires_grad_`, give ∂loss/∂gate for
importance scores (Michel et al. 2019) without touching the model's parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from xsub import artifacts
from xsub.config import ConfigError
from xsub.data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

AUTO_CLASSES = {
    "classification": AutoModelForSequenceClassification,
    "ner": AutoModelForTokenClassification,
    "mlm": AutoModelForMaskedLM,
}

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
    """Handles on one encoder layer's modules, so pruning, gates and CKA share one discovery."""

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


def _has(module: nn.Module, path: str) -> bool:
    try:
        _get(module, path)
    except AttributeError:
        return False
    return True


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


def model_signature(model: nn.Module) -> dict[str, Any]:
    """The architecture facts a mask depends on; stored with masks to refuse a foreign architecture."""
    shape = gate_shape(model)
    return {
        "model_type": model.config.model_type,
        "num_layers": shape.num_layers,
        "num_heads": shape.num_heads,
        "hidden_size": int(model.config.hidden_size),
        "intermediate_size": shape.intermediate_size,
        "vocab_size": int(model.config.vocab_size),
    }


def config_hash(model: nn.Module) -> str:
    """Short sha256 of the sorted JSON of `model_signature`."""
    blob = json.dumps(model_signature(model), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Gates

GATE_NAMES = ("head", "mlp", "mlp_units")


class Gates:
    """Multiplicative gates on heads [L, H], whole MLPs [L] and optionally MLP units [L, I].

    Plain tensors, not parameters, so no optimizer ever trains them; default all ones. A layer whose
    gate is all ones and does not require grad is skipped (checked once per in-place change, via the
    tensor's version counter), so attached-but-open gates cost one Python call per hook. Values are
    cast to the activation's device and dtype inside the hook (bf16 autocast: the product is bf16,
    the gradient reaches the fp32 gate through the cast). Storage follows the hooked weights' device
    and dtype (after `model.to(...)`, the next forward moves it) unless it requires grad; then use
    `to`. Modify gates with `set`, `reset` or in-place ops — writes via `.data` are not seen.
    """

    def __init__(self, model: nn.Module, units: bool = False) -> None:
        self.model = model
        self.layers = encoder_layers(model)
        self.shape = gate_shape(model, self.layers)
        w = self.layers[0].attn_out.weight
        L, H, _, inter = self.shape
        with torch.inference_mode(False):  # normal tensors even if attached under inference_mode
            self._tensors: dict[str, torch.Tensor | None] = {
                "head": torch.ones(L, H, device=w.device, dtype=w.dtype),
                "mlp": torch.ones(L, device=w.device, dtype=w.dtype),
                "mlp_units": torch.ones(L, inter, device=w.device, dtype=w.dtype) if units else None,
            }
        self._open_cache: dict[str, tuple[int, list[bool]]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for lm in self.layers:
            i = lm.index
            self._handles.append(lm.attn_out.register_forward_pre_hook(functools.partial(self._head_hook, i)))
            self._handles.append(lm.ffn_out.register_forward_hook(functools.partial(self._mlp_hook, i)))
            if units:
                self._handles.append(
                    lm.ffn_out.register_forward_pre_hook(functools.partial(self._units_hook, i))
                )
        model._xsub_gates = self  # type: ignore[assignment]  # one set of hooks per model

    # ---- tensors
    @property
    def head(self) -> torch.Tensor:
        return self._tensors["head"]  # type: ignore[return-value]

    @head.setter
    def head(self, value: torch.Tensor) -> None:
        self.set(head=value)

    @property
    def mlp(self) -> torch.Tensor:
        return self._tensors["mlp"]  # type: ignore[return-value]

    @mlp.setter
    def mlp(self, value: torch.Tensor) -> None:
        self.set(mlp=value)

    @property
    def mlp_units(self) -> torch.Tensor | None:
        return self._tensors["mlp_units"]

    @mlp_units.setter
    def mlp_units(self, value: torch.Tensor) -> None:
        self.set(mlp_units=value)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The present gate tensors by name (live, not copies)."""
        return {k: v for k, v in self._tensors.items() if v is not None}

    def set(
        self,
        head: torch.Tensor | None = None,
        mlp: torch.Tensor | None = None,
        mlp_units: torch.Tensor | None = None,
    ) -> Gates:
        """Copy values in (bool or float); shapes must match exactly."""
        for name, value in (("head", head), ("mlp", mlp), ("mlp_units", mlp_units)):
            if value is None:
                continue
            target = self._tensors[name]
            if target is None:
                raise ValueError("mlp_units gates were not attached; use attach_gates(model, units=True)")
            value = torch.as_tensor(value)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name} gate shape {tuple(value.shape)} != expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)
        return self

    def reset(self) -> Gates:
        """All gates back to one (grad flags kept)."""
        with torch.no_grad():
            for t in self.tensors().values():
                t.fill_(1.0)
        return self

    def requires_grad_(self, requires_grad: bool = True, which: Iterable[str] = GATE_NAMES) -> Gates:
        for name in which:
            t = self._tensors[name]
            if t is not None:
                t.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> None:
        for t in self.tensors().values():
            t.grad = None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gates:
        """Move the gate storage (new leaf tensors: grads are dropped, grad flags kept)."""
        for name, t in list(self._tensors.items()):
            if t is not None:
                self._move(name, device, dtype)
        return self

    def _move(self, name: str, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        t = self._tensors[name]
        with torch.inference_mode(False), torch.no_grad():
            moved = t.detach().to(device=device, dtype=dtype).clone()  # type: ignore[union-attr]
        self._tensors[name] = moved.requires_grad_(t.requires_grad)  # type: ignore[union-attr]
        self._open_cache.pop(name, None)

    def _follow(self, name: str, module: nn.Module) -> None:
        """Keep a gate that needs no grad on the hooked weight's device and dtype (model.to/.double())."""
        t, w = self._tensors[name], module.weight
        if t.requires_grad or not w.is_floating_point():  # type: ignore[union-attr]
            return  # a grad-tracked leaf is never replaced behind the caller's back; it is cast per use
        if t.device != w.device or t.dtype != w.dtype:  # type: ignore[union-attr]
            self._move(name, w.device, w.dtype)

    # ---- hooks
    def _is_open(self, name: str, layer: int) -> bool:
        """Gate of this layer is all ones and needs no grad: the multiply can be skipped."""
        g = self._tensors[name]
        if g.requires_grad:  # type: ignore[union-attr]
            return False
        key = g._version  # type: ignore[union-attr]
        cached = self._open_cache.get(name)
        if cached is None or cached[0] != key:
            rows = (g == 1).reshape(g.shape[0], -1).all(dim=1).tolist()  # type: ignore[union-attr]
            cached = (key, rows)
            self._open_cache[name] = cached
        return cached[1][layer]

    def _gate(self, name: str, layer: int, like: torch.Tensor) -> torch.Tensor:
        g = self._tensors[name][layer]  # type: ignore[index]
        return g.to(device=like.device, dtype=like.dtype)

    def _head_hook(self, layer: int, module: nn.Module, args: tuple) -> tuple | None:
        self._follow("head", module)
        if not args or self._is_open("head", layer):
            return None
        x = args[0]
        g = self._gate("head", layer, x)
        H = self.shape.num_heads
        gated = (x.reshape(*x.shape[:-1], H, -1) * g[:, None]).reshape(x.shape)
        return (gated, *args[1:])

    def _units_hook(self, layer: int, module: nn.Module, args: tuple) -> tuple | None:
        self._follow("mlp_units", module)
        if not args or self._is_open("mlp_units", layer):
            return None
        x = args[0]
        return (x * self._gate("mlp_units", layer, x), *args[1:])

    def _mlp_hook(
        self, layer: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> torch.Tensor | None:
        self._follow("mlp", module)
        if self._is_open("mlp", layer):
            return None
        return output * self._gate("mlp", layer, output)

    # ---- lifetime
    def remove(self) -> None:
        """Remove the hooks; the model behaves as if never gated."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if getattr(self.model, "_xsub_gates", None) is self:
            del self.model._xsub_gates

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> Gates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        kept = int((self.head != 0).sum())
        return f"Gates({self.shape}, heads on {kept}/{self.head.numel()}, attached={self.attached})"


def attach_gates(model: nn.Module, units: bool = False) -> Gates:
    """Gates for `model`, hooks registered once; returns the existing Gates if already attached.

    Asking for unit gates on a model whose gates were attached without them raises: remove first.
    """
    existing: Gates | None = getattr(model, "_xsub_gates", None)
    if existing is not None and existing.attached:
        if units and existing.mlp_units is None:
            raise RuntimeError("gates already attached without mlp_units; call gates.remove() first")
        return existing
    return Gates(model, units=units)


def get_gates(model: nn.Module) -> Gates | None:
    return getattr(model, "_xsub_gates", None)


# --------------------------------------------------------------------------------------------------
# Loading


def _auto_class(kind: str) -> Any:
    if kind not in AUTO_CLASSES:
        raise ConfigError(f"unknown task kind '{kind}'; choose one of: {', '.join(AUTO_CLASSES)}")
    return AUTO_CLASSES[kind]


def _check_kind(config: PretrainedConfig, kind: str, where: str) -> None:
    """Refuse combinations the gates or the heads cannot serve, before loading any weights."""
    family = model_family(config)
    if family == "t5" and kind != "ner":
        raise ConfigError(
            f"{where}: T5-family models are supported encoder-only, i.e. kind=ner "
            f"(T5ForTokenClassification); kind={kind} would need the decoder"
        )


def _head_kwargs(kind: str, num_labels: int | None) -> dict[str, Any]:
    """num_labels=None keeps a saved config's own label count."""
    if kind == "mlm" or num_labels is None:
        return {}
    if num_labels <= 0:
        raise ConfigError(f"kind={kind} needs task.num_labels > 0, got {num_labels}")
    return {"num_labels": num_labels}


def _from_pretrained(
    source: str | Path, kind: str, num_labels: int | None, attn: str, seed: int, where: str
) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(str(source), **_head_kwargs(kind, num_labels))
    _check_kind(config, kind, where)
    with torch.random.fork_rng(devices=[]):  # seeded init of new heads, caller's RNG untouched
        torch.manual_seed(seed)
        model = _auto_class(kind).from_pretrained(str(source), config=config, attn_implementation=attn)
    return model.eval()


def _load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(directory)  # one-line ConfigError naming the fix (e.g. pip install sentencepiece)


def _package_dir(name: str, model_name: str) -> Path:
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(
            f"model {model_name}: python package '{name}' is missing; pip install {name.replace('_', '-')}"
        ) from e
    if not hasattr(module, "get_model_path"):
        raise ConfigError(f"model {model_name}: package '{name}' has no get_model_path()")
    return Path(module.get_model_path())


def default_tokenizer_dir(root: Path) -> Path:
    return artifacts.data_dir(Path(root), "synthetic") / "tokenizer"


def embedded_checkpoint(model_cfg: Any, root: Path) -> Path:
    """Where the embedded model's pretrained weights live (the train stage's save_pretrained dir)."""
    return artifacts.model_dir(Path(root), model_cfg.name, model_cfg.pretrain_task, 0) / "model"


def _require_tokenizer(tok_dir: Path, model_name: str) -> None:
    if not tok_dir.is_dir():
        raise ConfigError(
            f"tokenizer of model {model_name} missing at {tok_dir}; the synthetic data generator "
            f"writes it, e.g.: python -m xsub stage=train task=synth-mlm model={model_name} lang=all"
        )


def _load_embedded(
    model_cfg: Any, kind: str, num_labels: int, root: Path, seed: int, tokenizer_dir: Path | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    attn = model_cfg.attn_implementation or "sdpa"
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else default_tokenizer_dir(root)
    if model_cfg.pretrain_task:
        ckpt = embedded_checkpoint(model_cfg, root)
        if not (ckpt / "config.json").is_file():
            raise ConfigError(
                f"pretrained weights of model {model_cfg.name} missing at {ckpt}; make them with: "
                f"python -m xsub stage=train task={model_cfg.pretrain_task} model={model_cfg.name} lang=all"
            )
        # The checkpoint's own tokenizer (if saved there) is the one its embeddings were trained with.
        if (ckpt / "tokenizer_config.json").is_file():
            tok_dir = ckpt
        _require_tokenizer(tok_dir, model_cfg.name)
        model = _from_pretrained(ckpt, kind, num_labels, attn, seed, f"model {model_cfg.name}")
        log.info("embedded model %s: encoder from %s", model_cfg.name, ckpt)
        return model, _load_tokenizer(tok_dir)
    _require_tokenizer(tok_dir, model_cfg.name)
    tokenizer = _load_tokenizer(tok_dir)
    arch = model_cfg.arch
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        hidden_dropout_prob=arch.hidden_dropout_prob,
        attention_probs_dropout_prob=arch.attention_probs_dropout_prob,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        **_head_kwargs(kind, num_labels),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _auto_class(kind).from_config(config, attn_implementation=attn)
    log.info(
        "embedded model %s: random init (seed %d), %d layers x %d heads, d=%d",
        model_cfg.name,
        seed,
        arch.num_hidden_layers,
        arch.num_attention_heads,
        arch.hidden_size,
    )
    return model.eval(), tokenizer


def load_model(
    model_cfg: Any,
    kind: str,
    num_labels: int,
    root: Path,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model with a head for `kind` (classification | ner | mlm) and its tokenizer, in eval mode.

    `model_cfg` is a ModelConfig (dataclass or DictConfig). New heads are initialised from `seed`
    without disturbing the caller's RNG. `tokenizer_dir` overrides the embedded model's tokenizer
    directory (default: <root>/data/synthetic/tokenizer).
    """
    _auto_class(kind)
    source = model_cfg.source
    name = model_cfg.name
    attn = model_cfg.attn_implementation or "sdpa"
    where = f"model {name}"
    if source == "embedded":
        model, tokenizer = _load_embedded(model_cfg, kind, num_labels, Path(root), seed, tokenizer_dir)
    elif source in ("hub", "local", "package"):
        if not model_cfg.path:
            raise ConfigError(f"model {name}: source={source} needs model.path")
        if source == "package":
            directory: str | Path = _package_dir(model_cfg.path, name)
        elif source == "local":
            directory = Path(model_cfg.path).expanduser()
            if not (directory / "config.json").is_file():
                raise ConfigError(f"model {name}: no save_pretrained directory at {directory}")
        else:
            directory = model_cfg.path
        try:
            tokenizer = _load_tokenizer(directory)  # first: fails fast, before the weights download
            model = _from_pretrained(directory, kind, num_labels, attn, seed, where)
        except OSError as e:
            if source != "hub":
                raise
            raise ConfigError(
                f"{where}: cannot load '{directory}' (not in the local HF cache and offline?); "
                f"download it once with: hf download {directory}"
            ) from e
    else:
        raise ConfigError(f"model {name}: unknown source '{source}'; use hub, local, package or embedded")
    family = model_family(model)
    if getattr(model_cfg, "family", "") and family not in _family_aliases(model_cfg.family):
        log.warning("model %s: config family '%s' but model_type gives '%s'", name, model_cfg.family, family)
    return model, tokenizer


def _family_aliases(family: str) -> tuple[str, ...]:
    return {"bert": ("bert", "distilbert"), "roberta": ("bert",), "t5-encoder": ("t5",)}.get(
        family, (family,)
    )


def load_finetuned(
    directory: Path, kind: str, attn_implementation: str = "sdpa"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a save_pretrained directory (the train stage's output), in eval mode."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"no saved model at {directory}")
    model = _from_pretrained(directory, kind, None, attn_implementation, 0, str(directory))
    return model, _load_tokenizer(directory)
