"""Sweeps people can leave running: a failed job does not sink the sweep, stage=status, submit-and-exit
on Slurm, threads per job.

The local tests run `python -m xsub -m ...` in a subprocess (tiny configs, 2 jobs); the `slurm` ones run
on the local single-node cluster of slurm/local-cluster.sh (the fixture of test_slurm.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import make_cfg
from test_slurm import _artifact_root, _launcher, slurm_env  # noqa: F401 (slurm_env: the fixture)

REPO = Path(__file__).resolve().parents[1]


def _env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _xsub(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-m", "xsub", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"python -m xsub {' '.join(args)} did not end within {timeout:.0f} s:\n{err.stdout}")


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _mlm_done(root: Path) -> list[Path]:
    return sorted((root / "models" / "synth-bert" / "synth-mlm").rglob("DONE.json"))


def _failing_sweep(root: Path, bad: Path) -> list[str]:
    """Two tiny pretraining jobs; the second reads data.path=<bad>, which does not exist (yet)."""
    return [
        "-m",
        "stage=train",
        "task=synth-mlm",
        "debug=tiny",
        f'data.path="",{bad}',
        f"paths.artifacts={root}",
    ]


def _make_bad_path_valid(root: Path, bad: Path) -> None:
    """Point the failing job's data.path at the generated data: its rerun then succeeds."""
    from xsub.data import builtin_path

    bad.symlink_to(builtin_path(make_cfg("task=synth-mlm", "debug=tiny", f"paths.artifacts={root}")))


