"""A report's tidy tables, gathered from store entries (xsub.report.select).

Every row carries its artifact's key fields and, as extra columns, each setting that differs between
the collected artifacts of its kind (a `train.lr` × `pruning.threshold` sweep gives one row per run,
told apart by those columns, never averaged together).
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import pandas as pd

from xsub import store
from xsub.mask import Mask, MaskError
from xsub.report.select import Selection, Varying

log = logging.getLogger(__name__)

LANG_COLUMNS = ("lang", "lang_a", "lang_b", "target", "eval_lang")
TASK_COLUMNS = ("task", "task_a", "task_b")
SEED_COLUMNS = ("seed", "seed_a", "seed_b")


def _frame(rows: list[dict[str, Any]], columns: list[str], varying: Varying) -> pd.DataFrame:
    extra = [c for c in varying.names() if c not in columns]
    frame = pd.DataFrame(rows, columns=[*columns, *extra])
    frame.attrs["varying"] = extra  # the settings that tell the rows apart
    return frame


def collect_training(sel: Selection, entries: list[store.Entry]) -> pd.DataFrame:
    """One row per (split, language, metric) of every finished train run's metrics.json."""
    runs = [e for e in entries if e.kind == "model"]
    varying = Varying.of(runs)
    rows = []
    for e in runs:
        try:
            metrics = json.loads((e.path / "metrics.json").read_text())
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable %s: %s", e.path / "metrics.json", err)
            continue
        primary = metrics.get("metric")
        seed = int(e.fields["seed"].removeprefix("seed"))
        for split in ("dev", "test"):
            for lang, scores in (metrics.get(split) or {}).items():
                if sel.langs is not None and lang not in sel.langs:
                    continue
                for name, value in (scores or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        rows.append(
                            {
                                "model": e.fields["model"],
                                "task": e.fields["task"],
                                "langs": e.fields["langs"],
                                "seed": seed,
                                "lang": lang,
                                "split": split,
                                "metric": name,
                                "value": float(value),
                                "primary": name == primary,
                                "run": e.record["hash"],
                                **varying.row(e),
                            }
                        )
    columns = ["model", "task", "langs", "seed", "lang", "split", "metric", "value", "primary", "run"]
    return _frame(rows, columns, varying)


def _mask_files(e: store.Entry) -> list[tuple[str, str]]:
    """(method label, file) of a mask artifact: the mask and its stored baselines."""
    method = e.fields["method"]
    return [(method, "mask.safetensors")] + [
        (f"{method}-{b}", f"{b}.safetensors") for b in ("random", "bad") if (e.path / f"{b}.json").is_file()
    ]


def collect_masks(entries: list[store.Entry]) -> tuple[pd.DataFrame, dict[tuple, Mask], list[str]]:
    """pruning.csv rows, the head masks by (model, task, method, lang, seed, run), unreadable files."""
    masks = [e for e in entries if e.kind == "mask"]
    varying = Varying.of(masks)
    rows, heads, bad = [], {}, []
    for e in masks:
        for method, file in _mask_files(e):
            try:
                mask = Mask.load(e.path / file)
            except MaskError as err:
                bad.append(f"{e.path / file}: {err}")
                continue
            frac = mask.fractions()
            meta = mask.meta
            seed = int(e.fields["seed"].removeprefix("seed"))
            key = (e.fields["model"], e.fields["task"], method, e.fields["lang"], seed, e.record["hash"])
            rows.append(
                {
                    "model": key[0],
                    "task": key[1],
                    "method": method,
                    "lang": key[3],
                    "seed": seed,
                    "heads_kept": mask.num_heads_kept,
                    "heads_total": int(mask.heads.numel()),
                    "fraction_heads": frac.get("heads"),
                    "fraction_mlp": frac.get("mlp"),
                    "fraction_weights": frac.get("weights"),
                    "score_before": meta.score_before,
                    "score_after": meta.score_after,
                    "rounds": meta.rounds,
                    "model_seed": meta.extra.get("model_seed"),
                    "run": e.record["hash"],
                    "path": str(e.path / file),
                    **varying.row(e),
                }
            )
            heads[key] = (Mask(heads=mask.heads, meta={"config_hash": meta.config_hash}), varying.row(e))
    columns = [
        "model", "task", "method", "lang", "seed", "heads_kept", "heads_total", "fraction_heads",
        "fraction_mlp", "fraction_weights", "score_before", "score_after", "rounds", "model_seed", "run",
        "path",
    ]  # fmt: skip
    return _frame(rows, columns, varying), heads, bad


def mask_jaccard(heads: dict[tuple, tuple[Mask, dict[str, Any]]]) -> pd.DataFrame:
    """Jaccard of kept heads for every ordered pair of languages of masks that share every setting
    but the language: one (model, task, method, seed) and the same values of the varying settings."""
    rows = []
    groups: dict[tuple, dict[str, tuple[Mask, dict[str, Any]]]] = {}
    for (model, task, method, lang, seed, _run), (mask, settings) in heads.items():
        key = (model, task, method, seed, tuple(sorted((k, repr(v)) for k, v in settings.items())))
        groups.setdefault(key, {})[lang] = (mask, settings)
    names: list[str] = sorted({k for g in groups.values() for _, s in g.values() for k in s})
    for (model, task, method, seed, _), masks in groups.items():
        for (la, (a, settings)), (lb, (b, _)) in itertools.product(masks.items(), repeat=2):
            if a.heads.shape != b.heads.shape:
                continue
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "method": method,
                    "seed": seed,
                    "lang_a": la,
                    "lang_b": lb,
                    "jaccard": a.jaccard(b, "heads"),
                    **settings,
                }
            )
    return pd.DataFrame(
        rows, columns=["model", "task", "method", "seed", "lang_a", "lang_b", "jaccard", *names]
    )


