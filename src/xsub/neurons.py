"""Activation statistics of MLP neurons, gathered by forward hooks in one pass over a language's text.

The neuron is MLP intermediate unit i of layer l: the input of the down projection, the unit a `Mask`'s
`mlp` [L, I] part gates (for a gated MLP act(gate)·up). LAPE (Tang et al. 2024) counts how often the
activation function's output is > 0; for a gated MLP that is act(gate_proj x), read from the
activation module itself (`LayerModules.act`), as their code reads it; elsewhere it is the unit. Kojima
et al. 2024 score a unit by its mean over a text's tokens (`per_text=True`). Padding never counts.

The hooks do a comparison and a sum per layer on tensors the forward pass computes anyway, so the pass
costs about one bare forward (bench/lape_overhead.py measures it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from xsub.model.arch import encoder_layers, in_features
from xsub.trainer import autocast, hooked

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Statistics:
    """One language's counts: LAPE's activation probability is `over_zero / tokens`."""

    over_zero: torch.Tensor  # [L, I] int64: tokens where the activation function's output is > 0
    tokens: int  # non-padding tokens seen
    text_means: torch.Tensor | None = None  # [N, L, I] float32: each text's mean of each unit
    text_tokens: torch.Tensor | None = None  # [N] int64: each text's non-padding tokens

    @property
    def probability(self) -> torch.Tensor:
        return self.over_zero.double() / max(self.tokens, 1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For safetensors: every field as a tensor."""
        out = {"over_zero": self.over_zero, "tokens": torch.tensor([self.tokens], dtype=torch.int64)}
        if self.text_means is not None:
            out |= {"text_means": self.text_means, "text_tokens": self.text_tokens}
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: Mapping[str, torch.Tensor]) -> Statistics:
        return cls(t["over_zero"], int(t["tokens"][0]), t.get("text_means"), t.get("text_tokens"))


@torch.no_grad()
def collect(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
    precision: str = "auto",
    per_text: bool = False,
) -> Statistics:
    """One forward pass over `batches` with hooks; the model is left as it was (hooks removed)."""
    layers = encoder_layers(model)
    inter = in_features(layers[0].ffn_out)
    over_zero = torch.zeros(len(layers), inter, dtype=torch.int64, device=device)
    means: list[list[torch.Tensor]] = [[] for _ in layers]
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def positive(x: torch.Tensor) -> torch.Tensor:
        """Per unit, the non-padding tokens where x > 0 (an int32 sum: the cheapest reduction here)."""
        m = state["mask"]  # on the inputs' device; a layer may sit on another (model.device_map)
        hit = x > 0 if m is None else (x > 0) & m.to(x.device).unsqueeze(-1)
        return hit.reshape(-1, hit.shape[-1]).sum(0, dtype=torch.int32).to(over_zero.device)

    def count(index: int):
        def hook(_module, _args, output):
            over_zero[index] += positive(output)

        return hook

    def unit(index: int, counts: bool):
        def hook(_module, args):
            x = args[0]
            if counts:
                over_zero[index] += positive(x)
            if per_text:
                m = state["mask"]
                w = torch.ones(x.shape[:2], device=x.device) if m is None else m.to(x.device).float()
                means[index].append(
                    (x.float() * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
                )

        return hook

    handles = []
    for lm in layers:
        if lm.act is not None:
            handles.append(lm.act.register_forward_hook(count(lm.index)))
        if lm.act is None or per_text:
            handles.append(lm.ffn_out.register_forward_pre_hook(unit(lm.index, lm.act is None)))
    n_tokens, per_text_tokens = 0, []
    with hooked(model, handles):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k in INPUTS}
            mask = batch.get("attention_mask")
            full = mask is None or bool(mask.all())
            state["mask"] = None if full else mask.bool()
            ids = batch["input_ids"]
            counted = (
                mask.sum(1) if mask is not None else torch.full(ids.shape[:1], ids.shape[1], device=device)
            )
            n_tokens += int(counted.sum())
            per_text_tokens.append(counted.cpu())
            with autocast(device, precision):
                model(**batch)
    stats = Statistics(over_zero.cpu(), n_tokens)
    if per_text:
        stats.text_means = torch.stack([torch.cat(m).cpu() for m in means], dim=1)  # [N, L, I]
        stats.text_tokens = torch.cat(per_text_tokens).long()
    return stats
