"""Wanda (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large Language Models").

Score of weight W_ij of a linear layer (output i, input j): S_ij = |W_ij| · ‖X_j‖₂, where ‖X_j‖₂ is
the L2 norm of input feature j over every calibration token of ONE language (padding excluded). Within
each output row the `sparsity` share of weights with the lowest score is removed
(int(in_features × sparsity) per row, ties by column index: a stable ascending sort), as
locuslab/wanda's `prune_wanda` does for unstructured sparsity. The weights are magnitude pruning's
(`xsub.pruning.magnitude.prunable_weights`: Q, K, V, attention-out, FFN-in, FFN-out of every layer),
so the result is the same per-weight `Mask` and overlap, crosseval and transfer apply unchanged.

With `sequential=True` (their code) layer l is calibrated on the activations of the model whose layers
0..l-1 are already pruned; the sublayers of one layer share one pass over the unpruned layer. With
`sequential=False` every norm comes from the dense model in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from xsub.mask import Mask, MaskMeta
from xsub.model import encoder_layers
from xsub.model.placement import require_resident
from xsub.pruning.magnitude import all_kept, sparsity, weight_mask
from xsub.subnetwork import KeepMasks, weights_masked
from xsub.trainer import autocast, hooked

log = logging.getLogger(__name__)


def layer_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per encoder layer, its prunable linear modules by weight name (`prunable_weights` order)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for layer in encoder_layers(model):
        modules = (layer.query, layer.key, layer.value, layer.attn_out, *layer.ffn_in, layer.ffn_out)
        out.append({names[id(m.weight)]: m for m in modules})
    return out


@torch.no_grad()
def input_norms(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    linears: Mapping[str, nn.Linear],
    device: torch.device,
    precision: str = "auto",
) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ of each input feature of `linears` over the non-padding tokens of `batches` (float32)."""
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    keep: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module, args, _output):
            x = args[0]
            tokens = keep.get("tokens")
            if tokens is not None and x.shape[:-1] == tokens.shape:
                x = x[tokens.to(x.device)]  # a layer may sit on another device (model.device_map)
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] += (x * x).sum(0).cpu()

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    with hooked(model, handles):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            mask = batch.get("attention_mask")
            keep["tokens"] = mask.bool() if mask is not None else None
            with autocast(device, precision):
                model(**batch)
    return {n: s.sqrt().float() for n, s in sums.items()}


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| · ‖X_j‖₂ (W: [out, in], norms: [in])."""
    return weight.detach().float().abs().cpu() * norms.reshape(1, -1)


def prune_rows(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep-mask removing the int(in × fraction) lowest scores of every row (stable: ties by column)."""
    k = int(scores.shape[1] * fraction)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, order, False)
    return keep


def wanda_prune(
    model: nn.Module,
    batches: list[Mapping[str, torch.Tensor]],
    cfg: Any,
    device: torch.device,
    *,
    precision: str = "auto",
    meta: MaskMeta | None = None,
) -> tuple[Mask, list[dict[str, Any]]]:
    """Wanda's unstructured mask of `model` for the calibration `batches` (one language).

    Returns the mask and one history entry per layer (its sparsity). The model is unchanged on return.
    """
    require_resident(model, "Wanda")
    layers = layer_linears(model)
    params = {n: m.weight for group in layers for n, m in group.items()}
    keep: KeepMasks = all_kept(params)
    history: list[dict[str, Any]] = []
    dense_norms = None
    if not cfg.sequential:
        every = {n: m for group in layers for n, m in group.items()}
        dense_norms = input_norms(model, batches, every, device, precision)
    for index, group in enumerate(layers):
        if dense_norms is None:
            with weights_masked(model, keep):  # earlier layers pruned, this one dense
                norms = input_norms(model, batches, group, device, precision)
        else:
            norms = dense_norms
        for name, module in group.items():
            keep[name] = prune_rows(wanda_scores(module.weight, norms[name]), cfg.sparsity)
        layer_keep = {n: keep[n] for n in group}
        history.append({"layer": index, "sparsity": sparsity(layer_keep)})
        log.info("wanda layer %d: sparsity %.4f", index, history[-1]["sparsity"])
    extra = {"sparsity": sparsity(keep), "history": history, "sequential": bool(cfg.sequential)}
    mask = weight_mask(model, keep, "wanda", meta, rounds=len(layers), extra=extra)
    return mask, history
