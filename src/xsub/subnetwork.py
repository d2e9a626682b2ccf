"""The one place a `Mask` is applied to a model: gates for heads and MLPs, zeros for weights.

A mask is used in three ways: evaluated (analyses, pruning rounds), trained with (retraining a
subnetwork), and checked against a model before either. Keeping all of them here means every stage
and analysis applies a mask the same way, so a crosseval cell, a CKA side and a retraining run of the
same mask see the same subnetwork:

- heads and MLPs are switched off through `xsub.model.gates` (hooks, not weight edits, so the full
  model is one `reset` away and importance gradients can flow to the gates);
- weights are zeroed in place; `WeightMasker` keeps them exactly zero while a model trains;
- `check_fits` refuses a mask made for another architecture with one line, before any hook runs;
- `masked` applies a mask for the length of a `with` block and restores weights and gates after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from xsub.mask import Mask, MaskError
from xsub.model import Gates, attach_gates, config_hash, encoder_layers, gate_shape, get_gates
from xsub.model.placement import execution_device, require_resident

KeepMasks = dict[str, torch.Tensor]  # parameter name -> bool tensor of its shape, True = kept (CPU)
MaskLike = Mask | Mapping[str, torch.Tensor]


# ---- does it fit -----------------------------------------------------------------------------------


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


# ---- heads and MLPs: gates -------------------------------------------------------------------------


def gates_for(model: nn.Module, mask: Mask | None = None) -> Gates:
    """The model's gates, attached on first use and reused after, so many masks on one model register
    its hooks once; gates attached without MLP units are replaced when `mask` needs them."""
    units = mask is not None and mask.mlp is not None and mask.mlp.ndim == 2
    gates = get_gates(model)
    if gates is None or (units and gates.mlp_units is None):
        if gates is not None:
            gates.remove()
        gates = attach_gates(model, units=units)
    return gates


def set_gates(gates: Gates, parts: Mapping[str, torch.Tensor]) -> Gates:
    """Gates set from gate name -> values (head, mlp, mlp_units), every other gate open: a part left
    out is not pruned, so nothing of an earlier mask survives."""
    return gates.reset().set(**dict(parts))


def _gate_parts(mask: Mask) -> dict[str, torch.Tensor]:
    """A mask's parts by gate name: MLPs are whole layers [L] or units [L, I]."""
    parts = {"head": mask.heads}
    if mask.mlp is not None:
        parts["mlp" if mask.mlp.ndim == 1 else "mlp_units"] = mask.mlp
    return parts


def apply_mask(model: nn.Module, mask: Mask) -> Gates:
    """Gate the model's heads and MLPs to a `Mask` (absent parts open) until the gates are next set, and
    return the gates. The weights part is not touched here: see `masked` and `fix_for_training`."""
    check_fits(mask, model)
    return set_gates(gates_for(model, mask), _gate_parts(mask))


# ---- weights: zeros --------------------------------------------------------------------------------


def _keep_masks(params: Mapping[str, torch.Tensor], mask_weights: MaskLike) -> KeepMasks:
    """Validated bool CPU masks for parameters of this model (a Mask or a name -> tensor mapping)."""
    if isinstance(mask_weights, Mask):
        if mask_weights.weights is None:
            raise MaskError("this mask has no weights part; it was not made by magnitude pruning")
        mask_weights = mask_weights.weights
    out: KeepMasks = {}
    for name, keep in mask_weights.items():
        if name not in params:
            raise MaskError(f"weight mask names {name!r}, which this model does not have")
        if tuple(keep.shape) != tuple(params[name].shape):
            raise MaskError(
                f"weight mask for {name!r} is {list(keep.shape)}, "
                f"but the parameter is {list(params[name].shape)}"
            )
        out[name] = keep.detach().to("cpu", torch.bool)
    return out


def _zero(param: torch.Tensor, drop: torch.Tensor) -> None:
    with torch.no_grad():
        param.masked_fill_(drop.to(param.device), 0)


def _params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a weight mask zeroes: resident ones (an offloaded weight has no values here)."""
    require_resident(model, "a weight mask")
    return dict(model.named_parameters())


def apply_weight_mask(model: nn.Module, mask_weights: MaskLike) -> None:
    """Zero the masked weights in place (once; see `WeightMasker` to keep them zero while training)."""
    params = _params(model)
    for name, keep in _keep_masks(params, mask_weights).items():
        _zero(params[name], ~keep)


@contextlib.contextmanager
def weights_masked(model: nn.Module, mask_weights: MaskLike) -> Iterator[nn.Module]:
    """Evaluate a candidate mask without destroying the caller's weights: zero, yield, restore."""
    params = _params(model)
    keep = _keep_masks(params, mask_weights)
    saved = {n: params[n].detach().clone() for n in keep}
    try:
        for name, k in keep.items():
            _zero(params[name], ~k)
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


