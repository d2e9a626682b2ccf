"""Language neurons as a `Mask`: every head kept, the language's MLP units off (mlp [L, I] False there).

So applying a language's mask ablates its neurons (crosseval of it is LAPE's perplexity experiment), and
overlap compares languages on the units they switch off (`language_neurons`). LAPE's released files
enter the same way (`xsub.mask_import.import_lape_neurons`).
"""

from __future__ import annotations

from typing import Any

import torch

from xsub.mask import Mask, MaskMeta


def neuron_mask(neurons: torch.Tensor, num_heads: int, meta: MaskMeta, **extra: Any) -> Mask:
    """The mask of one language's neurons (bool [L, I], True = the language's neuron)."""
    neurons = neurons.bool()
    per_layer = neurons.sum(1).tolist()
    meta.extra = {
        **meta.extra,
        "language_neurons": int(neurons.sum()),
        "neurons_per_layer": per_layer,
        **extra,
    }
    heads = torch.ones(neurons.shape[0], num_heads, dtype=torch.bool)
    return Mask(heads, mlp=~neurons, meta=meta)


def language_neurons(mask: Mask) -> torch.Tensor:
    """bool [L, I]: the units a language-neuron mask switches off."""
    if mask.mlp is None or mask.mlp.ndim != 2:
        raise ValueError("not a language-neuron mask: it has no MLP-unit part [layers, intermediate]")
    return ~mask.mlp


def random_per_layer(mask: Mask, seed: int) -> Mask:
    """The control: as many units off in every layer as `mask` has, chosen uniformly (seeded)."""
    off = language_neurons(mask)
    g = torch.Generator().manual_seed(seed)
    rand = torch.zeros_like(off)
    for layer, n in enumerate(off.sum(1).tolist()):
        rand[layer, torch.randperm(off.shape[1], generator=g)[:n]] = True
    meta = MaskMeta.from_dict({**mask.meta.to_dict(), "method": f"random({mask.meta.method})"})
    return Mask(mask.heads.clone(), mlp=~rand, meta=meta)
