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
only exist as loading scripts, which datasets>=4 refuses to run). A hub id may also be a local directory
holding a copy of the hub repository (same file names, same README), which `datasets.load_dataset`
reads exactly as it reads the hub: that is how the tests check the hub layouts offline.

Gated repositories (e.g. `openlanguagedata/flores_plus`) need the terms accepted once on the dataset's
page and a token: `hf auth login` or `HF_TOKEN=<token>`; `datasets` picks either up by itself.

Local files are read with one-line errors for the usual defects (empty or header-only files, CSV rows
with extra fields), naming the file and the fix (`read_local`).
"""

from __future__ import annotations

import logging
import os
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


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain (datasets wraps parser errors in DatasetGenerationError)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _first_line(e: BaseException, limit: int = 200) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def _check_local_files(files: list[str], ext: str, what: str) -> None:
    """One-line errors for files that hold no rows: zero bytes, or (CSV/TSV/JSONL) only a header/blank."""
    for f in files:
        p = Path(f)
        if p.stat().st_size == 0:
            raise ConfigError(f"{what}: {f} is empty (0 bytes); write the rows there or remove the file")
        if ext in ("csv", "tsv", "jsonl"):
            with p.open("rb") as fh:
                lines = [line for _, line in zip(range(3), fh) if line.strip()]
            if ext == "jsonl" and not lines:
                raise ConfigError(f"{what}: {f} has no rows; write one JSON object per line")
            if ext != "jsonl" and len(lines) < 2:
                raise ConfigError(
                    f"{what}: {f} has a header but no rows; write at least one row under the header"
                )


def read_local(
    files: list[str], ext: str, split: str, what: str, *, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """Local files of one split through datasets' packaged builder, with one-line errors naming the file."""
    _check_local_files(files, ext, what)
    builder, kwargs = EXTENSIONS[ext]
    key = re.sub(r"\W+", "_", split) or "train"  # split names must be \w+ (lang codes may have '-')
    try:
        return datasets.load_dataset(
            builder, data_files={key: files}, split=key, streaming=streaming, **kwargs
        )
    except Exception as e:  # pandas/pyarrow parser errors, wrapped by datasets
        cause = _root_cause(e)
        where = files[0] if len(files) == 1 else f"{len(files)} files under {Path(files[0]).parent}"
        fix = (
            "check the delimiter and quote fields that contain it"
            if ext in ("csv", "tsv")
            else ("fix or remove that file")
        )
        raise ConfigError(
            f"{what}: cannot read {where} ({type(cause).__name__}: {_first_line(cause)}); {fix}"
        ) from e


_LOGGED: set[tuple] = set()


def _log_once(msg: str, *args: Any) -> None:
    """A load is said once per process: an MLM task carves its dev and test rows out of the same
    split, so the same files are read three times (the repeats are debug lines)."""
    (log.debug if args in _LOGGED else log.info)(msg, *args)
    _LOGGED.add(args)


def load_hub(
    hub_id: str,
    subset: str,
    split: str,
    *,
    what: str = "",
    data_files: dict[str, str] | None = None,
    streaming: bool = False,
    local_hint: str = "",
) -> datasets.Dataset | datasets.IterableDataset:
    """One split from a hub repository (or a local copy of one: `hub_id` a directory), as the hub has it.

    `data_files` ({split: glob relative to the repository root}) bypasses the README's configs, for
    branches that have none (an auto-converted `refs/convert/parquet`). ConfigError on any failure.
    """
    what = what or "/".join(x for x in (hub_id, subset) if x)
    repo, revision = split_revision(hub_id)
    _log_once("loading %s %s from %s (subset %r)", what, split, hub_id, subset or None)
    if not Path(repo).is_dir():
        _offline_unless_reachable()
    kwargs: dict[str, Any] = {"split": split, "revision": revision, "streaming": streaming}
    if data_files:
        kwargs["data_files"] = data_files
    try:
        return datasets.load_dataset(repo, None if data_files else (subset or None), **kwargs)
    except Exception as e:  # offline, unknown config/split, gated repo, script-only repo, ...
        reason = _first_line(e)
        if "gated" in str(e).lower() or "401" in reason or "403" in reason:
            raise ConfigError(
                f"{what}: {repo} is gated ({type(e).__name__}: {reason}); accept its terms at "
                f"https://huggingface.co/datasets/{repo} and log in (hf auth login, or HF_TOKEN=<token>)"
            ) from e
        local = local_hint or (
            f"data.path=<dir> with local files laid out as <dir>/{subset or '.'}/{split}-*.parquet"
        )
        cache = (
            "or download it once online (offline mode reads only the local cache, which lacks it)"
            if datasets.config.HF_HUB_OFFLINE
            else "or set HF_HUB_OFFLINE=1 with a populated cache"
        )
        raise ConfigError(
            f"could not load {what} split {split} from the hub ({type(e).__name__}: {reason}); "
            f"pass {local}, {cache}"
        ) from e


_REACHABLE: bool | None = None


def _offline_unless_reachable(timeout: float = 3.0) -> None:
    """Without a network, the hub client retries for about 30 s with a warning per retry before it
    fails or falls back to the cache. One quick connection test instead: if the hub cannot be reached,
    say so in one line and read the local cache only (offline mode) from then on."""
    global _REACHABLE
    if _REACHABLE is not None or datasets.config.HF_HUB_OFFLINE:
        return
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub_constants

    url = urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        _REACHABLE = True
    except OSError as err:
        _REACHABLE = False
        log.warning(
            "the hub (%s) cannot be reached (%s): reading the local cache only, as with HF_HUB_OFFLINE=1",
            url.hostname,
            err.__class__.__name__,
        )
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub_constants.HF_HUB_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True


