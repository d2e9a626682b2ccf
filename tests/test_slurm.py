"""Sweeps through the submitit SLURM launcher on a real single-node Slurm (slurm/local-cluster.sh).

`.venv/bin/python -m pytest -q -m slurm tests/test_slurm.py` (root; installs slurm-wlm, munge, slurmdbd and
mariadb-server with apt-get on first use). The module is skipped only where Slurm cannot be had (not
root, no apt-get, install failed: local-cluster.sh exits 69); any other cluster failure fails. A cluster
that was already up (same $XSUB_SLURM_DIR) is used and left running; one started here is stopped.
Every wait is bounded, so a broken cluster fails in minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from conftest import make_cfg

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local-cluster.sh"
EX_UNAVAILABLE = 69  # local-cluster.sh: Slurm cannot be installed/started here
LANGS = ("xsvo", "xsov")
SEEDS = (0, 1)
PRUNE = (
    "stage=prune",
    "task=synth-cls",
    "debug=tiny",
    "lang=xsvo",
    "seed=0",
    "pruning.threshold=0.0",
    "pruning.max_rounds=6",
    # ~1.3 s a round on 2 CPU cores: time to interrupt the job between its checkpointed rounds
    "pruning.n_examples=2000",
    "data.max_train_examples=2000",
)


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _cluster(cmd: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """Environment (SLURM_CONF, one thread) for commands against the local cluster; up for the module."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    was_up = _cluster("status", env, timeout=60).returncode == 0
    try:
        up = _cluster("up", env, timeout=420)  # a first run installs packages (~40 s)
    except subprocess.TimeoutExpired:
        pytest.fail("slurm/local-cluster.sh up did not finish within 420 s")
    if up.returncode == EX_UNAVAILABLE:
        reason = (up.stderr.strip().splitlines() or ["local-cluster.sh exited 69"])[-1]
        pytest.skip(f"no local Slurm: {reason}")
    if up.returncode != 0:
        pytest.fail(f"slurm/local-cluster.sh up failed ({up.returncode}):\n{_tail(up.stderr)}")
    exports = [line for line in up.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
    assert exports, f"`up` printed no SLURM_CONF line:\n{up.stdout}"
    env["SLURM_CONF"] = exports[-1].split("=", 1)[1]
    yield env
    if not was_up:
        down = _cluster("down", env, timeout=180)
        assert down.returncode == 0, f"slurm/local-cluster.sh down failed:\n{_tail(down.stderr)}"


def _launcher(sweep_dir: Path, name: str, timeout_min: int) -> list[str]:
    """The submitit SLURM launcher, sized for the one-node CPU cluster. Jobs run with the submitting
    interpreter (this venv's python: submitit's default) and inherit the environment (sbatch's default)."""
    return [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        f"hydra.launcher.timeout_min={timeout_min}",
        f"hydra.launcher.name={name}",
        "hydra.launcher.setup=['export OMP_NUM_THREADS=1']",
        f"hydra.sweep.dir={sweep_dir}",
    ]


class Sweep:
    """`python -m xsub -m ...` in the background; its jobs are named uniquely so they can be found."""

    def __init__(
        self, overrides: list[str], tmp: Path, env: dict[str, str], tag: str, timeout_min: int = 10
    ) -> None:
        self.name = f"xsub-test-{tag}-{uuid.uuid4().hex[:6]}"
        self.sweep_dir = tmp / "multirun"
        self.env = env
        self.log = tmp / f"{tag}-{self.name}.log"
        cmd = [
            sys.executable,
            "-m",
            "xsub",
            "-m",
            *overrides,
            *_launcher(self.sweep_dir, self.name, timeout_min),
        ]
        self._fh = open(self.log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def job_ids(self) -> list[str]:
        out = subprocess.run(
            ["squeue", "-h", f"--name={self.name}", "-o", "%i"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout.split()

    def cancel(self) -> None:
        subprocess.run(["scancel", f"--name={self.name}"], env=self.env, timeout=30, check=False)

    def wait(self, timeout: float) -> float:
        """Wait for the sweep (all its jobs' results); fail with the log tail on error or timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            queue = subprocess.run(["squeue"], env=self.env, capture_output=True, text=True, timeout=30)
            self.cancel()
            pytest.fail(
                f"sweep {self.name} did not finish within {timeout:.0f} s\nsqueue:\n{queue.stdout}\n"
                f"{_tail(self.output())}"
            )
        finally:
            self._fh.close()
        assert self.proc.returncode == 0, f"sweep failed ({self.proc.returncode}):\n{_tail(self.output())}"

    def job_logs(self) -> dict[str, str]:
        """submitit's stdout+stderr of every job of this sweep directory, by job id."""
        logs: dict[str, str] = {}
        for path in sorted((self.sweep_dir / ".submitit").glob("*/*_log.*")):
            job = path.parent.name  # submitit_folder is .submitit/%j: one folder per job (array task)
            logs[job] = logs.get(job, "") + path.read_text(errors="replace")
        return logs


def _artifact_root(source: str, dest: Path) -> Path:
    """A private artifact store holding the source's data and models (so jobs here change nothing there)."""
    for sub in ("data", "models"):
        shutil.copytree(Path(source) / sub, dest / sub, symlinks=True)
    return dest


def _done(root: Path, lang: str, seed: int) -> Path:
    """DONE.json of the train run `stage=train task=synth-cls debug=tiny lang=<lang> seed=<seed>`."""
    from xsub import store

    cfg = make_cfg("stage=train", "task=synth-cls", "debug=tiny", f"lang={lang}", f"seed={seed}",
                   f"paths.artifacts={root}")  # fmt: skip
    return store.path(cfg, store.model_key(cfg)) / store.DONE


def test_sweep_through_slurm_then_rerun_skips_done_jobs(slurm_env, pretrained_root, tmp_path):
    root = _artifact_root(pretrained_root, tmp_path / "artifacts")
    overrides = [
        "stage=train",
        "task=synth-cls",
        "debug=tiny",
        f"lang={','.join(LANGS)}",
        f"seed={','.join(map(str, SEEDS))}",
        f"paths.artifacts={root}",
    ]
    start = time.perf_counter()
    first = Sweep(overrides, tmp_path, slurm_env, "train")
    first.wait(timeout=150)
    first_s = time.perf_counter() - start
    missing = [
        str(_done(root, lang, s)) for lang in LANGS for s in SEEDS if not _done(root, lang, s).is_file()
    ]
    assert not missing, f"jobs left no DONE.json: {missing}\n{_tail(first.output())}"
    stamps = {(lang, s): _done(root, lang, s).stat().st_mtime_ns for lang in LANGS for s in SEEDS}
    before = set(first.job_logs())
    assert len(before) == len(LANGS) * len(SEEDS), f"expected one submitit job per run: {sorted(before)}"

    start = time.perf_counter()
    again = Sweep(overrides, tmp_path, slurm_env, "rerun")
    again.wait(timeout=150)
    rerun_s = time.perf_counter() - start
    print(f"\nslurm sweep of 4 train jobs: first {first_s:.1f} s, rerun (all done) {rerun_s:.1f} s")

    assert {k: _done(root, *k).stat().st_mtime_ns for k in stamps} == stamps, "a finished job was redone"
    rerun_logs = {job: text for job, text in again.job_logs().items() if job not in before}
    assert len(rerun_logs) == len(LANGS) * len(SEEDS), sorted(rerun_logs)
    skipped = [job for job, text in rerun_logs.items() if "already trained" in text]
    assert len(skipped) == len(rerun_logs), (
        f"rerun jobs that did not see DONE: {set(rerun_logs) - set(skipped)}"
    )
    # each job still starts python and imports the stack (~20 s on 2 cores): the rerun saves only the
    # training itself, so it is bounded by the first run rather than a fraction of it
    assert rerun_s < 1.5 * first_s, f"rerun {rerun_s:.1f} s vs first run {first_s:.1f} s"


def _mask_dir(root: Path) -> Path:
    from xsub import store

    cfg = make_cfg(*PRUNE, f"paths.artifacts={root}")
    return store.path(cfg, store.mask_key(store.upstream(cfg, "prune", lang="xsvo"), "xsvo"))


def _mask_file(root: Path) -> Path:
    return _mask_dir(root) / "mask.safetensors"


def _sacct_states(job: str, env: dict[str, str], timeout: float = 30) -> list[str]:
    """Every state the job went through (-D: requeued runs too), once it is no longer running (the result
    pickle is written before the job ends); [] without accounting."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-D", "-P", "-j", job, "-o", "State"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        states = out.stdout.split() if out.returncode == 0 else []
        if (
            not states
            or states[-1] not in ("PENDING", "RUNNING", "COMPLETING")
            or time.monotonic() > deadline
        ):
            return states
        time.sleep(0.5)


def test_preempted_prune_is_requeued_and_resumes_to_the_same_mask(slurm_env, finetuned_root, tmp_path):
    from xsub.__main__ import run_stage
    from xsub.mask import Mask

    root = _artifact_root(finetuned_root, tmp_path / "artifacts")
    # data.max_train_examples is a data setting, so part of the model's identity: the prune reads the
    # run trained with it (made here once, then copied for the reference)
    train = ("stage=train", "task=synth-cls", "lang=all", "debug=tiny", "data.max_train_examples=2000")
    run_stage(make_cfg(*train, f"paths.artifacts={root}"))
    ref_root = _artifact_root(str(root), tmp_path / "reference")
    final = _mask_dir(root)
    state = final.with_name(final.name + ".partial") / "rounds.pt"  # the pruning loop's checkpoint

    # submitit counts a USR2 within min(0.8 x limit, limit - 10 min) of the start as preemption, later ones
    # as a timeout (limited by max_num_timeout): with more than 10 minutes this one is a preemption
    sweep = Sweep([*PRUNE, f"paths.artifacts={root}"], tmp_path, slurm_env, "prune", timeout_min=20)
    deadline = time.monotonic() + 120
    while not state.exists():  # at least the unpruned round is checkpointed
        if sweep.proc.poll() is not None:
            pytest.fail(f"the prune sweep ended before its first checkpoint:\n{_tail(sweep.output())}")
        if time.monotonic() > deadline:
            sweep.cancel()
            pytest.fail(f"no prune state file {state} within 120 s:\n{_tail(sweep.output())}")
        time.sleep(0.1)
    jobs = sweep.job_ids()
    assert len(jobs) == 1, f"expected one running job named {sweep.name}, squeue says {jobs}"
    job = jobs[0]
    # the preemption signal submitit handles: checkpoint() (a DelayedSubmission of the launcher) + requeue
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, timeout=30, check=True)
    interrupted_at = time.monotonic()

    # the uninterrupted reference, in this process while the job waits to be restarted
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job (OMP_NUM_THREADS=1, one CPU)
    try:
        run_stage(make_cfg(*PRUNE, f"paths.artifacts={ref_root}"))
    finally:
        torch.set_num_threads(threads)

    sweep.wait(timeout=150)
    print(f"\nprune job {job} finished {time.monotonic() - interrupted_at:.1f} s after SIGUSR2")
    assert _mask_file(root).is_file(), _tail(sweep.output())
    assert not state.exists(), "the finished prune left its loop state behind"
    got, want = Mask.load(_mask_file(root)), Mask.load(_mask_file(ref_root))
    assert got.equals(want), f"requeued mask {got.heads.tolist()} != uninterrupted {want.heads.tolist()}"
    assert got.meta.rounds == want.meta.rounds

    log = sweep.job_logs().get(job, "")
    preempted = re.search(r"Caught signal SIGUSR2 on \S+: this job is preempted", log)
    assert preempted, f"job {job} did not take the signal as a preemption:\n{_tail(log)}"
    assert f"Requeued job {job}" in log, _tail(log)
    assert "resuming pruning from" in log, f"job {job} was not restarted from its checkpoint:\n{_tail(log)}"
    states = _sacct_states(job, slurm_env)
    if states:  # with accounting: the first run is recorded as REQUEUED, the second as COMPLETED
        assert "REQUEUED" in states and states[-1] == "COMPLETED", states


def test_gpu_profile_makes_a_gpu_sbatch_script(tmp_path):
    """hydra/launcher=slurm_gpu composes and turns into the sbatch options a GPU cluster expects (no
    cluster needed: the script is built the way the launcher builds it, not submitted)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hydra_plugins.xsub_launcher.launchers import XsubSlurmLauncher
    from xsub.__main__ import STAGES
    from xsub.config import conf_dir, register_configs

    register_configs(tuple(STAGES))
    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    target = launcher.pop("_target_")
    assert target == "hydra_plugins.xsub_launcher.launchers.XsubSlurmLauncher", target
    # the executor exactly as the launcher builds it (its set_threads setup line included)
    executor = XsubSlurmLauncher(**launcher)._executor(1)
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "x")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=48GB",
        "#SBATCH --time=720",
        "#SBATCH --signal=USR2@120",
        "export OMP_NUM_THREADS=8",
    ):
        assert line in script, f"{line!r} not in the sbatch script:\n{script}"
