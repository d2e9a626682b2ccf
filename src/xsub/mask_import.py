"""Importers for masks released by the original projects (LSS, Foroutan et al. 2022) and by LAPE
(Tang et al. 2024), turned into `xsub.mask.Mask` objects.

Kept apart from the Mask type because reading foreign files is a trust boundary of its own: released
masks come as torch.save'd tensors or `{param}_mask` dicts, `.npy` arrays, bare safetensors or LAPE's
per-language neuron lists, and every reader here refuses to execute code (`weights_only=True`,
`allow_pickle=False`) and fails with the same one-line `MaskError` (file, problem, fix) as `Mask.load`.
Stages read only masks saved with `Mask.save`; an imported mask is saved once and used from then on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickletools
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from xsub.mask import Mask, MaskError, MaskMeta, _fail, _layer_of, _paths, _short

log = logging.getLogger(__name__)

FIX_IMPORT = (
    "import_mask reads torch.save'd [layers, heads] tensors, '{param}_mask' dicts of tensors and .npy "
    "[layers, heads] arrays"
)
FIX_CONVERT = (
    "load it where you trust it and re-save just the mask: torch.save(torch.as_tensor(mask), '{dst}') "
    "or numpy.save('{dst_npy}', mask), then import that"
)


def _threshold(t: torch.Tensor, path: Path, what: str, threshold: float) -> torch.Tensor:
    """Float/int → bool at `threshold`; warns when the values are not a 0/1 mask (scores, not a mask?)."""
    if t.dtype == torch.bool:
        return t
    if t.is_complex():
        raise _fail(path, f"holds a complex tensor for {what}", FIX_IMPORT)
    tf = t.detach().to("cpu", torch.float64)
    if torch.isnan(tf).any():
        raise _fail(path, f"has NaN values in {what}", FIX_IMPORT)
    if not ((tf == 0) | (tf == 1)).all():
        log.warning(
            "%s: %s values are not all 0/1 (range %.3g..%.3g); thresholded at %s",
            path,
            what,
            float(tf.min()),
            float(tf.max()),
            threshold,
        )
    return tf >= threshold


def _strip_mask_key(key: str, prefix_map: Mapping[str, str] | None) -> str:
    name = key[: -len("_mask")]
    for old, new in (prefix_map or {}).items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def import_mask(
    path: str | Path,
    *,
    num_layers: int | None = None,
    num_heads: int | None = None,
    prefix_map: Mapping[str, str] | None = None,
    threshold: float = 0.5,
    **meta: Any,
) -> Mask:
    """Turn a mask file released by an original project into a `Mask` (then `save` it; stages read only ours).

    Accepted: `.pkl/.pt/.pth/.bin` written by torch.save holding a float [L, H] head tensor or a
    `{param}_mask` dict of per-weight tensors (Foroutan et al. 2022; `prefix_map` renames parameter prefixes,
    e.g. {"bert.": ""}), `.npy` [L, H] head masks, and our own `.safetensors` (+ sidecar). Values are
    thresholded at `threshold`. Files are read with `weights_only=True` / `allow_pickle=False`, so an
    arbitrary pickle is refused, not run. Per-weight masks do not say how many heads the model has:
    pass `num_heads` (heads are then all kept; layers are inferred from parameter names if not given).
    `meta` holds MaskMeta fields (model_id, task, lang, seed, method, ...).
    """
    p = Path(path)
    names = {f.name for f in dataclasses.fields(MaskMeta)} - {"fraction_kept"}
    unknown = set(meta) - names
    if unknown:
        raise TypeError(f"unknown MaskMeta fields {sorted(unknown)}; use {sorted(names)}")
    if not p.is_file():
        raise _fail(p, "does not exist", "check the path of the released mask")
    if p.suffix == ".json" or (p.suffix == ".safetensors" and _paths(p)[1].is_file()):
        return Mask.load(p)
    obj = _read_foreign(p)
    mmeta = MaskMeta(**meta)
    mmeta.extra = dict(mmeta.extra or {})
    mmeta.extra["imported_from"] = {"path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    mmeta.method = mmeta.method or "imported"

    if isinstance(obj, torch.Tensor):
        if obj.ndim != 2:
            raise _fail(
                p,
                f"holds a {obj.ndim}-D tensor {list(obj.shape)}, head masks are [layers, heads]",
                FIX_IMPORT,
            )
        heads = _threshold(obj, p, "heads", threshold)
        if (num_layers, num_heads) != (None, None) and (
            (num_layers is not None and num_layers != heads.shape[0])
            or (num_heads is not None and num_heads != heads.shape[1])
        ):
            raise _fail(
                p,
                f"is for a {heads.shape[0]}×{heads.shape[1]} model but this model has "
                f"{num_layers if num_layers is not None else '?'} layers × "
                f"{num_heads if num_heads is not None else '?'} heads",
                "import it for the model it was made for",
            )
        return Mask(heads, meta=mmeta)

    if isinstance(obj, dict):
        if not obj:
            raise _fail(p, "holds an empty dict", FIX_IMPORT)
        if (
            "heads" in obj
            and set(obj) <= {"heads", "mlp"}
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            mlp = obj.get("mlp")
            heads = _threshold(obj["heads"], p, "heads", threshold)
            mlp = None if mlp is None else _threshold(mlp, p, "mlp", threshold)
            try:
                return Mask(heads, mlp, meta=mmeta)
            except MaskError as e:
                raise _fail(p, f"holds an invalid mask ({e})", FIX_IMPORT) from e
        if all(isinstance(k, str) and k.endswith("_mask") for k in obj):
            if not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise _fail(p, "has '_mask' entries that are not tensors", FIX_IMPORT)
            weights = {_strip_mask_key(k, prefix_map): _threshold(v, p, k, threshold) for k, v in obj.items()}
            layers = [i for i in (_layer_of(k) for k in weights) if i is not None]
            L = num_layers if num_layers is not None else (max(layers) + 1 if layers else None)
            if L is None or num_heads is None:
                raise _fail(
                    p,
                    "holds per-weight masks, which do not say the model's layers × heads",
                    "pass num_heads=… (and num_layers=… if parameter names carry no layer index)",
                )
            return Mask(torch.ones(L, num_heads, dtype=torch.bool), weights=weights, meta=mmeta)
        keys = sorted(map(str, obj))[:5]
        raise _fail(p, f"holds a dict that is not a '{{param}}_mask' dict (keys: {keys})", FIX_IMPORT)

    raise _fail(
        p, f"holds a {type(obj).__name__}, not a head-mask tensor or a '{{param}}_mask' dict", FIX_IMPORT
    )


LAPE_LANGS = ("en", "zh", "fr", "es", "vi", "id", "ja")  # identify.py's language order
FIX_LAPE = (
    "import_lape_neurons reads LAPE's released *.neuron.pth: [languages][layers] 1-D LongTensors of indices"
)


def import_lape_neurons(
    path: str | Path,
    *,
    num_heads: int,
    intermediate_size: int,
    langs: Sequence[str] | None = None,
    num_layers: int | None = None,
    **meta: Any,
) -> dict[str, Mask]:
    """Turn LAPE's language-specific neurons (Tang et al. 2024, `*.neuron.pth`) into one `Mask` per language.

    The file is `torch.save(final_indice)` of RUCAIBox/Language-Specific-Neurons: a list over languages
    (LAPE_LANGS order; the BLOOM file has the first 6) of lists over layers of 1-D LongTensors of MLP
    neuron indices. xsub's language-neuron convention is "the model with that language's neurons
    deactivated": heads all kept, `mlp` True except at the language's neurons, so applying the mask
    ablates them, as LAPE's ppl.py does. Returned in the file's order, keyed by language code; `meta`
    holds MaskMeta fields (model_id, task, seed, config_hash, ...), `lang` comes from `langs`.
    """
    p = Path(path)
    names = {f.name for f in dataclasses.fields(MaskMeta)} - {"fraction_kept", "lang"}
    unknown = set(meta) - names
    if unknown:
        raise TypeError(
            f"unknown MaskMeta fields {sorted(unknown)} (lang comes from langs=); use {sorted(names)}"
        )
    if isinstance(langs, str):
        raise TypeError(f"langs must be a sequence of language codes, not the string {langs!r}")
    if not p.is_file():
        raise _fail(p, "does not exist", "check the path of the released LAPE neuron file")
    obj = _read_foreign(p)
    if not (
        isinstance(obj, list)
        and obj
        and all(isinstance(layers, list) and layers for layers in obj)
        and all(
            isinstance(t, torch.Tensor)
            and t.ndim == 1
            and not (t.dtype.is_floating_point or t.is_complex() or t.dtype == torch.bool)
            for layers in obj
            for t in layers
        )
    ):
        raise _fail(
            p, f"holds a {type(obj).__name__} that is not a list of lists of 1-D integer tensors", FIX_LAPE
        )
    counts = sorted({len(layers) for layers in obj})
    if len(counts) > 1:
        raise _fail(
            p, f"has languages with different layer counts {counts}", "this is not one model's LAPE file"
        )
    L = counts[0]
    if num_layers is not None and num_layers != L:
        raise _fail(
            p,
            f"is for a {L}-layer model but this model has {num_layers} layers",
            "import it for the model it was made for",
        )
    if langs is None:
        if len(obj) > len(LAPE_LANGS):
            raise _fail(
                p,
                f"has {len(obj)} languages but LAPE_LANGS names only {len(LAPE_LANGS)}",
                "pass langs=[...] in file order",
            )
        langs = LAPE_LANGS[: len(obj)]
    langs = list(langs)
    if len(langs) != len(obj):
        raise _fail(
            p,
            f"has {len(obj)} languages but langs= names {len(langs)}",
            f"pass {len(obj)} language codes in file order",
        )
    if len(set(langs)) != len(langs):
        dup = sorted({c for c in langs if langs.count(c) > 1})
        raise _fail(p, f"would get duplicate language codes {dup} from langs=", "pass each language once")

    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    masks: dict[str, Mask] = {}
    for lang, layers in zip(langs, obj):
        keep = torch.ones(L, intermediate_size, dtype=torch.bool)
        for layer, idx in enumerate(layers):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= intermediate_size):
                raise _fail(
                    p,
                    f"has {lang} layer {layer} neuron indices {int(idx.min())}..{int(idx.max())} outside "
                    f"0..{intermediate_size - 1}",
                    "pass the model's intermediate_size= (the MLP width the file was made for)",
                )
            keep[layer, idx.long()] = False
        per_layer = (~keep).sum(dim=1).tolist()
        mmeta = MaskMeta(**meta, lang=lang)
        mmeta.method = mmeta.method or "lape"
        mmeta.extra = {
            **(mmeta.extra or {}),
            "imported_from": {"path": str(p), "sha256": digest},
            "language_neurons": sum(per_layer),
            "neurons_per_layer": per_layer,
            "languages": list(langs),
        }
        masks[lang] = Mask(torch.ones(L, num_heads, dtype=torch.bool), mlp=keep, meta=mmeta)
    return masks


def _read_foreign(p: Path) -> Any:
    """Load without executing code: numpy without pickle, torch with weights_only."""
    if p.suffix == ".npy":
        with open(p, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":  # numpy would otherwise call it a pickle
                raise _fail(p, "is not a readable .npy file (no NUMPY magic)", FIX_IMPORT)
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise _fail(
                    p,
                    "is an object array (pickled Python objects), not a plain mask array",
                    "re-save it with numpy.save(path, mask.astype(float))",
                ) from e
            raise _fail(p, f"is not a readable .npy file ({_short(e)})", FIX_IMPORT) from e
        except (OSError, EOFError) as e:
            raise _fail(p, f"is not a readable .npy file ({_short(e)})", FIX_IMPORT) from e
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise _fail(
                p, f"holds a {getattr(arr, 'dtype', type(arr).__name__)} array, not numbers", FIX_IMPORT
            )
        return torch.from_numpy(np.ascontiguousarray(arr))
    if p.suffix == ".safetensors":  # released without our sidecar: plain tensors, still no pickle
        try:
            return st_load(p.read_bytes())
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise _fail(p, f"is not a readable safetensors file ({_short(e)})", FIX_IMPORT) from e
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # refusals are UnpicklingError; random bytes also IndexError, EOFError, ...
        if _is_pickle(p):
            raise _fail(
                p,
                "is not a plain tensor file: it pickles Python objects that xsub will not unpickle",
                FIX_CONVERT.format(
                    dst=p.with_name(p.stem + ".plain.pt"), dst_npy=p.with_name(p.stem + ".npy")
                ),
            ) from e
        raise _fail(
            p, "is neither a torch.save file nor a pickle (random or truncated bytes?)", FIX_IMPORT
        ) from e


def _is_pickle(p: Path) -> bool:
    """Whether a file is structurally a torch zip archive or a pickle stream (opcodes parsed, never run)."""
    if zipfile.is_zipfile(p):
        return True
    try:
        with open(p, "rb") as fh:
            for _ in pickletools.genops(fh):
                pass
    except Exception:
        return False
    return True
