"""stage=store: list what the artifact store holds, and remove what a filter matches.

`python -m xsub stage=store` prints one row per artifact: kind, key fields, identity hash, the
settings that differ from the defaults (the overrides that made it), status (done / partial = a
resumable run that stopped / locked = being written now) and size on disk. Filters: `store.kind=`,
`store.task=`, `store.lang=`, `store.seed=`, `store.method=` and `'store.where=["train.lr=0.005"]'`
(settings, the upstream model run's included). `store.remove=true` deletes what matches: it prints
the list first and deletes only with `store.yes=true`.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import yaml
from omegaconf import DictConfig

from xsub import store
from xsub.config import ConfigError
from xsub.report.select import settings_with_upstream
from xsub.tables import format_table

log = logging.getLogger(__name__)


def _matches(entry: store.Entry, sc: Any, where: dict[str, Any]) -> bool:
    f, settings = entry.fields, entry.settings
    langs = [f["lang"]] if "lang" in f else list(settings.get("langs", []))
    seeds = [s.removeprefix("seed") for s in (f.get("seed") or f.get("seeds", "")).split("+")]
    ok = not sc.task or sc.task in (f.get("task") or f.get("tasks", "")).split("+")
    ok &= not sc.lang or sc.lang in langs
    ok &= sc.seed < 0 or str(sc.seed) in seeds
    ok &= not sc.method or f.get("method") == sc.method
    if where and ok:
        flat = settings_with_upstream(entry)
        ok = all(k in flat and flat[k] == v for k, v in where.items())
    return ok


def _where(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ConfigError(
                f"store.where: '{item}' is not setting=value, e.g. 'store.where=[\"train.lr=0.005\"]'"
            )
        out[key] = yaml.safe_load(value)
    return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(cfg: DictConfig) -> dict[str, Any]:
    sc = cfg.store
    base = store.root(cfg)
    kinds = [sc.kind] if sc.kind else [k for k in store.FOLDER if k != "report"]
    if any(k not in store.FOLDER or k == "report" for k in kinds):
        choices = " ".join(k for k in store.FOLDER if k != "report")
        raise ConfigError(f"store.kind: unknown '{sc.kind}'; choose one of: {choices}")
    where = _where(list(sc.where))
    entries = [e for k in kinds for e in store.find(base, k) if _matches(e, sc, where)]
    rows = [
        [
            e.kind,
            e.record.get("key") or "/".join(e.fields.values()),
            e.record.get("hash", ""),
            " ".join(e.overrides) or "(defaults)",
            e.status,
            _size(store.size_on_disk(e.path)),
        ]
        for e in entries
    ]
    title = f"store {base}: {len(entries)} artifact(s)"
    print(format_table(["kind", "key", "hash", "settings", "status", "size"], rows, title))
    removed: list[str] = []
    if sc.remove and entries:
        if not sc.yes:
            print(
                f"store.remove: would delete the {len(entries)} artifact(s) above; "
                "add store.yes=true to delete them"
            )
        else:
            for e in entries:
                if e.status == "locked":
                    log.warning("skipping %s: a job is writing it", e.path)
                    continue
                shutil.rmtree(e.path)
                removed.append(str(e.path))
            print(f"deleted {len(removed)} artifact(s)")
    return {"entries": [str(e.path) for e in entries], "removed": removed}