def load_raw(
    hub_id: str, subset: str, split: str, path: str = "", *, what: str = "", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split of one subset, from the hub (`path` == "") or from local files under `path`.

    `what` names the data in error messages (e.g. "wikiann/de"); defaults to hub_id/subset.
    `streaming` returns an IterableDataset that reads rows lazily (hub or local).
    Raises ConfigError (one line naming the fix) on missing or unreadable local files or an unreachable hub.
    """
    what = what or "/".join(x for x in (hub_id, subset) if x)
    if path:
        ext, files = find_local_files(path, subset, split)
        if not files:
            raise ConfigError(
                f"no {split} file for {what} under {path}: expected "
                f"{expected_pattern(path, subset, split)}; check data.path"
            )
        _log_once("loading %s %s from %d local %s file(s) under %s", what, split, len(files), ext, path)
        return read_local(files, ext, split, what, streaming=streaming)
    if not hub_id:
        raise ConfigError(f"{what}: no hub_id and no data.path; set task.hub_id or data.path=<dir>")
    return load_hub(hub_id, subset, split, what=what, streaming=streaming)


def source_files(path: str, subset: str, split: str) -> str:
    """The local file(s) a split is read from, for error messages ("" when not local)."""
    if not path:
        return ""
    _, files = find_local_files(path, subset, split)
    return (
        files[0]
        if len(files) == 1
        else (f"{len(files)} files under {Path(files[0]).parent}" if files else "")
    )


def task_subset(task: Any, lang: str) -> str:
    """The task's hub config name for `lang` (`hub_subset` is a format string with {lang})."""
    return str(task.hub_subset or "").format(lang=lang)


def load_task_split(
    task: Any, lang: str, split: str, data: Any, raw_split: str | None = None, *, streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """Raw split of a task for one language; `raw_split` overrides the file/hub split name."""
    raw_split = (raw_split or split).format(lang=lang)
    return load_raw(
        str(task.hub_id or ""),
        task_subset(task, lang),
        raw_split,
        str(getattr(data, "path", "") or ""),
        what=f"{task.name}/{lang}",
        streaming=streaming,
    )


def task_source_name(task: Any, lang: str, split: str, data: Any) -> str:
    """Where a task split comes from, for messages: the local file(s), or `hub id[/subset] split`."""
    path = str(getattr(data, "path", "") or "")
    local = source_files(path, task_subset(task, lang), split.format(lang=lang))
    if local:
        return local
    return f"{'/'.join(x for x in (str(task.hub_id or ''), task_subset(task, lang)) if x)} {split}"


def standardize(
    ds: datasets.Dataset, fn: Any, features: datasets.Features, desc: str = ""
) -> datasets.Dataset:
    """Batched map of `fn` (batch -> columns of `features`) that drops every source column.

    `fn` may return fewer rows than it got (filtering), since no source column is kept.
    """
    return ds.map(fn, batched=True, remove_columns=ds.column_names, features=features, desc=desc or None)


def check_labels(ds: datasets.Dataset, column: str, what: str, where: str, num_labels: int = 0) -> None:
    """One-line ConfigError unless `column` holds whole numbers (in 0..num_labels-1 when num_labels > 0).

    Catches, before any model loads: label names instead of ids, fractional labels (which `int()` would
    truncate silently) and ids out of the task's range. Rows are numbered from 1, header excluded.
    Negative labels are left alone: loaders drop them (PAWS-X marks unlabelled rows with -1).
    """
    import numpy as np
    import pyarrow as pa

    col = ds.with_format("arrow")[column]
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    typ = col.type
    fix_ids = f"use integer ids 0..{num_labels - 1}" if num_labels > 0 else "use integer ids"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        values = col.to_pylist()
        bad = next((i for i, v in enumerate(values) if v is not None and not _is_int(v)), None)
        if bad is not None:
            raise ConfigError(
                f"{what}: {where} column {column!r} row {bad + 1} is {values[bad]!r}, not an integer label; "
                f"{fix_ids}, in task.label_names order"
            )
        arr = np.asarray([-1 if v is None else int(v) for v in values], dtype=np.int64)
    elif pa.types.is_floating(typ):
        arr = np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
        frac = np.flatnonzero(~np.isnan(arr) & (arr != np.round(arr)))
        if len(frac):
            i = int(frac[0])
            raise ConfigError(
                f"{what}: {where} column {column!r} row {i + 1} is {arr[i]:g}, a fractional label "
                f"(it would be truncated); {fix_ids}"
            )
    elif pa.types.is_integer(typ):
        arr = np.asarray(col.to_numpy(zero_copy_only=False))
    else:
        raise ConfigError(f"{what}: {where} column {column!r} has type {typ}; {fix_ids}")
    if num_labels > 0 and len(arr):
        high = np.flatnonzero(arr >= num_labels)
        if len(high):
            i = int(high[0])
            raise ConfigError(
                f"{what}: {where} column {column!r} row {i + 1} is {int(arr[i])}, out of range for "
                f"task.num_labels={num_labels}; {fix_ids} (or set task.num_labels)"
            )


def _is_int(v: Any) -> bool:
    return str(v).strip().removeprefix("-").isdigit()


def require_columns(ds: datasets.Dataset, columns: list[str] | tuple[str, ...], what: str) -> None:
    """One-line error when a source's files lack the columns of its hub schema."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"{what}: missing column(s) {', '.join(missing)}; found {', '.join(ds.column_names)} "
            f"(the files must use the hub schema)"
        )
