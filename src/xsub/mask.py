"""The one mask type every stage uses: boolean tensors for what is kept, plus where it came from.

A `Mask` covers attention heads ([layers, heads], always), optionally MLP units ([layers] or
[layers, intermediate]) and optionally individual weights (parameter name → bool tensor of the
parameter's shape). An absent optional part means "not pruned". Stages exchange masks only as files
written by `Mask.save` (safetensors + JSON sidecar, never pickle); `Mask.load` refuses anything it
cannot trust with a one-line `MaskError` that names the file and the fix. Masks released by the seed
projects enter through `xsub.mask_import.import_mask`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from xsub.config import XsubError
from xsub.store import atomic_path, lock

log = logging.getLogger(__name__)

Part = Literal["heads", "mlp", "weights"]
PARTS: tuple[Part, ...] = ("heads", "mlp", "weights")
FORMAT = "xsub-mask"
VERSION = 1
WEIGHT_PREFIX = "weights/"
EXPECT_KEYS = frozenset({"num_layers", "num_heads", "intermediate_size", "config_hash", "param_shapes"})

FIX_PRUNE = "prune this model first: python -m xsub stage=prune …"
FIX_REBUILD = "delete it and its sidecar, then re-run the stage that made it (python -m xsub stage=prune …)"
FIX_FOREIGN = (
    "masks from elsewhere enter through xsub.mask_import.import_mask(path) and are then saved with Mask.save"
)
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|block|h)\.(\d+)\.")


class MaskError(XsubError):
    """A mask file or mask operation that cannot be trusted; the message is one line naming the fix."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _short(e: BaseException, limit: int = 160) -> str:
    """An embedded exception's text, one line and bounded (torch's pickle errors run to paragraphs)."""
    text = _one_line(e) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(path: Path | str, problem: str, fix: str) -> MaskError:
    return MaskError(_one_line(f"mask {path} {problem}; {fix}"))