def filter_rows(sel: Selection, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of an analysis table whose language / task / seed columns are all selected."""
    keep = pd.Series(True, index=frame.index)
    for columns, allowed in ((LANG_COLUMNS, sel.langs), (TASK_COLUMNS, sel.tasks)):
        for col in columns:
            if allowed is not None and col in frame:
                keep &= frame[col].astype(str).isin({str(a) for a in allowed})
    for col in SEED_COLUMNS:
        if sel.seeds is not None and col in frame:
            keep &= pd.to_numeric(frame[col], errors="coerce").isin(sel.seeds)
    return frame[keep]


def collect_analyses(sel: Selection, entries: list[store.Entry]) -> dict[str, pd.DataFrame]:
    """analysis_<name>[_<table>] -> every finished analysis's table, with its folder and settings."""
    analyses = [e for e in entries if e.kind == "analysis"]
    frames: dict[str, list[pd.DataFrame]] = {}
    for name, group in itertools.groupby(
        sorted(analyses, key=lambda e: e.fields["name"]), lambda e: e.fields["name"]
    ):
        group = list(group)
        varying = Varying.of(group)
        for e in group:
            for csv in sorted(e.path.glob("*.csv")):
                try:
                    frame = pd.read_csv(csv)
                except (OSError, ValueError, pd.errors.EmptyDataError) as err:
                    log.warning("skipping unreadable %s: %s", csv, err)
                    continue
                frame = filter_rows(sel, frame)
                if frame.empty:
                    continue
                extra = {
                    "folder": e.record.get("path", str(e.path)),
                    "model": e.fields["model"],
                    "tasks": e.fields["tasks"],
                    "pruning": e.fields["method"],
                    **varying.row(e),
                }
                for i, (col, value) in enumerate(extra.items()):
                    if col not in frame:
                        frame.insert(i, col, value)
                table = name if csv.stem == name else f"{name}_{csv.stem}"
                frames.setdefault(f"analysis_{table}", []).append(frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in sorted(frames.items())}
