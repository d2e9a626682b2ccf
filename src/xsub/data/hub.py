"""The one raw-loading function every data source goes through: hub id or local files, same layout.

A local directory (`data.path`) mirrors the hub repository's own layout, so a test fixture or an
offline copy goes through exactly the code a hub download does; only the `load_dataset` call differs.
Accepted local layouts, for subset `S` and split `T` (first match wins, extensions in EXTENSIONS order):

    <path>/S/T-*.<ext>       hub parquet shards, e.g. de/train-00000-of-00001.parquet
    <path>/S/T.<ext>         one file per split
    <path>/S/T/*.<ext>       refs/convert/parquet layout, e.g. eng_Latn/dev/0000.parquet
    <path>/T…                the same three patterns flat, when there is no subset directory
                             (subset "" or "default" also looks in <path>/data/, push_to_hub's layout)

A hub id may carry a revision as `owner/name@revision` (e.g. `@refs/convert/parquet` for datasets that
only exist as loading scripts, which datasets>=4 refuses to run).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import datasets

from xsub.config import ConfigError

log = logging.getLogger(__name__)

# extension -> datasets packaged builder and its extra kwargs
EXTENSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "parquet": ("parquet", {}),
    "jsonl": ("json", {}),
    "json": ("json", {}),
    "csv": ("csv", {}),
    "tsv": ("csv", {"delimiter": "\t"}),
}


def split_revision(hub_id: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`); no `@` -> (hub_id, None)."""
    repo, sep, revision = hub_id.partition("@")
    return repo, (revision if sep and revision else None)


def _subset_dirs(path: Path, subset: str) -> list[Path]:
    """Directories that may hold the subset's files, most specific first."""
    dirs = []
    if subset and subset != "default":
        dirs.append(path / subset)
    else:
        dirs.append(path / "data")
        if subset == "default":
            dirs.append(path / "default")
    return dirs


def find_local_files(path: str | Path, subset: str, split: str) -> tuple[str, list[str]]:
    """The extension and sorted files of `split` under `path` (layouts in the module docstring).

    Returns ("", []) when nothing matches. A subset directory that exists is authoritative: the flat
    layout is only consulted when no subset directory is there.
    """
    root = Path(path).expanduser()
    existing = [d for d in _subset_dirs(root, subset) if d.is_dir()]
    for base in existing or [root]:
        for ext in EXTENSIONS:
            for pattern in (f"{split}-*.{ext}", f"{split}.{ext}", f"{split}/*.{ext}"):
                files = sorted(str(p) for p in base.glob(pattern) if p.is_file())
                if files:
                    return ext, files
    return "", []


def expected_pattern(path: str | Path, subset: str, split: str) -> str:
    """The layout a user should create, for error messages."""
    root = Path(path).expanduser()
    base = root / subset if subset and subset != "default" else root
    return f"{base}/{split}-*.parquet (or {split}.parquet/.jsonl/.csv/.tsv)"


def load_raw(hub_id: str, subset: str, split: str, path: str = "", *, what: str = "") -> datasets.Dataset:
    """Load one split of one subset, from the hub (`path` == "") or from local files under `path`.

    `what` names the data in error messages (e.g. "wikiann/de"); defaults to hub_id/subset.
    Raises ConfigError (one line naming the fix) on missing local files or an unreachable hub.
    """
    what = what or "/".join(x for x in (hub_id, subset) if x)
    if path:
        ext, files = find_local_files(path, subset, split)
        if not files:
            raise ConfigError(
                f"no {split} file for {what} under {path}: expected "
                f"{expected_pattern(path, subset, split)}; check data.path"
            )
        builder, kwargs = EXTENSIONS[ext]
        log.info("loading %s %s from %d local %s file(s) under %s", what, split, len(files), ext, path)
        key = re.sub(r"\W+", "_", split) or "train"  # split names must be \w+ (lang codes may have '-')
        return datasets.load_dataset(builder, data_files={key: files}, split=key, **kwargs)
    if not hub_id:
        raise ConfigError(f"{what}: no hub_id and no data.path; set task.hub_id or data.path=<dir>")
    repo, revision = split_revision(hub_id)
    log.info("loading %s %s from the hub (%s, subset %r)", what, split, hub_id, subset or None)
    try:
        return datasets.load_dataset(repo, subset or None, split=split, revision=revision)
    except Exception as e:  # offline, unknown config/split, gated repo, script-only repo, ...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"could not load {what} split {split} from the hub ({type(e).__name__}: {reason}); "
            f"pass data.path=<dir> with local files laid out as <dir>/{subset or '.'}/{split}-*.parquet, "
            f"or set HF_HUB_OFFLINE=1 with a populated cache"
        ) from e


def task_subset(task: Any, lang: str) -> str:
    """The task's hub config name for `lang` (`hub_subset` is a format string with {lang})."""
    return str(task.hub_subset or "").format(lang=lang)


def load_task_split(
    task: Any, lang: str, split: str, data: Any, raw_split: str | None = None
) -> datasets.Dataset:
    """Raw split of a task for one language; `raw_split` overrides the file/hub split name."""
    raw_split = (raw_split or split).format(lang=lang)
    return load_raw(
        str(task.hub_id or ""),
        task_subset(task, lang),
        raw_split,
        str(getattr(data, "path", "") or ""),
        what=f"{task.name}/{lang}",
    )


def standardize(
    ds: datasets.Dataset, fn: Any, features: datasets.Features, desc: str = ""
) -> datasets.Dataset:
    """Batched map of `fn` (batch -> columns of `features`) that drops every source column.

    `fn` may return fewer rows than it got (filtering), since no source column is kept.
    """
    return ds.map(fn, batched=True, remove_columns=ds.column_names, features=features, desc=desc or None)


def require_columns(ds: datasets.Dataset, columns: list[str] | tuple[str, ...], what: str) -> None:
    """One-line error when a source's files lack the columns of its hub schema."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"{what}: missing column(s) {', '.join(missing)}; found {', '.join(ds.column_names)} "
            f"(the files must use the hub schema)"
        )
