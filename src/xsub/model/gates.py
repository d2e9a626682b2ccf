"""Gates on attention heads and MLPs: forward hooks that multiply by plain tensors.

transformers 5 removed `head_mask` and `prune_heads`, and a `head_mask=` argument is now silently
ignored, so heads and MLPs are switched off by `Gates`: forward hooks, registered once, that multiply
each head's context vector (the input of the attention output projection) and each FFN's output (or
its intermediate units) by plain tensors. Decoders with grouped-query attention can also carry one gate
per key/value group (`kv_group` [L, G]), which multiplies every query head of the group. The same
tensors, with `requires_grad_`, give ∂loss/∂gate for importance scores (Michel et al. 2019) without
touching the model's parameters.

This is the mechanism only; turning a `Mask` into gate values is `xsub.subnetwork`'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn

from xsub.model import placement
from xsub.model.arch import encoder_layers, gate_shape, kv_group_of_heads, num_kv_heads

GATE_NAMES = ("head", "mlp", "mlp_units", "kv_group")


class Gates:
    """Multiplicative gates on heads [L, H], whole MLPs [L], optionally MLP units [L, I] and key/value
    groups [L, G] (`groups=True`; a group gate multiplies all query heads that share one KV head).

    Plain tensors, not parameters, so no optimizer ever trains them; default all ones. A layer whose
    gate is all ones and does not require grad is skipped (checked once per in-place change, via the
    tensor's version counter), so attached-but-open gates cost one Python call per hook. Values are
    cast to the activation's device and dtype inside the hook (bf16 autocast: the product is bf16,
    the gradient reaches the fp32 gate through the cast). Storage follows the hooked weights' device
    and dtype (after `model.to(...)`, the next forward moves it) unless it requires grad; then use
    `to`. On a model accelerate spread over devices (`model.device_map`) the storage stays on
    `home()`, the inputs' device. Modify gates with `set`, `reset` or in-place ops — writes via
    `.data` are not seen.
    """

    def __init__(self, model: nn.Module, units: bool = False, groups: bool = False) -> None:
        self.model = model
        self.layers = encoder_layers(model)
        self.shape = gate_shape(model, self.layers)
        self._fixed_home = placement.dispatched(model)
        like = {"device": self.home(), "dtype": self.layers[0].attn_out.weight.dtype}
        L, H, _, inter = self.shape
        with torch.inference_mode(False):  # normal tensors even if attached under inference_mode
            self._tensors: dict[str, torch.Tensor | None] = {
                "head": torch.ones(L, H, **like),
                "mlp": torch.ones(L, **like),
                "mlp_units": torch.ones(L, inter, **like) if units else None,
                "kv_group": torch.ones(L, num_kv_heads(model), **like) if groups else None,
            }
        self._group_index = torch.tensor(kv_group_of_heads(model))  # query head -> its KV group
        self._open_cache: dict[str, tuple[int, list[bool]]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for lm in self.layers:
            i = lm.index
            self._handles.append(lm.attn_out.register_forward_pre_hook(functools.partial(self._head_hook, i)))
            self._handles.append(lm.ffn_out.register_forward_hook(functools.partial(self._mlp_hook, i)))
            if units:
                self._handles.append(
                    lm.ffn_out.register_forward_pre_hook(functools.partial(self._units_hook, i))
                )
        model._xsub_gates = self  # type: ignore[assignment]  # one set of hooks per model

    # ---- tensors
    @property
    def head(self) -> torch.Tensor:
        return self._tensors["head"]  # type: ignore[return-value]

    @head.setter
    def head(self, value: torch.Tensor) -> None:
        self.set(head=value)

    @property
    def mlp(self) -> torch.Tensor:
        return self._tensors["mlp"]  # type: ignore[return-value]

    @mlp.setter
    def mlp(self, value: torch.Tensor) -> None:
        self.set(mlp=value)

    @property
    def mlp_units(self) -> torch.Tensor | None:
        return self._tensors["mlp_units"]

    @mlp_units.setter
    def mlp_units(self, value: torch.Tensor) -> None:
        self.set(mlp_units=value)

    @property
    def kv_group(self) -> torch.Tensor | None:
        return self._tensors["kv_group"]

    @kv_group.setter
    def kv_group(self, value: torch.Tensor) -> None:
        self.set(kv_group=value)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The present gate tensors by name (live, not copies)."""
        return {k: v for k, v in self._tensors.items() if v is not None}

    def set(
        self,
        head: torch.Tensor | None = None,
        mlp: torch.Tensor | None = None,
        mlp_units: torch.Tensor | None = None,
        kv_group: torch.Tensor | None = None,
    ) -> Gates:
        """Copy values in (bool or float); shapes must match exactly."""
        for name, value in (("head", head), ("mlp", mlp), ("mlp_units", mlp_units), ("kv_group", kv_group)):
            if value is None:
                continue
            target = self._tensors[name]
            if target is None:
                flag = "units=True" if name == "mlp_units" else "groups=True"
                raise ValueError(f"{name} gates were not attached; use attach_gates(model, {flag})")
            value = torch.as_tensor(value)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name} gate shape {tuple(value.shape)} != expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)
        return self

    def reset(self) -> Gates:
        """All gates back to one (grad flags kept)."""
        with torch.no_grad():
            for t in self.tensors().values():
                t.fill_(1.0)
        return self

    def requires_grad_(self, requires_grad: bool = True, which: Iterable[str] = GATE_NAMES) -> Gates:
        for name in which:
            t = self._tensors[name]
            if t is not None:
                t.requires_grad_(requires_grad)
        return self

    def zero_grad(self) -> None:
        for t in self.tensors().values():
            t.grad = None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gates:
        """Move the gate storage (new leaf tensors: grads are dropped, grad flags kept)."""
        for name, t in list(self._tensors.items()):
            if t is not None:
                self._move(name, device, dtype)
        return self

    def _move(self, name: str, device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        t = self._tensors[name]
        with torch.inference_mode(False), torch.no_grad():
            moved = t.detach().to(device=device, dtype=dtype).clone()  # type: ignore[union-attr]
        self._tensors[name] = moved.requires_grad_(t.requires_grad)  # type: ignore[union-attr]
        self._open_cache.pop(name, None)

    def home(self) -> torch.device:
        """Where the gate storage belongs: the hooked weights' device, or a placed model's input device."""
        if self._fixed_home:
            return placement.input_device(self.model)
        return self.layers[0].attn_out.weight.device

    def _follow(self, name: str, module: nn.Module) -> None:
        """Keep a gate that needs no grad on the hooked weight's device and dtype (model.to/.double())."""
        t, w = self._tensors[name], module.weight
        if t.requires_grad or not w.is_floating_point() or self._fixed_home:  # type: ignore[union-attr]
            return  # a grad-tracked leaf is never replaced behind the caller's back; it is cast per use
        if t.device != w.device or t.dtype != w.dtype:  # type: ignore[union-attr]
            self._move(name, w.device, w.dtype)

    # ---- hooks
    def _is_open(self, name: str, layer: int) -> bool:
        """Gate of this layer is all ones and needs no grad: the multiply can be skipped."""
        g = self._tensors[name]
        if g.requires_grad:  # type: ignore[union-attr]
            return False
        key = g._version  # type: ignore[union-attr]
        cached = self._open_cache.get(name)
        if cached is None or cached[0] != key:
            rows = (g == 1).reshape(g.shape[0], -1).all(dim=1).tolist()  # type: ignore[union-attr]
            cached = (key, rows)
            self._open_cache[name] = cached
        return cached[1][layer]

    def _gate(self, name: str, layer: int, like: torch.Tensor) -> torch.Tensor:
        g = self._tensors[name][layer]  # type: ignore[index]
        return g.to(device=like.device, dtype=like.dtype)

    def _head_hook(self, layer: int, module: nn.Module, args: tuple) -> tuple | None:
        self._follow("head", module)
        grouped = self._tensors["kv_group"] is not None
        if grouped:
            self._follow("kv_group", module)
        head_open = self._is_open("head", layer)
        group_open = not grouped or self._is_open("kv_group", layer)
        if not args or (head_open and group_open):
            return None
        x = args[0]
        g = None if head_open else self._gate("head", layer, x)
        if not group_open:
            per_head = self._gate("kv_group", layer, x)[self._group_index.to(x.device)]
            g = per_head if g is None else g * per_head
        H = self.shape.num_heads
        gated = (x.reshape(*x.shape[:-1], H, -1) * g[:, None]).reshape(x.shape)
        return (gated, *args[1:])

    def _units_hook(self, layer: int, module: nn.Module, args: tuple) -> tuple | None:
        self._follow("mlp_units", module)
        if not args or self._is_open("mlp_units", layer):
            return None
        x = args[0]
        return (x * self._gate("mlp_units", layer, x), *args[1:])

    def _mlp_hook(
        self, layer: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> torch.Tensor | None:
        self._follow("mlp", module)
        if self._is_open("mlp", layer):
            return None
        return output * self._gate("mlp", layer, output)

    # ---- lifetime
    def remove(self) -> None:
        """Remove the hooks; the model behaves as if never gated."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if getattr(self.model, "_xsub_gates", None) is self:
            del self.model._xsub_gates

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> Gates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        kept = int((self.head != 0).sum())
        return f"Gates({self.shape}, heads on {kept}/{self.head.numel()}, attached={self.attached})"


def attach_gates(model: nn.Module, units: bool = False, groups: bool = False) -> Gates:
    """Gates for `model`, hooks registered once; returns the existing Gates if already attached.

    Asking for unit or group gates on a model whose gates were attached without them raises: remove first.
    """
    existing: Gates | None = getattr(model, "_xsub_gates", None)
    if existing is not None and existing.attached:
        if units and existing.mlp_units is None:
            raise RuntimeError("gates already attached without mlp_units; call gates.remove() first")
        if groups and existing.kv_group is None:
            raise RuntimeError("gates already attached without kv_group; call gates.remove() first")
        return existing
    return Gates(model, units=units, groups=groups)


def get_gates(model: nn.Module) -> Gates | None:
    return getattr(model, "_xsub_gates", None)