class WeightMasker:
    """Keeps masked weights exactly zero while a model trains (a context manager; `remove` undoes it).

    Zeroing once is not enough: AdamW's decoupled weight decay and its moment estimates move a zeroed
    weight on every step, so the mask must be re-imposed, whatever trainer drives the steps:

    - `after_step()`: call after every `optimizer.step()`; re-zeroes (AdamW would move them otherwise);
    - `zero_grad=True`: gradient hooks zero the masked gradients, so clipping and Adam moments see only
      kept weights;
    - `before_forward=True`: a forward pre-hook re-zeroes any masked parameter whose version counter moved
      since it was last zeroed (an optimiser step, `load_state_dict`), so a trainer without a step hook
      still never computes with, evaluates or checkpoints a non-zero masked weight; an unchanged model
      pays one integer compare per matrix.
    """

    def __init__(
        self,
        model: nn.Module,
        mask_weights: MaskLike,
        *,
        zero_grad: bool = True,
        before_forward: bool = True,
    ) -> None:
        params = _params(model)
        self.keep = _keep_masks(params, mask_weights)
        self._params = {n: params[n] for n in self.keep}
        self._drop: dict[str, torch.Tensor] = {n: ~k for n, k in self.keep.items()}
        self._versions: dict[str, int] = {}
        self._handles: list[Any] = []
        if zero_grad:
            self._handles += [p.register_hook(partial(self._masked_grad, n)) for n, p in self._params.items()]
        if before_forward:
            self._handles.append(model.register_forward_pre_hook(self._before_forward))
        self.apply()

    def _drop_on(self, name: str, device: torch.device) -> torch.Tensor:
        drop = self._drop[name]
        if drop.device != device:  # the model moved (fit calls model.to(device)); follow it once
            drop = self._drop[name] = drop.to(device)
        return drop

    def _zero_one(self, name: str) -> None:
        param = self._params[name]
        with torch.no_grad():
            param.masked_fill_(self._drop_on(name, param.device), 0)
        self._versions[name] = param._version

    def apply(self) -> None:
        """Zero every masked weight now."""
        for name in self._params:
            self._zero_one(name)

    def after_step(self, *_: Any) -> None:
        """Re-zero after an optimiser step; accepts and ignores arguments so it fits any callback slot."""
        self.apply()

    def _masked_grad(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(self._drop_on(name, grad.device), 0)

    def _before_forward(self, module: nn.Module, args: tuple) -> None:
        for name, param in self._params.items():
            if param._version != self._versions.get(name):
                self._zero_one(name)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> WeightMasker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# ---- a mask for a block, a mask for training -------------------------------------------------------


@contextlib.contextmanager
def masked(model: nn.Module, mask: Mask | None) -> Iterator[nn.Module]:
    """`model` with `mask` applied (heads and MLPs through gates, weights zeroed), restored on exit.

    `None` is the full model. Gates are attached on first use and left attached (open) afterwards, so
    evaluating many masks on one model registers its hooks once.
    """
    if mask is not None:
        check_fits(mask, model)
    gates = gates_for(model, mask)
    try:
        if mask is None:
            gates.reset()
            yield model
        else:
            set_gates(gates, _gate_parts(mask))
            if mask.weights:
                with weights_masked(model, mask.weights):
                    yield model
            else:
                yield model
    finally:
        gates.reset()


def fix_for_training(model: nn.Module, mask: Mask) -> WeightMasker | None:
    """Gate the masked heads/MLPs off (gates are not parameters: they never train) and keep masked
    weights exactly zero through every optimiser step. Returns the WeightMasker (or None) to remove later."""
    apply_mask(model, mask)
    return WeightMasker(model, mask.weights) if mask.weights else None


@contextlib.contextmanager
def training(model: nn.Module, mask: Mask | None) -> Iterator[WeightMasker | None]:
    """`model` fixed to `mask` for training (see `fix_for_training`); the weight hooks are removed on
    exit. `None` trains the full model."""
    if mask is None:
        yield None
        return
    masker = fix_for_training(model, mask)
    try:
        yield masker
    finally:
        if masker is not None:
            masker.remove()


@contextlib.contextmanager
def units_fixed(model: nn.Module, units: torch.Tensor, values: torch.Tensor) -> Iterator[nn.Module]:
    """`model` with MLP units [L, I] (True) held at `values` [L, I] instead of computed, restored on exit.

    The value replaces the unit where a gate would multiply it (the down projection's input), so a
    value of 0 equals gate 0; mean ablation (Tang et al. 2024) and steering (Kojima et al. 2024: the
    median on a language's texts) use other values.
    """
    layers = encoder_layers(model)
    shape = gate_shape(model, layers)
    if tuple(units.shape) != (shape.num_layers, shape.intermediate_size):
        raise MaskError(
            f"units are {list(units.shape)} but the model has {shape.num_layers} layers × "
            f"{shape.intermediate_size} MLP units"
        )
    handles = []

    def hold(index: torch.Tensor, value: torch.Tensor, _module, args):
        x = args[0].clone()
        x[..., index] = value.to(x.device, x.dtype)
        return (x, *args[1:])

    for lm in layers:
        index = units[lm.index].nonzero().flatten()
        if index.numel():
            value = values[lm.index, index].float()
            index = index.to(execution_device(lm.ffn_out))
            handles.append(lm.ffn_out.register_forward_pre_hook(partial(hold, index, value)))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
