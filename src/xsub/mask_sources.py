"""Which mask a retraining run uses (`mask.source=`).

Foroutan et al. 2022 and Prasanna et al. 2020 retrain subnetworks to ask whether they are transferable:
a language's own mask, another language's or another task's, and baselines of the same size — random,
"bad" (the least important units) and inverted (the complement). All are derived from masks in the
artifact store, so a missing one is one line with the prune command; a file path brings an outside mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from xsub import store
from xsub.config import ConfigError, selected_languages
from xsub.mask import Mask, MaskMeta

log = logging.getLogger(__name__)

DERIVED = ("random", "bad", "inverted")


def stored_key(cfg: DictConfig) -> store.Key | None:
    """The stored mask a `mask.source=` run derives its mask from (None for a file or no mask)."""
    keys, _ = store.retrain_mask_upstream(cfg)
    return keys[0] if keys else None


def _stored(cfg: DictConfig, job: store.Claim, file: str = "mask.safetensors") -> tuple[Mask, Path]:
    key = stored_key(cfg)
    if key is None:
        raise ConfigError(f"mask.source={cfg.mask.source} takes one training language: pass one lang=")
    with job.read(key, f"{key.field('method')} mask") as directory:
        fix = f"redo it with: {store.command(key, force=True)}"
        return Mask.load(directory / file, fix=fix), directory


def _bad(cfg: DictConfig, job: store.Claim, own: Mask, directory: Path) -> Mask:
    """Same size as `own`, made of the least important units: the magnitude stage's `bad` mask, or for
    structured masks the heads with the lowest importance in the unpruned model (pruning history)."""
    if own.weights is not None:
        return _stored(cfg, job, "bad.safetensors")[0]
    history = directory / "history.safetensors"
    if not history.is_file():
        raise ConfigError(f"mask.source=bad needs the pruning history {history}; re-run the prune stage")
    importance = load_file(str(history))["round0/importance/head"].reshape(-1)
    keep = torch.zeros(importance.numel(), dtype=torch.bool)
    keep[torch.argsort(importance, stable=True)[: own.num_heads_kept]] = True
    meta = MaskMeta.from_dict({**own.meta.to_dict(), "method": f"{own.meta.method}-bad"})
    return Mask(keep.reshape(own.heads.shape), own.mlp, None, meta)


def resolve(cfg: DictConfig, job: store.Claim) -> Mask | None:
    """The mask a train run uses, or None (`mask.source=none`); stored masks are read through `job`."""
    src = str(cfg.mask.source)
    if src == "none":
        return None
    if src not in ("own", *DERIVED) and not src.startswith(("lang:", "task:")):
        path = Path(src).expanduser()
        if not path.with_suffix(".json").is_file() and not path.is_file():
            raise ConfigError(
                f"mask.source: no mask file {path}; pass own, lang:<code>, task:<name>, random, "
                f"bad, inverted or the path of a mask saved by xsub"
            )
        return Mask.load(path)
    langs = selected_languages(cfg)
    if not src.startswith("lang:") and len(langs) != 1:
        raise ConfigError(
            f"mask.source={src} takes the mask of the training language: pass one lang= (got {langs})"
        )
    own, directory = _stored(cfg, job)
    if src in ("own",) or src.startswith(("lang:", "task:")):
        return own
    if src == "random":
        return own.random_like(cfg.seed)
    if src == "inverted":
        return ~own
    return _bad(cfg, job, own, directory)
