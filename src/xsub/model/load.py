"""Load models and tokenizers from any source; name a loaded model's architecture; re-initialise it.

Sources: the hub (or its local cache), a local save_pretrained directory, a Python package that ships
one (`get_model_path()`), or the embedded synthetic model (random init, or the weights the train stage
pretrained). Every model comes with a head for its task kind and in eval mode; new heads are seeded
without touching the caller's RNG. `model_signature` / `config_hash` name the architecture facts a mask
depends on, so a mask saved for one model is refused by another.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from xsub import store
from xsub.config import ConfigError
from xsub.data.tokenizer import load_tokenizer
from xsub.model import placement as placing
from xsub.model.arch import gate_shape, is_decoder, model_family, num_kv_heads

log = logging.getLogger(__name__)

AUTO_CLASSES = {
    "classification": AutoModelForSequenceClassification,
    "ner": AutoModelForTokenClassification,
    "mlm": AutoModelForMaskedLM,
    "clm": AutoModelForCausalLM,
}


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
    if is_decoder(config) and kind in ("mlm", "ner"):
        raise ConfigError(
            f"{where}: {config.model_type} is a causal LM; use a task of kind clm (e.g. task=wiki-clm) "
            f"or classification, not {kind}"
        )
    if kind == "clm" and not is_decoder(config):
        raise ConfigError(
            f"{where}: kind=clm needs a decoder (llama, qwen2, gemma2, bloom, xglm, gpt2, ...); "
            f"{config.model_type} is an encoder: use an mlm task"
        )


def _head_kwargs(kind: str, num_labels: int | None) -> dict[str, Any]:
    """num_labels=None keeps a saved config's own label count."""
    if kind in ("mlm", "clm") or num_labels is None:
        return {}
    if num_labels <= 0:
        raise ConfigError(f"kind={kind} needs task.num_labels > 0, got {num_labels}")
    return {"num_labels": num_labels}


def _from_pretrained(
    source: str | Path,
    kind: str,
    num_labels: int | None,
    attn: str,
    seed: int,
    where: str,
    placement: Mapping[str, Any] | None = None,
) -> PreTrainedModel:
    """`placement`: `xsub.model.placement.load_kwargs` (accelerate's device_map), or None for the CPU."""
    config = AutoConfig.from_pretrained(str(source), **_head_kwargs(kind, num_labels))
    _check_kind(config, kind, where)
    placed = dict(placement or {})
    load = functools.partial(_auto_class(kind).from_pretrained, str(source), config=config, **placed)
    with torch.random.fork_rng(devices=[]):  # seeded init of new heads, caller's RNG untouched
        torch.manual_seed(seed)
        try:
            model = load(attn_implementation=attn)
        except ValueError as e:  # BLOOM and Gemma 2 have no sdpa path in transformers 5
            if attn != "sdpa" or "scaled_dot_product_attention" not in str(e):
                raise
            log.info("%s: %s has no sdpa attention; using eager", where, config.model_type)
            model = load(attn_implementation="eager")
    if placement:
        log.info("%s placed by accelerate: %s", where, _placement_summary(model))
    return model.eval()


def _placement_summary(model: PreTrainedModel) -> str:
    device_map = getattr(model, "hf_device_map", None) or {"": "cpu"}
    counts = collections.Counter(str(d) for d in device_map.values())
    return ", ".join(f"{n} module(s) on {d}" for d, n in counts.items())


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
    """The embedded default's word-level tokenizer, written with the synthetic languages."""
    from xsub.data.synthetic import data_key

    return store.path(Path(root), data_key()) / "tokenizer"


def _require_tokenizer(tok_dir: Path, model_name: str) -> None:
    if not tok_dir.is_dir():
        raise ConfigError(
            f"tokenizer of model {model_name} missing at {tok_dir}; the synthetic data generator "
            f"writes it, e.g.: python -m xsub stage=train task=synth-mlm model={model_name} lang=all"
        )


