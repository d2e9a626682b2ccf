"""stage=status: where every job of a sweep stands, while it runs or after it ended.

`python -m xsub stage=status report.sweep=multirun/<date>` prints one row per job: done / running /
pending / failed, and why. It reads, for each job:

- the sweep's manifest (`xsub-sweep.json`, written at submission: the jobs, their Slurm/submitit ids
  and log files), so a job that has not started yet (no folder) shows as pending;
- the job's own outcome file (`<job>/xsub-job.json`: running, done, skipped, failed with its error);
- on Slurm, `sacct` (PENDING, RUNNING, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY ...);
- the store: the artifacts the job's config names (report.select.job_keys) are done, partial (a
  resumable run stopped) or locked (being written now).

Then the counts and the failed jobs' error lines with their log files.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import store, sweep
from xsub.config import ConfigError
from xsub.report.select import _job_root, job_configs, job_keys
from xsub.tables import format_table

log = logging.getLogger(__name__)

STATES = ("done", "running", "pending", "failed")
SLURM_ACTIVE = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
SLURM_FAILED = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def _slurm_states(ids: list[str]) -> dict[str, str]:
    """Job id (array task `123_4`) -> its Slurm state, from sacct (squeue without accounting)."""
    if not ids:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    found: dict[str, str] = {}
    for job, state in _states("sacct", "-n", "-X", "-P", "-j", ",".join(arrays), "-o", "JobID,State"):
        for one in _array_tasks(job):
            found[one] = state.split()[0] if state else ""
    for job, state in _states("squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T"):
        found.setdefault(job, state)
    return found


def _states(*cmd: str) -> list[tuple[str, str]]:
    """(job, state) pairs a Slurm command prints as `job|state` lines; none where it is not installed
    or fails (a cluster without accounting has no sacct)."""
    if not shutil.which(cmd[0]):
        return []
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        return []
    return [(job, state) for job, _, state in (line.partition("|") for line in out.stdout.splitlines())]


def _array_tasks(job: str) -> list[str]:
    """`123_[0-2,5]` (sacct's pending array tasks) -> 123_0 123_1 123_2 123_5; other ids as they are."""
    head, sep, rest = job.partition("_[")
    if not sep:
        return [job]
    tasks = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            tasks += [f"{head}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return tasks


def _job_num(job_dir: Path) -> int | None:
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        num = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.num")
        if num is not None:
            return int(num)
    head = job_dir.name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _compose(overrides: list[str]) -> DictConfig | None:
    """A pending job's config from its overrides (it has no folder yet)."""
    from xsub.__main__ import compose_runs

    try:
        return compose_runs([o for o in overrides if not o.startswith("hydra.")], multirun=False)[0]
    except Exception:
        return None


def _store_state(job_dir: Path | None, cfg: DictConfig | None, cwd: str) -> str:
    """done / locked / partial / missing / '' (unknown) for the artifacts the job makes."""
    if cfg is None:
        return ""
    try:
        if job_dir is not None:
            root = _job_root(job_dir, cfg)
        else:
            path = Path(str(cfg.paths.artifacts)).expanduser()
            root = path if path.is_absolute() else Path(cwd) / path
        cfg = OmegaConf.merge(cfg, {"paths": {"artifacts": str(root)}})
        keys = job_keys(cfg)
    except Exception:
        return ""
    if not keys:
        return ""
    states = []
    for key in keys[:1] if str(cfg.get("stage")) != "prune" else [k for k in keys if k.kind == "mask"]:
        target = store.path(cfg, key)
        if store.is_locked(store.root(cfg), target.relative_to(store.root(cfg))):
            states.append("locked")
        elif store.is_done(target):
            states.append("done")
        elif target.with_name(target.name + ".partial").is_dir():
            states.append("partial")
        else:
            states.append("missing")
    for s in ("locked", "partial", "missing"):
        if s in states:
            return s
    return "done"


def _alive(outcome: dict[str, Any]) -> bool | None:
    """A local job's process is alive (None: another host, or a Slurm job: not checkable here)."""
    if outcome.get("slurm_job") or outcome.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(outcome["pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        return False
    return True


def job_state(
    outcome: dict[str, Any] | None, slurm: str, stored: str, submitted: float, has_dir: bool
) -> tuple[str, str]:
    """(done | running | pending | failed, detail) from the job's outcome file, Slurm and the store."""
    if outcome is not None and outcome.get("started", 0) < submitted - 1:
        outcome = None  # left by an earlier run into the same folder
    status = (outcome or {}).get("status")
    if status in ("done", "skipped"):
        return "done", "skipped: already in the store" if status == "skipped" else "finished"
    if status == "failed":
        return "failed", outcome.get("error", "")
    if slurm in SLURM_FAILED or status == "interrupted":
        return "failed", f"Slurm: {slurm}" if slurm else "interrupted"
    if slurm in SLURM_RUNNING or status == "running":
        if status == "running" and _alive(outcome) is False:
            return "failed", "its process ended without an outcome (killed?)"
        detail = f"since {_ago(outcome['started'])}" if outcome else "started"
        return "running", detail + (f", store: {stored}" if stored else "")
    if slurm in SLURM_ACTIVE:
        return "pending", f"Slurm: {slurm}"
    if slurm == "COMPLETED":
        return ("done", "finished (Slurm)") if stored in ("done", "") else ("failed", f"store: {stored}")
    if stored == "done":
        return "done", "in the store"
    if stored == "locked":
        return "running", "store: being written"
    return "pending", "not started" + (f", store: {stored}" if stored and stored != "missing" else "")


def _ago(t: float) -> str:
    import time

    s = max(0, int(time.time() - t))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def status(sweep_dir: Path) -> dict[str, Any]:
    manifest = sweep.read_manifest(sweep_dir) or {}
    submitted = float(manifest.get("submitted", 0))
    cwd = manifest.get("cwd", os.getcwd())
    jobs: dict[int, dict[str, Any]] = {int(j["num"]): dict(j) for j in manifest.get("jobs", [])}
    try:
        found = job_configs(sweep_dir)
    except ConfigError:
        if not jobs:
            raise
        found = []
    for job_dir, cfg in found:
        num = _job_num(job_dir)
        if num is None:
            continue
        entry = jobs.setdefault(num, {"num": num, "overrides": [], "log": ""})
        entry.update(dir=str(job_dir), cfg=cfg)
        if not entry["overrides"]:
            overrides = job_dir / ".hydra" / "overrides.yaml"
            entry["overrides"] = list(OmegaConf.load(overrides)) if overrides.is_file() else []
    slurm = _slurm_states([j["job_id"] for j in jobs.values() if j.get("job_id")])
    rows, out = [], []
    for num in sorted(jobs):
        j = jobs[num]
        job_dir = Path(j["dir"]) if j.get("dir") and Path(j["dir"]).is_dir() else None
        cfg = j.get("cfg") if job_dir is not None else None
        if cfg is None:
            cfg = _compose(list(j.get("overrides", [])))
        outcome = sweep.read_json(job_dir / sweep.OUTCOME) if job_dir is not None else None
        stored = _store_state(job_dir, cfg, cwd)
        state, detail = job_state(
            outcome, slurm.get(str(j.get("job_id", "")), ""), stored, submitted, bool(job_dir)
        )
        log_path = (outcome or {}).get("log") or j.get("log") or j.get("stderr", "")
        shown = " ".join(o for o in j.get("overrides", []) if not o.startswith("hydra.")) or "(no overrides)"
        rows.append([num, j.get("job_id", "") or "-", state, shown, detail])
        out.append({"num": num, "state": state, "detail": detail, "log": log_path, "overrides": shown})
    counts = {s: sum(r["state"] == s for r in out) for s in STATES}
    title = f"sweep {sweep_dir}: {len(out)} job(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES)
    print(format_table(["#", "job id", "state", "overrides", "detail"], rows, title))
    failed = [r for r in out if r["state"] == "failed"]
    for r in failed:
        print(f"failed #{r['num']} {r['overrides']}: {r['detail']} (log: {r['log']})")
    if failed:
        print("rerun the sweep's command to redo only the failed and missing jobs")
    return {"counts": counts, "jobs": out}


def run(cfg: DictConfig) -> dict[str, Any]:
    folder = str(cfg.report.sweep) if "report" in cfg else ""
    if not folder:
        raise ConfigError("stage=status needs the sweep folder: report.sweep=multirun/<date>")
    return status(Path(folder).expanduser())
