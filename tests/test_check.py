"""`python -m xsub ... --check`: compose and validate every job, print one line, run nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xsub.__main__ import check
from xsub.config import ConfigError


def xsub(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "xsub", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_check_counts_the_jobs_of_a_sweep_and_exits_0(tmp_path):
    res = xsub(
        "-m",
        "--check",
        "stage=train",
        "task=synth-cls",
        "lang=xsvo,xsov",
        "seed=0,1",
        f"paths.artifacts={tmp_path}",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok: 4 jobs"
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_check_fails_with_one_line_and_exit_2():
    res = xsub("-m", "--check", "stage=train", "task=xnli", "model=xlmr-base", "lang=de,ja")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "task xnli has no language 'ja'" in lines[0]


def test_check_validates_the_launcher_too():
    with pytest.raises(ConfigError, match="partitionn"):
        check(["-m", "hydra/launcher=slurm", "hydra.launcher.partitionn=gpu", "stage=train", "seed=0,1"])
    assert (
        check(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "stage=train", "seed=0,1"]) == 2
    )


def test_analysis_tasks_without_task_runs_on_the_first_task():
    argv = [
        "stage=analyze",
        "analysis=cka",
        "analysis.tasks=[marc,paws-x]",
        "lang=[en,de,zh]",
        "model=xlmr-base",
    ]
    assert check(argv) == 1


def test_cfg_job_resolves_the_language_list():
    res = xsub("task=xnli", "lang=de", "model=xlmr-base", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert "xsub_langs" not in res.stdout and "- ar" in res.stdout
