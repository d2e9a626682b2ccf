"""Analyses that compare subnetworks, one module each (overlap, crosseval, cka, stitch, importance_tsne,
token_overlap); stage=analyze gathers their inputs from the artifact store. What they share lives here:
applying a `Mask` to a model, and the `Result` every analysis returns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from torch import nn

from xsub.mask import Mask, MaskError
from xsub.model import attach_gates, config_hash, gate_shape, get_gates
from xsub.pruning.head_importance import apply_mask
from xsub.pruning.magnitude import weights_masked


@contextlib.contextmanager
def masked(model: nn.Module, mask: Mask | None) -> Iterator[nn.Module]:
    """`model` with `mask` applied (heads and MLPs through gates, weights zeroed), restored on exit.

    `None` is the full model. Gates are attached on first use and left attached (open) afterwards, so
    evaluating many masks on one model registers its hooks once.
    """
    if mask is not None:
        check_fits(mask, model)
    units = mask is not None and mask.mlp is not None and mask.mlp.ndim == 2
    gates = get_gates(model)
    if gates is None or (units and gates.mlp_units is None):
        if gates is not None:
            gates.remove()
        gates = attach_gates(model, units=units)
    try:
        if mask is None:
            gates.reset()
            yield model
        else:
            apply_mask(gates, mask)
            if mask.weights:
                with weights_masked(model, mask.weights):
                    yield model
            else:
                yield model
    finally:
        gates.reset()


def check_fits(mask: Mask, model: nn.Module) -> None:
    """A mask made for another architecture is one clear line, not a shape error inside a hook."""
    shape = gate_shape(model)
    problem = ""
    if tuple(mask.heads.shape) != (shape.num_layers, shape.num_heads):
        problem = (
            f"has {mask.num_layers}×{mask.num_heads} heads, the model {shape.num_layers}×{shape.num_heads}"
        )
    elif mask.mlp is not None and mask.mlp.ndim == 2 and mask.mlp.shape[1] != shape.intermediate_size:
        problem = f"has {mask.mlp.shape[1]} MLP units per layer, the model {shape.intermediate_size}"
    elif mask.meta.config_hash and mask.meta.config_hash != config_hash(model):
        problem = f"was made for model config {mask.meta.config_hash}, not {config_hash(model)}"
    if problem:
        raise MaskError(f"mask {mask!r} {problem}; use masks pruned from this model (stage=prune)")


@dataclass
class Result:
    """What an analysis produced: tidy tables (saved as CSV), figures (PNG, already written) and the
    short text table the stage prints."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: str = ""
