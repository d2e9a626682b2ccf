"""Sweeps that can be left running: each job's outcome, the sweep's manifest, the summary, threads.

A job of a `-m` sweep writes `xsub-job.json` into its own folder (Hydra's job folder): `running` when
it starts (host, pid, threads), then `done`, `skipped` (every artifact it makes was already in the
store) or `failed` (the error's one line and the job's log file). A failure never leaves the job as an
exception through Hydra's sweeper: the error is logged to the job's own log file, the job returns it,
and the launchers (hydra_plugins.xsub_launcher) collect every job before `finish()` prints one line per
job and the exit status (1 if any failed).

The launchers write `xsub-sweep.json` into the sweep folder when they submit: every job's number,
overrides, folder, Slurm/submitit job id and log files, so `stage=status` can tell pending jobs (no
folder yet) from running and finished ones.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OUTCOME = "xsub-job.json"
MANIFEST = "xsub-sweep.json"
THREADS_ENV = "XSUB_JOB_THREADS"  # set by the local launcher for the jobs it starts


class JobFailed(Exception):
    """A sweep job's error as one line, with the log file holding the rest; picklable (submitit)."""

    def __init__(self, line: str, log_path: str = "") -> None:
        super().__init__(line)
        self.line = line
        self.log = log_path

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobFailed, (self.line, self.log))


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return first if first else type(err).__name__