def _check_failed_sweep(run: subprocess.CompletedProcess, sweep_dir: Path, bad: Path) -> str:
    out = run.stdout + run.stderr
    assert run.returncode == 1, f"a sweep with a failed job must exit 1, got {run.returncode}:\n{_tail(out)}"
    summary = [line for line in run.stdout.splitlines() if line.startswith(("sweep ", "  #"))]
    assert summary and summary[0].endswith("2 job(s): 1 done, 0 skipped, 1 failed"), _tail(out)
    (failed,) = [line for line in summary if " failed " in line and "#1" in line]
    assert f"data.path={bad}" in failed and "check data.path" in failed, failed
    log = Path(failed.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and log.is_relative_to(sweep_dir), log
    assert "no train file for synth-mlm" in log.read_text(), "the error did not reach the job's own log"
    return out


@pytest.mark.slow
def test_local_sweep_survives_a_failed_job_and_the_rerun_redoes_only_it(tmp_path):
    root, bad, sweep_dir = tmp_path / "artifacts", tmp_path / "later", tmp_path / "multirun"
    args = [*_failing_sweep(root, bad), f"hydra.sweep.dir={sweep_dir}"]
    env = _env()
    first = _xsub(args, env, timeout=300)
    _check_failed_sweep(first, sweep_dir, bad)
    assert len(_mlm_done(root)) == 1, "the good job did not finish"
    stamp = _mlm_done(root)[0].stat().st_mtime_ns

    status = _xsub(["stage=status", f"report.sweep={sweep_dir}"], env, timeout=120)
    assert "2 job(s): 1 done, 0 running, 0 pending, 1 failed" in status.stdout, status.stdout + status.stderr
    assert "failed #1" in status.stdout and "check data.path" in status.stdout

    _make_bad_path_valid(root, bad)
    again = _xsub(args, env, timeout=300)
    assert again.returncode == 0, _tail(again.stdout + again.stderr)
    assert "2 job(s): 1 done, 1 skipped, 0 failed" in again.stdout, _tail(again.stdout)
    assert "#0 skipped" in again.stdout and "#1 done" in again.stdout, _tail(again.stdout)
    assert len(_mlm_done(root)) == 2, "the failed job's rerun left no model"
    assert any(p.stat().st_mtime_ns == stamp for p in _mlm_done(root)), "the finished job was redone"


def _job_dir(sweep_dir: Path, num: int, overrides: list[str], outcome: dict | None) -> Path:
    folder = sweep_dir / f"{num}_job"
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(make_cfg(*overrides), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), folder / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    if outcome is not None:
        (folder / "xsub-job.json").write_text(json.dumps(outcome))
    return folder


def test_status_of_a_sweep_in_progress(tmp_path, capsys):
    """A sweep folder as a running sweep leaves it: one job finished, one running (this process), one
    failed, one submitted and not started (no folder), one whose model is already in the store."""
    from xsub.__main__ import run_stage
    from xsub.sweep import MANIFEST

    root = tmp_path / "artifacts"
    sweep_dir = tmp_path / "multirun"
    base = ["stage=train", "task=synth-cls", "debug=tiny", f"paths.artifacts={root}"]
    jobs = [[*base, f"seed={s}"] for s in range(5)]
    now = time.time()
    me = {"host": os.uname().nodename, "pid": os.getpid(), "started": now, "log": "x.log"}
    _job_dir(sweep_dir, 0, jobs[0], {**me, "status": "done"})
    _job_dir(sweep_dir, 1, jobs[1], {**me, "status": "running"})
    _job_dir(sweep_dir, 2, jobs[2], {**me, "status": "failed", "error": "boom: one line", "log": "two.log"})
    done = make_cfg(*jobs[4])
    from xsub import store

    model = store.path(done, store.model_key(done))
    model.mkdir(parents=True)
    (model / store.DONE).write_text(json.dumps({"kind": "model"}))
    manifest = {
        "launcher": "slurm",
        "cwd": str(tmp_path),
        "submitted": now - 5,
        "jobs": [
            {"num": i, "overrides": jobs[i], "dir": str(sweep_dir / f"{i}_job"), "log": ""} for i in range(5)
        ],
    }
    (sweep_dir / MANIFEST).write_text(json.dumps(manifest))

    result = run_stage(make_cfg("stage=status", f"report.sweep={sweep_dir}"))
    states = [j["state"] for j in result["jobs"]]
    assert states == ["done", "running", "failed", "pending", "done"], result["jobs"]
    assert result["counts"] == {"done": 2, "running": 1, "pending": 1, "failed": 1}
    out = capsys.readouterr().out
    assert "5 job(s): 2 done, 1 running, 1 pending, 1 failed" in out
    assert "failed #2" in out and "boom: one line (log: two.log)" in out


def test_threads_are_divided_among_concurrent_jobs(monkeypatch):
    from xsub import sweep

    assert sweep.threads_for(4, available=2) == 1
    assert sweep.threads_for(2, available=8) == 4
    assert sweep.threads_for(3, available=8) == 2
    monkeypatch.delenv(sweep.THREADS_ENV, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert sweep.job_threads() == 3  # a Slurm job uses the CPUs it asked for
    monkeypatch.setenv(sweep.THREADS_ENV, "2")
    assert sweep.job_threads() == 2


def test_status_reads_sacct_rows_of_pending_array_tasks():
    from xsub.stages.status import _array_tasks

    assert _array_tasks("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _array_tasks("12_3") == ["12_3"]


# ------------------------------------------------------------------------------------------------ Slurm


def _slurm_args(sweep_dir: Path, tag: str) -> tuple[list[str], str]:
    name = f"xsub-test-{tag}-{uuid.uuid4().hex[:6]}"
    return _launcher(sweep_dir, name, timeout_min=15), name


def _squeue(env: dict[str, str], name: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", f"--name={name}", "-o", "%i %T"], env=env, capture_output=True, text=True, timeout=30
    )
    return out.stdout.split("\n") if out.stdout.strip() else []


@pytest.mark.slurm
def test_slurm_submit_and_exit_then_the_jobs_finish(slurm_env, pretrained_root, tmp_path):  # noqa: F811
    from xsub.__main__ import run_stage

    root = _artifact_root(pretrained_root, tmp_path / "artifacts")
    sweep_dir = tmp_path / "multirun"
    launcher, name = _slurm_args(sweep_dir, "nowait")
    args = ["-m", "stage=train", "task=synth-cls", "debug=tiny", "lang=xsvo,xsov", f"paths.artifacts={root}"]
    env = _env(slurm_env)
    start = time.monotonic()
    run = _xsub([*args, *launcher, "hydra.launcher.wait=false"], env, timeout=120)
    returned_s = time.monotonic() - start
    queued = _squeue(env, name)
    out = run.stdout + run.stderr
    assert run.returncode == 0, _tail(out)
    assert queued, f"the command returned after its jobs ended ({returned_s:.0f} s):\n{_tail(out)}"
    assert "submitted 2 job(s)" in run.stdout and f"sweep folder: {sweep_dir}" in run.stdout, run.stdout
    assert f"stage=status report.sweep={sweep_dir}" in run.stdout
    assert f"stage=report report.sweep={sweep_dir}" in run.stdout

    early = run_stage(make_cfg("stage=status", f"report.sweep={sweep_dir}"))
    assert early["counts"]["failed"] == 0 and len(early["jobs"]) == 2, early
    assert early["counts"]["pending"] + early["counts"]["running"] >= 1, early

    models = root / "models" / "synth-bert" / "synth-cls"
    deadline = time.monotonic() + 180
    while len(list(models.rglob("DONE.json"))) < 2 or _squeue(env, name):
        if time.monotonic() > deadline:
            subprocess.run(["scancel", f"--name={name}"], env=env, timeout=30, check=False)
            pytest.fail(f"the submitted jobs did not finish within 180 s; squeue: {_squeue(env, name)}")
        time.sleep(2)
    print(f"\nsubmit-and-exit returned after {returned_s:.1f} s; jobs done {time.monotonic() - start:.1f} s")
    late = run_stage(make_cfg("stage=status", f"report.sweep={sweep_dir}"))
    assert late["counts"] == {"done": 2, "running": 0, "pending": 0, "failed": 0}, late


@pytest.mark.slurm
def test_slurm_sweep_survives_a_failed_job_and_the_rerun_redoes_only_it(slurm_env, tmp_path):  # noqa: F811
    root, bad, sweep_dir = tmp_path / "artifacts", tmp_path / "later", tmp_path / "multirun"
    launcher, _ = _slurm_args(sweep_dir, "fail")
    env = _env(slurm_env)
    args = [*_failing_sweep(root, bad), *launcher]
    first = _xsub(args, env, timeout=240)
    _check_failed_sweep(first, sweep_dir, bad)
    assert len(_mlm_done(root)) == 1, "the good job did not finish"
    stamp = _mlm_done(root)[0].stat().st_mtime_ns

    _make_bad_path_valid(root, bad)
    again = _xsub(args, env, timeout=240)
    assert again.returncode == 0, _tail(again.stdout + again.stderr)
    assert "2 job(s): 1 done, 1 skipped, 0 failed" in again.stdout, _tail(again.stdout)
    assert "#0 skipped" in again.stdout and "#1 done" in again.stdout
    assert len(_mlm_done(root)) == 2 and any(p.stat().st_mtime_ns == stamp for p in _mlm_done(root))