@dataclass
class MaskMeta:
    """Where a mask came from; saved in the sidecar so analyses never guess what a file is.

    `fraction_kept` is computed by `Mask` (part → fraction) and overwritten on construction.
    `config_hash` is computed elsewhere from the model architecture; it is only compared here.
    """

    model_id: str = ""
    config_hash: str = ""
    task: str = ""
    lang: str = ""
    seed: int | None = None
    method: str = ""
    score_before: float | None = None
    score_after: float | None = None
    fraction_kept: dict[str, float] = field(default_factory=dict)
    rounds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskMeta:
        """Tolerates unknown keys (a newer writer) by keeping them under extra["unknown_meta"]."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        meta = cls(**known)
        meta.extra = dict(meta.extra or {})
        if unknown:
            meta.extra["unknown_meta"] = unknown
        return meta


def _as_bool(t: Any, what: str) -> torch.Tensor:
    """Bool CPU tensor; other dtypes only if every value is 0 or 1 (thresholding is the importer's job)."""
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise MaskError(f"mask part {what} must be a tensor, got {type(t).__name__}")
    t = t.detach().to("cpu")
    if t.dtype != torch.bool:
        if not bool(((t == 0) | (t == 1)).all()):
            raise MaskError(f"mask part {what} has values other than 0/1 (dtype {t.dtype})")
        t = t != 0
    return t.clone(memory_format=torch.contiguous_format)  # own copy: callers may edit theirs in place


def _layer_of(name: str) -> int | None:
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def _derived_meta(op: str, a: MaskMeta, b: MaskMeta | None = None) -> MaskMeta:
    """Meta of a mask made from others: fields both agree on kept, scores dropped, provenance in extra."""
    sources = [a] if b is None else [a, b]

    def agreed(name: str, empty: Any) -> Any:
        values = {json.dumps(getattr(m, name)) for m in sources}
        return getattr(a, name) if len(values) == 1 else empty

    return MaskMeta(
        model_id=agreed("model_id", ""),
        config_hash=a.config_hash or (b.config_hash if b else ""),
        task=agreed("task", ""),
        lang=agreed("lang", ""),
        seed=agreed("seed", None),
        method=f"{op}({','.join(m.method for m in sources)})",
        rounds=agreed("rounds", None),
        extra={"derived": {"op": op, "from": [m.to_dict() for m in sources]}},
    )


@dataclass(eq=False)
class Mask:
    """Kept units of one model (True = kept). `eq=False`: compare with `equals`, tensors have no bool ==."""

    heads: torch.Tensor
    mlp: torch.Tensor | None = None
    weights: dict[str, torch.Tensor] | None = None
    meta: MaskMeta = field(default_factory=MaskMeta)

    def __post_init__(self) -> None:
        self.heads = _as_bool(self.heads, "heads")
        if self.heads.ndim != 2 or 0 in self.heads.shape:
            raise MaskError(f"mask heads must be [layers, heads] with both > 0, got {list(self.heads.shape)}")
        if self.mlp is not None:
            self.mlp = _as_bool(self.mlp, "mlp")
            if self.mlp.ndim not in (1, 2) or self.mlp.shape[0] != self.num_layers or 0 in self.mlp.shape:
                raise MaskError(
                    f"mask mlp must be [{self.num_layers}] or [{self.num_layers}, intermediate], "
                    f"got {list(self.mlp.shape)}"
                )
        if self.weights is not None:
            if not self.weights:
                self.weights = None
            else:
                self.weights = {str(k): _as_bool(v, f"weights[{k}]") for k, v in sorted(self.weights.items())}
        meta = self.meta if isinstance(self.meta, MaskMeta) else MaskMeta.from_dict(self.meta)
        # A private copy: two masks never share (and silently co-edit) one meta object.
        self.meta = dataclasses.replace(meta, fraction_kept=self.fractions(), extra=dict(meta.extra or {}))

    # ---- size and counts -------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return int(self.heads.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.heads.shape[1])

    @property
    def parts(self) -> tuple[Part, ...]:
        return tuple(p for p in PARTS if self._part(p) is not None)

    @property
    def num_heads_kept(self) -> int:
        return int(self.heads.sum())

    def _part(self, part: Part) -> torch.Tensor | None:
        """The part as one flat-able tensor (weights concatenated in sorted name order), or None."""
        if part == "heads":
            return self.heads
        if part == "mlp":
            return self.mlp
        if part == "weights":
            if self.weights is None:
                return None
            return torch.cat([self.weights[k].reshape(-1) for k in sorted(self.weights)])
        raise MaskError(f"unknown mask part {part!r}; use one of {', '.join(PARTS)}")

    def num_kept(self, part: Part = "heads") -> int:
        if part not in self.parts:
            raise MaskError(f"this mask has no {part} part (it has {', '.join(self.parts)})")
        if part == "weights":
            return sum(int(v.sum()) for v in self.weights.values())
        return int(self._part(part).sum())

    def fraction(self, part: Part = "heads") -> float:
        """Kept / total over one part; for weights over all masked parameters together."""
        if part == "weights" and self.weights is not None:  # no concatenation: these can be 100M entries
            return sum(int(v.sum()) for v in self.weights.values()) / sum(
                v.numel() for v in self.weights.values()
            )
        t = self._part(part)
        if t is None:
            raise MaskError(f"this mask has no {part} part (it has {', '.join(self.parts)})")
        return float(t.sum()) / t.numel()

    @property
    def fraction_kept(self) -> float:
        """Fraction of heads kept (the headline number of structured pruning); see `fractions`."""
        return self.fraction("heads")

    def fractions(self) -> dict[str, float]:
        """Fraction kept per present part, e.g. {"heads": 0.5, "weights": 0.3}."""
        return {p: self.fraction(p) for p in self.parts}

    def per_layer(self, part: Part = "heads") -> torch.Tensor:
        """Proportion kept in each layer, float [L]: mean over a layer's units (cross-lingual-subnetworks
        used the wrong axis).

        For weights, parameters are grouped by the layer index in their name; parameters with no layer
        index are left out, and a layer without masked parameters gets NaN.
        """
        if part == "heads":
            return self.heads.float().mean(dim=1)
        if part == "mlp":
            if self.mlp is None:
                raise MaskError("this mask has no mlp part")
            return self.mlp.float() if self.mlp.ndim == 1 else self.mlp.float().mean(dim=1)
        if part == "weights":
            if self.weights is None:
                raise MaskError("this mask has no weights part")
            kept = torch.zeros(self.num_layers, dtype=torch.float64)
            total = torch.zeros(self.num_layers, dtype=torch.float64)
            for name, t in self.weights.items():
                layer = _layer_of(name)
                if layer is not None and layer < self.num_layers:
                    kept[layer] += int(t.sum())
                    total[layer] += t.numel()
            return (kept / total).float()  # 0/0 → NaN for a layer without masked parameters
        raise MaskError(f"unknown mask part {part!r}; use one of {', '.join(PARTS)}")

    # ---- comparison and algebra ------------------------------------------------------------------

    def equals(self, other: Mask) -> bool:
        """Same kept units in every part (metadata ignored)."""
        if self.parts != other.parts:
            return False
        if not torch.equal(self.heads, other.heads):
            return False
        if self.mlp is not None and (
            self.mlp.shape != other.mlp.shape or not torch.equal(self.mlp, other.mlp)
        ):
            return False
        if self.weights is not None:
            if self.weights.keys() != other.weights.keys():
                return False
            return all(
                a.shape == other.weights[k].shape and torch.equal(a, other.weights[k])
                for k, a in self.weights.items()
            )
        return True

    def _pair(self, other: Mask, part: Part) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides of one part, an absent side read as all-kept; shapes must agree."""
        both = self.weights is not None and other.weights is not None
        if part == "weights" and both and self.weights.keys() != other.weights.keys():
            diff = sorted(self.weights.keys() ^ other.weights.keys())
            raise MaskError(f"masks cover different parameters (e.g. {diff[0]}); compare masks of one model")
        a, b = self._part(part), other._part(part)
        if a is None and b is None:
            raise MaskError(f"neither mask has a {part} part")
        a = torch.ones_like(b) if a is None else a
        b = torch.ones_like(a) if b is None else b
        if a.shape != b.shape:
            raise MaskError(
                f"mask {part} shapes differ ({list(a.shape)} vs {list(b.shape)}); compare masks of one model"
            )
        return a, b

    def jaccard(self, other: Mask, part: Part = "heads") -> float:
        """|A∩B| / |A∪B| of kept units. Two empty masks are identical, so empty∪empty gives 1.0.

        An absent optional part on one side counts as fully kept (it was not pruned).
        """
        a, b = self._pair(other, part)
        union = int((a | b).sum())
        return 1.0 if union == 0 else int((a & b).sum()) / union

    def _check_same_model(self, other: Mask) -> None:
        if self.heads.shape != other.heads.shape:
            raise MaskError(
                f"masks are for different models ({self.num_layers}×{self.num_heads} vs "
                f"{other.num_layers}×{other.num_heads} heads)"
            )
        h1, h2 = self.meta.config_hash, other.meta.config_hash
        if h1 and h2 and h1 != h2:
            raise MaskError(f"masks are for different model configs (hash {h1} vs {h2})")

    def _combine(self, other: Mask, op: Literal["and", "or"]) -> Mask:
        if not isinstance(other, Mask):
            return NotImplemented
        self._check_same_model(other)
        fn = torch.logical_and if op == "and" else torch.logical_or
        heads = fn(self.heads, other.heads)
        mlp = None
        if self.mlp is not None or other.mlp is not None:
            a, b = self._pair(other, "mlp")
            # `or` with a side that keeps everything keeps everything: leave the part absent.
            mlp = None if op == "or" and (self.mlp is None or other.mlp is None) else fn(a, b)
        weights = None
        if self.weights is not None or other.weights is not None:
            if op == "or" and (self.weights is None or other.weights is None):
                weights = None
            elif self.weights is None or other.weights is None:
                weights = dict(self.weights or other.weights)
            else:
                self._pair(other, "weights")  # same parameters
                bad = [k for k, v in self.weights.items() if v.shape != other.weights[k].shape]
                if bad:
                    raise MaskError(f"masks disagree on the shape of {bad[0]}; combine masks of one model")
                weights = {k: fn(v, other.weights[k]) for k, v in self.weights.items()}
        return Mask(heads, mlp, weights, _derived_meta(op, self.meta, other.meta))

    def __and__(self, other: Mask) -> Mask:
        return self._combine(other, "and")

    def __or__(self, other: Mask) -> Mask:
        return self._combine(other, "or")

    def __invert__(self) -> Mask:
        """Complement of every present part (the "inverted" baseline); absent parts stay unpruned."""
        meta = _derived_meta("not", self.meta)
        weights = None if self.weights is None else {k: ~v for k, v in self.weights.items()}
        return Mask(~self.heads, None if self.mlp is None else ~self.mlp, weights, meta)

    def random_like(self, seed: int) -> Mask:
        """Equal-size random baseline: per part (per parameter for weights) the same number kept, at
        uniformly random positions drawn from a generator seeded with `seed`."""
        gen = torch.Generator().manual_seed(int(seed))

        def shuffle(t: torch.Tensor) -> torch.Tensor:
            flat = torch.zeros(t.numel(), dtype=torch.bool)
            flat[torch.randperm(t.numel(), generator=gen)[: int(t.sum())]] = True
            return flat.reshape(t.shape)

        heads = shuffle(self.heads)
        mlp = None if self.mlp is None else shuffle(self.mlp)
        weights = None if self.weights is None else {k: shuffle(v) for k, v in self.weights.items()}
        meta = _derived_meta("random_like", self.meta)
        meta.extra["derived"]["random_seed"] = int(seed)
        return Mask(heads, mlp, weights, meta)

    @classmethod
    def ones(
        cls,
        num_layers: int,
        num_heads: int,
        *,
        intermediate_size: int | None = None,
        mlp_per_layer: bool = False,
        weight_shapes: Mapping[str, tuple[int, ...]] | None = None,
        meta: MaskMeta | None = None,
    ) -> Mask:
        """The full model: every head kept; an MLP part [L, I] (or [L] with `mlp_per_layer`) and
        per-weight parts only when asked for, so that pruning stages start from a mask of their kind."""
        mlp = None
        if intermediate_size is not None:
            mlp = torch.ones(num_layers, intermediate_size, dtype=torch.bool)
        elif mlp_per_layer:
            mlp = torch.ones(num_layers, dtype=torch.bool)
        weights = None
        if weight_shapes:
            weights = {k: torch.ones(tuple(s), dtype=torch.bool) for k, s in weight_shapes.items()}
        meta = meta or MaskMeta(method="full")
        return cls(torch.ones(num_layers, num_heads, dtype=torch.bool), mlp, weights, meta)

    def summary(self) -> dict[str, Any]:
        """Small JSON-able description (for logs, history and derived-mask provenance)."""
        m = self.meta
        return {
            "model_id": m.model_id,
            "task": m.task,
            "lang": m.lang,
            "seed": m.seed,
            "method": m.method,
            "shape": [self.num_layers, self.num_heads],
            "heads_kept": self.num_heads_kept,
            "fraction_kept": self.fractions(),
        }

    def __repr__(self) -> str:
        m = self.meta
        kept = ", ".join(f"{p}={v:.3f}" for p, v in self.fractions().items())
        return (
            f"Mask({self.num_layers}×{self.num_heads}, kept {kept}, model={m.model_id!r}, "
            f"task={m.task!r}, lang={m.lang!r}, seed={m.seed}, method={m.method!r})"
        )

    # ---- files -----------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors as stored: "heads", "mlp", "weights/<param>" (bool)."""
        out = {"heads": self.heads}
        if self.mlp is not None:
            out["mlp"] = self.mlp
        for k, v in (self.weights or {}).items():
            out[WEIGHT_PREFIX + k] = v
        return out

    def save(self, path: str | Path) -> Path:
        """Write `<path>.safetensors` then its `<path>.json` sidecar, each atomically, under a lock.

        The sidecar is written last, so its presence means the pair is complete; it carries the
        safetensors file's sha256, and the metadata is embedded in the safetensors file as well, so a
        truncated file or a hand-edited sidecar is caught on load. Returns the safetensors path.
        """
        st_path, js_path = _paths(path)
        meta = dataclasses.replace(
            self.meta, fraction_kept=self.fractions()
        ).to_dict()  # tensors may be edited
        try:
            meta_json = json.dumps(meta, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise MaskError(f"mask meta for {st_path} is not JSON-serialisable ({_short(e)})") from e
        shapes = {k: list(v.shape) for k, v in self.tensors().items()}
        blob = st_save(
            {k: v.contiguous() for k, v in self.tensors().items()},
            metadata={"format": FORMAT, "version": str(VERSION), "meta": meta_json},
        )
        sidecar = {
            "format": FORMAT,
            "version": VERSION,
            "file": st_path.name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "shapes": shapes,
            "meta": meta,
        }
        with lock(st_path):
            with atomic_path(st_path) as tmp:
                tmp.write_bytes(blob)
            with atomic_path(js_path) as tmp:
                tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        log.info("saved %r to %s", self, st_path)
        return st_path

    @classmethod
    def load(cls, path: str | Path, expect: Mapping[str, Any] | None = None, fix: str | None = None) -> Mask:
        """Read a mask written by `save`, refusing anything it cannot trust (see module docstring).

        `expect` (all keys optional): num_layers, num_heads, intermediate_size, config_hash,
        param_shapes (name → shape). `fix` replaces the generic advice at the end of error messages
        (e.g. the exact prune command that makes this mask).
        """
        st_path, js_path = _paths(path)
        if expect is not None and set(expect) - EXPECT_KEYS:
            raise TypeError(
                f"unknown expect keys {sorted(set(expect) - EXPECT_KEYS)}; use {sorted(EXPECT_KEYS)}"
            )
        if not st_path.is_file():
            raise _fail(st_path, "does not exist", fix or FIX_PRUNE)
        if not js_path.is_file():
            raise _fail(
                st_path,
                f"has no sidecar {js_path.name} (unfinished write or copied alone)",
                fix or FIX_REBUILD,
            )
        sidecar, blob = _read_pair(st_path, js_path, fix)
        mask = _decode(st_path, sidecar, blob, fix)
        if expect:
            _check_expect(st_path, mask, expect, fix)
        log.debug("loaded %r from %s", mask, st_path)
        return mask


def _paths(path: str | Path) -> tuple[Path, Path]:
    """`x`, `x.safetensors` or `x.json` → (x.safetensors, x.json)."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _read_pair(st_path: Path, js_path: Path, fix: str | None) -> tuple[dict[str, Any], bytes]:
    """Sidecar + file bytes whose sha matches; re-read once under the writer's lock if a save was racing."""
    sidecar, blob = _read_once(st_path, js_path, fix)
    if hashlib.sha256(blob).hexdigest() != sidecar.get("sha256") and Path(f"{st_path}.lock").exists():
        with contextlib.suppress(OSError), lock(st_path):  # OSError: read-only directory, no lock to take
            sidecar, blob = _read_once(st_path, js_path, fix)
    if hashlib.sha256(blob).hexdigest() != sidecar.get("sha256"):
        raise _fail(
            st_path,
            f"is corrupt or truncated: its sha256 differs from the one in {js_path.name} ({len(blob)} bytes)",
            fix or FIX_REBUILD,
        )
    return sidecar, blob


def _read_once(st_path: Path, js_path: Path, fix: str | None) -> tuple[dict[str, Any], bytes]:
    try:
        sidecar = json.loads(js_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(
            st_path, f"has a sidecar {js_path.name} that is not JSON ({_short(e)})", fix or FIX_REBUILD
        ) from e
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise _fail(
            st_path, f"has a sidecar {js_path.name} that is not an xsub mask sidecar", fix or FIX_FOREIGN
        )
    if sidecar.get("version") != VERSION:
        raise _fail(
            st_path,
            f"was written by mask format version {sidecar.get('version')}, this reader knows {VERSION}",
            fix or FIX_REBUILD,
        )
    return sidecar, st_path.read_bytes()


def _decode(st_path: Path, sidecar: dict[str, Any], blob: bytes, fix: str | None) -> Mask:
    fix = fix or FIX_REBUILD
    try:
        raw = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise _fail(st_path, f"is not a readable safetensors file ({_short(e)})", fix) from e
    if "heads" not in raw:
        raise _fail(st_path, f"has no 'heads' tensor (keys: {sorted(raw)[:5]})", FIX_FOREIGN)
    bad = sorted(k for k in raw if k not in ("heads", "mlp") and not k.startswith(WEIGHT_PREFIX))
    if bad:
        raise _fail(st_path, f"has unexpected tensors {bad[:5]}", FIX_FOREIGN)
    shapes = sidecar.get("shapes")
    if not isinstance(shapes, dict) or {k: list(v.shape) for k, v in raw.items()} != shapes:
        raise _fail(st_path, f"does not match the tensor shapes in its sidecar {st_path.stem}.json", fix)
    for k, v in raw.items():
        if v.dtype not in (torch.bool, torch.uint8):
            raise _fail(st_path, f"tensor {k!r} has dtype {v.dtype}, masks are bool/uint8", fix)
        if v.dtype == torch.uint8 and bool((v > 1).any()):
            raise _fail(st_path, f"tensor {k!r} has uint8 values other than 0/1", fix)
    header = _st_metadata(blob)
    meta_dict = sidecar.get("meta")
    if not isinstance(meta_dict, dict) or header.get("meta") is None:
        raise _fail(st_path, "has no metadata", fix)
    try:
        embedded = json.loads(header["meta"])
    except json.JSONDecodeError as e:
        raise _fail(st_path, "has unreadable embedded metadata", fix) from e
    if json.dumps(embedded, sort_keys=True) != json.dumps(meta_dict, sort_keys=True):
        raise _fail(
            st_path, f"and its sidecar {st_path.stem}.json disagree on metadata (sidecar edited?)", fix
        )
    weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in raw.items() if k.startswith(WEIGHT_PREFIX)}
    try:
        return Mask(raw["heads"], raw.get("mlp"), weights or None, MaskMeta.from_dict(meta_dict))
    except (ValueError, TypeError) as e:
        raise _fail(st_path, f"holds an invalid mask ({_short(e)})", fix) from e


def _st_metadata(blob: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ (string map); the header is 8-byte length + JSON."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]).get("__metadata__") or {}


def _check_expect(st_path: Path, mask: Mask, expect: Mapping[str, Any], fix: str | None) -> None:
    fix = fix or FIX_PRUNE
    want_l, want_h = expect.get("num_layers"), expect.get("num_heads")
    if (want_l is not None and mask.num_layers != want_l) or (
        want_h is not None and mask.num_heads != want_h
    ):
        raise _fail(
            st_path,
            f"is for a {mask.num_layers}×{mask.num_heads} model but this model has "
            f"{want_l if want_l is not None else '?'} layers × {want_h if want_h is not None else '?'} heads",
            fix,
        )
    want_hash, have_hash = expect.get("config_hash"), mask.meta.config_hash
    if want_hash and have_hash and want_hash != have_hash:
        raise _fail(st_path, f"is for model config {have_hash} but this model's config is {want_hash}", fix)
    if want_hash and not have_hash:
        log.warning("mask %s records no config hash; only its shapes were checked", st_path)
    inter = expect.get("intermediate_size")
    if inter is not None and mask.mlp is not None and mask.mlp.ndim == 2 and mask.mlp.shape[1] != inter:
        raise _fail(st_path, f"has {mask.mlp.shape[1]} MLP units per layer but this model has {inter}", fix)
    param_shapes = expect.get("param_shapes")
    if param_shapes is not None and mask.weights is not None:
        for name, t in mask.weights.items():
            if name not in param_shapes:
                raise _fail(st_path, f"masks parameter {name!r}, which this model does not have", fix)
            if tuple(param_shapes[name]) != tuple(t.shape):
                raise _fail(
                    st_path,
                    f"masks {name!r} as {list(t.shape)} but this model's is {list(param_shapes[name])}",
                    fix,
                )
