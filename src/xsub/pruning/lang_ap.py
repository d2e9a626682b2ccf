"""Language neurons by average precision (Kojima et al. NAACL 2024, "On the Multilingual Ability of
Decoder-based Pre-trained Language Models: Finding and Controlling Language-Specific Neurons").

A unit's mean activation over a text's tokens is its score for "this text is in language L"; its
average precision with L's texts as positives and every other language's texts as negatives is its
expertise for L (their selfcond code: sklearn's average_precision_score per unit; here torchmetrics'
exact average precision, which equals it). Per language the top-k and the bottom-k units by AP are its
neurons (k = 1000 each in the paper): units that fire for L, and units that fall silent for it.
Deviation: they score the output of every linear layer (q, k, v, o, gate, up, down; for GELU MLPs the
pre-activation fc1); here the unit is the MLP neuron a `Mask` gates (the down projection's input), so
the result is an MLP-unit mask comparable with LAPE's and with head subnetworks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics.functional.classification import multilabel_average_precision

CHUNK = 4096  # units per torchmetrics call: bounds the [texts, units] target tensor


def average_precision(means: Mapping[str, torch.Tensor], lang: str) -> torch.Tensor:
    """AP [L, I] of every unit for `lang` against the other languages (means: lang -> [N, L, I])."""
    scores = torch.cat([means[k] for k in means]).float()
    target = torch.cat([torch.full((len(means[k]),), int(k == lang)) for k in means])
    flat = scores.reshape(len(scores), -1)
    out = []
    for j in range(0, flat.shape[1], CHUNK):
        part = flat[:, j : j + CHUNK]
        labels = target.unsqueeze(1).expand_as(part).contiguous()
        ap = multilabel_average_precision(
            part, labels, num_labels=part.shape[1], average=None, thresholds=None
        )
        out.append(torch.atleast_1d(ap))
    return torch.cat(out).reshape(scores.shape[1:])


def select(ap: torch.Tensor, k: int) -> torch.Tensor:
    """bool [L, I]: the k units of highest AP and the k of lowest (ties by unit index)."""
    flat = ap.flatten()
    k = min(k, flat.numel() // 2)
    order = torch.sort(flat, stable=True).indices
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        chosen[order[:k]] = True
        chosen[torch.sort(-flat, stable=True).indices[:k]] = True
    return chosen.view_as(ap)
