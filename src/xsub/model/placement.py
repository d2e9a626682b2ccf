"""Where a model's weights live: all on the run's device (`train.device`), or spread by accelerate.

`model.device_map=auto|balanced|balanced_low_0|sequential` loads the weights straight onto the
visible GPUs, then CPU memory, then disk (accelerate's big-model placement), so a model larger than
one GPU still runs; `model.max_memory` caps what each device holds (`{0: 70GiB, cpu: 200GiB}`).
accelerate's hooks carry the activations from device to device, so the gates, and every pass that
only reads activations (head and neuron importance, LAPE and AP statistics, evaluation, CKA,
ablation, steering), run unchanged. An *offloaded* weight (kept in CPU memory or on disk and brought
in for each forward) sits on the meta device in between, so what reads or writes weights directly
(weight masks, magnitude, Wanda, IMP, training) is refused on such a model in one line.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xsub.config import DEVICE_MAPS, ConfigError


def requested(model_cfg: Any) -> str:
    """The `model.device_map` asked for ("" = none), checked."""
    device_map = str(getattr(model_cfg, "device_map", "") or "")
    if device_map not in DEVICE_MAPS:
        raise ConfigError(
            f"model.device_map={device_map} is not an accelerate strategy; use one of "
            f"{', '.join(d for d in DEVICE_MAPS if d)} (or leave it empty for one device)"
        )
    return device_map


def max_memory(model_cfg: Any) -> dict[int | str, int | str] | None:
    """`model.max_memory` as accelerate takes it: GPU indices as ints, sizes as given ("70GiB")."""
    caps = getattr(model_cfg, "max_memory", None) or {}
    out: dict[int | str, int | str] = {}
    for device, size in dict(caps).items():
        key: int | str = int(device) if str(device).isdigit() else str(device)
        out[key] = int(size) if isinstance(size, int) or str(size).isdigit() else str(size)
    return out or None


def _offload_folder(root: Path) -> str:
    """A folder for this process's disk-offloaded weights under the store, removed at exit."""
    base = Path(root) / ".offload"
    base.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="weights.", dir=base)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def load_kwargs(model_cfg: Any, root: Path | None) -> dict[str, Any]:
    """The `from_pretrained` keywords that place the model (none without `model.device_map`)."""
    device_map = requested(model_cfg)
    if not device_map:
        return {}
    kwargs: dict[str, Any] = {"device_map": device_map, "max_memory": max_memory(model_cfg)}
    if root is not None:
        kwargs["offload_folder"] = _offload_folder(Path(root))
    return kwargs


def dispatch(model: nn.Module, model_cfg: Any) -> nn.Module:
    """Spread a model built in memory from its config (to be trained) over the GPUs, as `from_pretrained`
    would; such a model is trained, so nothing of it may be offloaded."""
    kwargs = load_kwargs(model_cfg, None)
    if not kwargs:
        return model
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = getattr(model, "_no_split_modules", None) or []
    caps = kwargs["max_memory"]
    if kwargs["device_map"] != "sequential":
        caps = get_balanced_memory(
            model,
            max_memory=caps,
            no_split_module_classes=no_split,
            low_zero=kwargs["device_map"] == "balanced_low_0",
        )
    device_map = infer_auto_device_map(model, max_memory=caps, no_split_module_classes=no_split)
    devices = set(device_map.values())
    if devices <= {"cpu"}:
        return model  # nothing to spread: the model stays where it is, as from_pretrained leaves it
    if devices & {"cpu", "disk"}:
        raise _not_resident("training")
    return dispatch_model(model, device_map=device_map)


def dispatched(model: nn.Module) -> bool:
    """Did accelerate place this model (it then must not be moved as a whole)?"""
    return getattr(model, "hf_device_map", None) is not None


def offloaded(model: nn.Module) -> bool:
    """Are some weights kept off their execution device (on the meta device between forwards)?"""
    return any(p.is_meta for p in model.parameters())


def require_resident(model: nn.Module, what: str) -> None:
    """One line, instead of an error deep in torch, when `what` needs weights that were offloaded."""
    if offloaded(model):
        raise _not_resident(what)


def _not_resident(what: str) -> ConfigError:
    return ConfigError(
        f"{what} reads or changes the weights, but model.device_map leaves some in CPU memory or on "
        "disk; give the GPUs room for the whole model (model.max_memory, more GPUs) or drop "
        "model.device_map"
    )


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its weights' device, or accelerate's execution device if offloaded."""
    weight = next(module.parameters(), None)
    hook = getattr(module, "_hf_hook", None)
    target = getattr(hook, "execution_device", None)
    if weight is not None and (not weight.is_meta or target is None):
        return weight.device
    return torch.device(target if target is not None else "cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: its input embeddings' execution device."""
    return execution_device(model.get_input_embeddings())


def place(model: nn.Module, device: torch.device | str) -> torch.device:
    """Move `model` to `device` unless accelerate placed it; the device its inputs go to."""
    if dispatched(model):
        return input_device(model)
    model.to(device)
    return torch.device(device)
