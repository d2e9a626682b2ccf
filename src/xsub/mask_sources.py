"""Which mask a retraining run uses (`mask.source=`); `xsub.subnetwork.fix_for_training` applies it.

Seeds 002 and 004 retrain subnetworks to ask whether they are transferable: a language's own mask,
another language's or another task's, and baselines of the same size — random, "bad" (the least
important units) and inverted (the complement). All are derived from masks in the artifact store, so a
missing one is one line with the prune command; a file path brings an outside mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from xsub import artifacts
from xsub.config import ConfigError, selected_languages
from xsub.mask import Mask, MaskMeta

log = logging.getLogger(__name__)

DERIVED = ("random", "bad", "inverted")


def source_label(cfg: DictConfig) -> str:
    """The mask's provenance as a path component: mask-<pruning>-<source>[-m<seed>] ("" without a mask)."""
    src = str(cfg.mask.source)
    if src == "none":
        return ""
    if src == f"lang:{'+'.join(selected_languages(cfg))}":
        src = "own"  # lang:<the training language> is its own mask: one run, one folder
    if src.startswith(("lang:", "task:")) or src in ("own", *DERIVED):
        name = src.replace(":", "-")
    else:
        name = "file-" + Path(src).name.replace(".safetensors", "").replace(".json", "")
    label = f"mask-{cfg.mask.pruning or cfg.pruning.method}-{name}"
    if cfg.mask.seed >= 0 and cfg.mask.seed != cfg.seed:
        label += f"-m{cfg.mask.seed}"
    return label


def _stored(cfg: DictConfig, task: str, lang: str, method: str) -> Mask:
    seed = cfg.mask.seed if cfg.mask.seed >= 0 else cfg.seed
    path = artifacts.mask_path(artifacts.root(cfg), cfg.model.name, task, method, lang, seed)
    fix = (
        f"make it with: python -m xsub stage=prune task={task} model={cfg.model.name} lang={lang} "
        f"pruning={method.split('-')[0]} seed={seed}"
    )
    if not path.with_suffix(".json").is_file():
        raise ConfigError(f"no {method} mask for {task}/{lang} seed {seed} at {path}; {fix}")
    return Mask.load(path, fix=fix)


def _bad(cfg: DictConfig, task: str, lang: str, own: Mask, method: str) -> Mask:
    """Same size as `own`, made of the least important units: the magnitude stage's `-bad` mask, or for
    structured masks the heads with the lowest importance in the unpruned model (pruning history)."""
    if own.weights is not None:
        return _stored(cfg, task, lang, f"{method}-bad")
    seed = cfg.mask.seed if cfg.mask.seed >= 0 else cfg.seed
    mask_file = artifacts.mask_path(artifacts.root(cfg), cfg.model.name, task, method, lang, seed)
    history = mask_file.with_name(mask_file.name.replace(".safetensors", ".history.safetensors"))
    if not history.is_file():
        raise ConfigError(f"mask.source=bad needs the pruning history {history}; re-run the prune stage")
    importance = load_file(str(history))["round0/importance/head"].reshape(-1)
    keep = torch.zeros(importance.numel(), dtype=torch.bool)
    keep[torch.argsort(importance, stable=True)[: own.num_heads_kept]] = True
    meta = MaskMeta.from_dict({**own.meta.to_dict(), "method": f"{own.meta.method}-bad"})
    return Mask(keep.reshape(own.heads.shape), own.mlp, None, meta)


def resolve(cfg: DictConfig) -> Mask | None:
    """The mask a train run uses, or None (`mask.source=none`)."""
    src = str(cfg.mask.source)
    if src == "none":
        return None
    method = cfg.mask.pruning or cfg.pruning.method
    task = cfg.task.name
    if src not in ("own", *DERIVED) and not src.startswith(("lang:", "task:")):
        path = Path(src).expanduser()
        if not path.with_suffix(".json").is_file() and not path.is_file():
            raise ConfigError(
                f"mask.source: no mask file {path}; pass own, lang:<code>, task:<name>, random, "
                f"bad, inverted or the path of a mask saved by xsub"
            )
        return Mask.load(path)
    langs = selected_languages(cfg)
    if src.startswith("lang:"):
        return _stored(cfg, task, src.split(":", 1)[1], method)
    if len(langs) != 1:
        raise ConfigError(
            f"mask.source={src} takes the mask of the training language: pass one lang= (got {langs})"
        )
    lang = langs[0]
    if src.startswith("task:"):
        return _stored(cfg, src.split(":", 1)[1], lang, method)
    own = _stored(cfg, task, lang, method)
    if src == "own":
        return own
    if src == "random":
        return own.random_like(cfg.seed)
    if src == "inverted":
        return ~own
    return _bad(cfg, task, lang, own, method)
