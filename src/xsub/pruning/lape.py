"""LAPE, language activation probability entropy (Tang et al. ACL 2024, "Language-Specific Neurons").

From each language's activation probability p[l, i, k] (share of its tokens where neuron i of layer l
has act(·) > 0, `xsub.neurons`), the rule of their identify.py:
  q = p / Σ_k p (0 where the sum is 0), H[l, i] = −Σ_k q log q (0·log 0 = 0);
  τ = the value at rank round(filter_rate·N) of all N = L·I·K probabilities sorted ascending;
  a neuron with no language above τ is excluded (H = +∞);
  the round(top_rate·L·I) neurons of lowest H are selected;
  each selected neuron belongs to every language whose p exceeds the bar, the value at rank
  round(activation_bar_ratio·N) — so a neuron can belong to several languages, or (when the bar is
  higher than τ) to none.
Deviations, both deliberate: ties in H are broken by neuron index (torch.topk leaves them unspecified,
so their selection can differ from run to run); every language gets its set, also a language with no
neuron (their split by `bincount` drops the languages after the last one that has any).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def rank_value(flat: torch.Tensor, ratio: float) -> float:
    """The value at 1-based rank round(ratio·N) of the ascending values (torch.kthvalue)."""
    k = min(max(round(flat.numel() * ratio), 1), flat.numel())
    return float(flat.kthvalue(k).values)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H[l, i] over languages of the normalised probabilities (probs: [L, I, K])."""
    norm = probs / probs.sum(-1, keepdim=True)
    norm = torch.nan_to_num(norm, nan=0.0)
    logs = torch.where(norm > 0, norm.log(), torch.zeros_like(norm))
    return -(norm * logs).sum(-1)


def select(
    probs: torch.Tensor, top_rate: float = 0.01, filter_rate: float = 0.95, bar_ratio: float = 0.95
) -> torch.Tensor:
    """Language-specific neurons: bool [K, L, I], True where neuron (l, i) belongs to language k."""
    if probs.ndim != 3:
        raise ValueError(
            f"activation probabilities must be [layers, units, languages], got {list(probs.shape)}"
        )
    layers, units, _ = probs.shape
    probs = probs.double()
    h = entropy(probs)
    flat = probs.flatten()
    h[(probs > rank_value(flat, filter_rate)).sum(-1) == 0] = torch.inf
    n = round(layers * units * top_rate)
    chosen = torch.zeros(layers * units, dtype=torch.bool)
    if n > 0:
        chosen[torch.sort(h.flatten(), stable=True).indices[:n]] = True
    member = chosen.view(layers, units, 1) & (probs > rank_value(flat, bar_ratio))
    return member.permute(2, 0, 1).contiguous()


def probabilities(
    over_zero: Mapping[str, torch.Tensor], tokens: Mapping[str, int], langs: Sequence[str]
) -> torch.Tensor:
    """p[l, i, k] for `langs` in order, from each language's counts."""
    return torch.stack([over_zero[k].double() / max(int(tokens[k]), 1) for k in langs], dim=-1)