# ---------------------------------------------------------------------------------------------- threads


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(concurrent: int, available: int | None = None) -> int:
    """Threads per job when `concurrent` jobs share this machine's cores (at least 1)."""
    return max(1, (available or cores()) // max(1, concurrent))


def job_threads() -> int | None:
    """The thread count the launcher chose for this job: XSUB_JOB_THREADS (local launcher) or the
    CPUs Slurm gave the task (SLURM_CPUS_PER_TASK); None = torch's default."""
    for name in (THREADS_ENV, "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def apply_threads() -> int | None:
    n = job_threads()
    if n is None:
        return None
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    torch.set_num_threads(n)
    return n


# ------------------------------------------------------------------------------------------- job side


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _write_json(target: Path, obj: Any) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(target)


def read_json(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads(target.read_text())
    except (OSError, ValueError):
        return None


def _already_done(cfg: Any) -> bool:
    """Every artifact the job makes is finished in the store (and force is off): the stage will only
    find them. Unknown (a stage without store keys, an error computing them) counts as not done."""
    if cfg.get("force", False):
        return False
    try:
        from xsub import store
        from xsub.report.select import job_keys

        keys = job_keys(cfg)
        return bool(keys) and all(store.done(cfg, k) is not None for k in keys)
    except Exception:  # the stage itself reports whatever is wrong
        return False


def run_job(cfg: Any, run: Callable[[Any], Any]) -> dict[str, Any]:
    """Run one sweep job, recording its outcome in its folder. A failure is logged (to the job's log
    file too) and raised as JobFailed, which Hydra returns to the launcher instead of ending the sweep."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    job_log = folder / f"{hc.job.name}.log"
    threads = apply_threads()
    record: dict[str, Any] = {
        "status": "running",
        "num": hc.job.num,
        "overrides": list(hc.overrides.task),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "threads": threads,
        "log": str(job_log),
        "slurm_job": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID")),
    }
    outcome = folder / OUTCOME
    _write_json(outcome, record)
    skipped = _already_done(cfg)
    try:
        run(cfg)
    except KeyboardInterrupt:
        _write_json(outcome, {**record, "status": "interrupted", "ended": time.time()})
        raise
    except Exception as err:
        from xsub import store
        from xsub.config import XsubError

        mapped: BaseException = err
        if isinstance(err, OSError):
            mapped = store.disk_error(err, Path(err.filename or store.root(cfg)))
        line = one_line(mapped)
        if isinstance(mapped, XsubError):
            log.error("xsub: error: %s", line)
        else:  # a bug or an environment problem: the traceback goes to the job's log
            log.exception("xsub: error: %s", line)
        _write_json(outcome, {**record, "status": "failed", "error": line, "ended": time.time()})
        raise JobFailed(line, str(job_log)) from None
    status = "skipped" if skipped else "done"
    _write_json(outcome, {**record, "status": status, "ended": time.time()})
    return {"status": status, "log": str(job_log)}


# -------------------------------------------------------------------------------------- launcher side


@dataclass
class Result:
    num: int
    overrides: list[str]
    status: str  # done | skipped | failed | submitted
    error: str = ""
    log: str = ""
    job_id: str = ""


@dataclass
class _State:
    results: list[Result] = field(default_factory=list)
    sweep_dir: str = ""
    manifests: set[str] = field(default_factory=set)


STATE = _State()


def job_entry(num: int, overrides: Sequence[str], folder: str, log_path: str, **extra: Any) -> dict:
    return {"num": num, "overrides": list(overrides), "dir": folder, "log": log_path, **extra}


def write_manifest(sweep_dir: Path, launcher: str, jobs: list[dict[str, Any]], **extra: Any) -> Path:
    """Record the submitted jobs; the first launch of this process replaces an older manifest (a rerun
    into the same folder), later batches are added to it."""
    target = Path(sweep_dir) / MANIFEST
    key = str(target.resolve())
    old = read_json(target) if key in STATE.manifests else None
    STATE.manifests.add(key)
    manifest = old or {
        "launcher": launcher,
        "cwd": os.getcwd(),
        "submitted": time.time(),
        "argv": sys.argv[1:],
        "jobs": [],
        **extra,
    }
    manifest["jobs"] = [*manifest["jobs"], *jobs]
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_json(target, manifest)
    return target


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(sweep_dir) / MANIFEST)


def collect(result: Result, sweep_dir: str) -> None:
    STATE.results.append(result)
    STATE.sweep_dir = sweep_dir


def result_of(job_return: Any, num: int, overrides: Sequence[str], log_path: str) -> Result:
    """A Result from Hydra's JobReturn (the job's return value or its exception)."""
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED:
        value = job_return._return_value
        status = value.get("status", "done") if isinstance(value, dict) else "done"
        return Result(num, list(overrides), status, log=log_path)
    err = job_return._return_value
    if isinstance(err, JobFailed):
        return Result(num, list(overrides), "failed", err.line, err.log or log_path)
    return Result(num, list(overrides), "failed", one_line(err) if err else "failed", log_path)


def completed_return(overrides: Sequence[str]) -> Any:
    """A JobReturn Hydra's sweeper accepts (it raises a failed job's exception, ending the sweep);
    the real outcome is in STATE.results."""
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.overrides = list(overrides)
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret


def _shown(overrides: Sequence[str]) -> str:
    from hydra.core.utils import filter_overrides

    return " ".join(filter_overrides(list(overrides))) or "(no overrides)"


def follow_up(sweep_dir: str) -> list[str]:
    return [
        f"python -m xsub stage=status report.sweep={sweep_dir}",
        f"python -m xsub stage=report report.sweep={sweep_dir}",
    ]


def summary_lines(results: list[Result], sweep_dir: str) -> list[str]:
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    lines = [
        f"sweep {sweep_dir}: {len(results)} job(s): {counts['done']} done, "
        f"{counts['skipped']} skipped, {counts['failed']} failed"
    ]
    width = max((len(str(r.num)) for r in results), default=1)
    for r in sorted(results, key=lambda r: r.num):
        line = f"  #{r.num:<{width}} {r.status:<7} {_shown(r.overrides)}"
        if r.status == "failed":
            line += f": {r.error} (log: {r.log})"
        lines.append(line)
    if counts["failed"]:
        lines.append(
            f"{counts['failed']} job(s) failed; rerun the same command to redo only the failed and "
            f"missing jobs, or see: {follow_up(sweep_dir)[0]}"
        )
    return lines


def finish() -> int:
    """After a sweep: one line per job, the exit status (1 if any job failed); 0 with nothing to say."""
    results, STATE.results = STATE.results, []
    ran = [r for r in results if r.status != "submitted"]
    if not ran:
        return 0
    for line in summary_lines(ran, STATE.sweep_dir):
        print(line, flush=True)
    return 1 if any(r.status == "failed" for r in ran) else 0


@contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (None: leave) environment variables for the jobs started inside; restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