def _load_embedded(
    model_cfg: Any,
    kind: str,
    num_labels: int,
    root: Path,
    seed: int,
    tokenizer_dir: Path | None,
    checkpoint: Path | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    attn = model_cfg.attn_implementation or "sdpa"
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else default_tokenizer_dir(root)
    if model_cfg.pretrain_task:
        ckpt = checkpoint
        if ckpt is None or not (ckpt / "config.json").is_file():
            raise ConfigError(
                f"pretrained weights of model {model_cfg.name} missing at {ckpt}; the caller finds them "
                f"with xsub.store.pretrain_key (stage=train task={model_cfg.pretrain_task} makes them)"
            )
        # The checkpoint's own tokenizer (if saved there) is the one its embeddings were trained with.
        if (ckpt / "tokenizer_config.json").is_file():
            tok_dir = ckpt
        _require_tokenizer(tok_dir, model_cfg.name)
        placement = placing.load_kwargs(model_cfg, root)
        model = _from_pretrained(ckpt, kind, num_labels, attn, seed, f"model {model_cfg.name}", placement)
        log.info("embedded model %s: encoder from %s", model_cfg.name, ckpt)
        return model, _load_tokenizer(tok_dir)
    _require_tokenizer(tok_dir, model_cfg.name)
    tokenizer = _load_tokenizer(tok_dir)
    arch = model_cfg.arch
    if kind == "clm" or model_cfg.family == "llama":
        return _embedded_decoder(model_cfg, kind, num_labels, tokenizer, attn, seed), tokenizer
    config = BertConfig(
        **_embedded_sizes(arch, tokenizer),
        hidden_dropout_prob=arch.hidden_dropout_prob,
        attention_probs_dropout_prob=arch.attention_probs_dropout_prob,
        **_head_kwargs(kind, num_labels),
    )
    model = _seeded(kind, config, attn, seed)
    log.info(
        "embedded model %s: random init (seed %d), %d layers x %d heads, d=%d",
        model_cfg.name,
        seed,
        arch.num_hidden_layers,
        arch.num_attention_heads,
        arch.hidden_size,
    )
    return model.eval(), tokenizer


def _embedded_sizes(arch: Any, tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The config sizes both embedded architectures take from `model.arch` and the tokenizer."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_hidden_layers,
        "num_attention_heads": arch.num_attention_heads,
        "intermediate_size": arch.intermediate_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    }


def _seeded(kind: str, config: Any, attn: str, seed: int) -> PreTrainedModel:
    """A model of `config` initialised from `seed`, without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _auto_class(kind).from_config(config, attn_implementation=attn)


def _embedded_decoder(
    model_cfg: Any, kind: str, num_labels: int, tokenizer: PreTrainedTokenizerBase, attn: str, seed: int
) -> PreTrainedModel:
    """The embedded decoder (`synth-gpt`): a Llama-architecture causal LM with grouped-query attention
    built from `model.arch`, with the synthetic tokenizer's [CLS] as beginning and [SEP] as end of text."""
    arch = model_cfg.arch
    if model_cfg.family != "llama":
        raise ConfigError(
            f"model {model_cfg.name}: an embedded decoder is built as family llama, not {model_cfg.family}"
        )
    kv = int(arch.num_key_value_heads or arch.num_attention_heads)
    if arch.num_attention_heads % kv or arch.hidden_size % arch.num_attention_heads:
        raise ConfigError(
            f"model {model_cfg.name}: {arch.num_attention_heads} heads must divide hidden_size "
            f"{arch.hidden_size} and split into model.arch.num_key_value_heads={kv} groups"
        )
    config = LlamaConfig(
        **_embedded_sizes(arch, tokenizer),
        num_key_value_heads=kv,
        attention_dropout=arch.attention_probs_dropout_prob,
        bos_token_id=tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
        eos_token_id=tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **_head_kwargs(kind, num_labels),
    )
    model = _seeded(kind, config, attn, seed)
    log.info(
        "embedded decoder %s: random init (seed %d), %d layers x %d heads (%d key/value), d=%d",
        model_cfg.name,
        seed,
        arch.num_hidden_layers,
        arch.num_attention_heads,
        kv,
        arch.hidden_size,
    )
    return model.eval()


def load_model(
    model_cfg: Any,
    kind: str,
    num_labels: int,
    root: Path,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    checkpoint: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model with a head for `kind` (classification | ner | mlm | clm) and its tokenizer, in eval mode.

    `model_cfg` is a ModelConfig (dataclass or DictConfig); its `device_map` places the weights
    (`xsub.model.placement`, then `placement.place` instead of `.to`). New heads are initialised from `seed`
    without disturbing the caller's RNG. `tokenizer_dir` overrides the embedded model's tokenizer
    directory (default: the synthetic data's); `checkpoint` is the embedded model's pretraining run
    (`xsub.store.pretrain_key`), when it has one.
    """
    _auto_class(kind)
    source = model_cfg.source
    name = model_cfg.name
    attn = model_cfg.attn_implementation or "sdpa"
    where = f"model {name}"
    if source == "embedded":
        model, tokenizer = _load_embedded(
            model_cfg, kind, num_labels, Path(root), seed, tokenizer_dir, checkpoint
        )
        if not model_cfg.pretrain_task:  # built from its config in memory
            model = placing.dispatch(model, model_cfg)
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
            placement = placing.load_kwargs(model_cfg, root)
            model = _from_pretrained(directory, kind, num_labels, attn, seed, where, placement)
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
    directory: Path, kind: str, attn_implementation: str = "sdpa", placement: Mapping[str, Any] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a save_pretrained directory (the train stage's output), in eval mode;
    `placement` as `xsub.model.placement.load_kwargs` gives it (accelerate's device_map)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"no saved model at {directory}")
    model = _from_pretrained(directory, kind, None, attn_implementation, 0, str(directory), placement)
    return model, _load_tokenizer(directory)


# --------------------------------------------------------------------------------------------------
# What a mask depends on


def model_signature(model: nn.Module) -> dict[str, Any]:
    """The architecture facts a mask depends on; stored with masks to refuse a foreign architecture."""
    shape = gate_shape(model)
    signature = {
        "model_type": model.config.model_type,
        "num_layers": shape.num_layers,
        "num_heads": shape.num_heads,
        "hidden_size": int(model.config.hidden_size),
        "intermediate_size": shape.intermediate_size,
        "vocab_size": int(model.config.vocab_size),
    }
    if num_kv_heads(model) != shape.num_heads:  # GQA; absent otherwise, so encoder hashes are unchanged
        signature["num_kv_heads"] = num_kv_heads(model)
    return signature


def config_hash(model: nn.Module) -> str:
    """Short sha256 of the sorted JSON of `model_signature`."""
    blob = json.dumps(model_signature(model), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Re-initialisation (weight_init=rand: the train stage and IMP rewinding)


def reinit_weights(model: nn.Module, seed: int) -> None:
    """Re-initialise every weight with the model's own `_init_weights`, seeded (weight_init=rand).

    transformers 5 marks loaded tensors `_is_hf_initialized` and its init functions then silently skip
    them, so after `from_pretrained` a plain `init_weights()` changes nothing; the marks are lifted for
    the call and restored. The caller's RNG is untouched.
    """
    init = getattr(model, "_init_weights", None)
    if init is None:
        raise TypeError(
            f"{type(model).__name__} has no _init_weights; weight_init=rand needs a transformers model"
        )
    tensors = [*model.parameters(), *model.buffers()]
    marked = [t for t in tensors if getattr(t, "_is_hf_initialized", False)]
    cuda = sorted({t.device.index or 0 for t in tensors if t.is_cuda})
    try:
        for t in marked:
            t._is_hf_initialized = False
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.manual_seed(seed)
            model.apply(init)
    finally:
        for t in marked:
            t._is_hf_initialized = True
    log.info("re-initialised %s from seed %d (weight_init=rand)", type(model).__name__, seed)
