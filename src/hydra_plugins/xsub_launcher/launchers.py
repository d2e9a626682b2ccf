"""Hydra launchers for xsub sweeps: Hydra's basic launcher and the submitit local/Slurm launchers with

- every job collected, a failed one included (the job returns its error; xsub.sweep.finish prints one
  line per job and makes the exit status), instead of the first failure ending the sweep;
- `xsub-sweep.json` in the sweep folder (jobs, ids, log files) for `stage=status`;
- `wait: false` (Slurm): submit the array, print the job ids, the sweep folder and the follow-up
  commands, and exit 0;
- `set_threads: true`: local jobs share the cores (cores // concurrent jobs threads each, through
  OMP_NUM_THREADS and torch.set_num_threads); Slurm jobs use the `cpus_per_task` they asked for.

Options: `hydra/launcher=xsub_basic` (the default, conf/config.yaml), `local` and `slurm`/`slurm_gpu`
(conf/hydra/launcher/*.yaml, on top of xsub_local / xsub_slurm).
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

_MODULE = "hydra_plugins.xsub_launcher.launchers"


@dataclass
class XsubBasicConf:
    _target_: str = f"{_MODULE}.XsubBasicLauncher"


@dataclass
class XsubLocalConf(LocalQueueConf):
    _target_: str = f"{_MODULE}.XsubLocalLauncher"
    set_threads: bool = True  # each of the N concurrent jobs gets cores // N threads


@dataclass
class XsubSlurmConf(SlurmQueueConf):
    _target_: str = f"{_MODULE}.XsubSlurmLauncher"
    wait: bool = True  # false: submit, print the job ids and the follow-up commands, exit 0
    set_threads: bool = True  # OMP_NUM_THREADS and torch threads = cpus_per_task


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="xsub_basic", node=XsubBasicConf, provider="xsub")
cs.store(group="hydra/launcher", name="xsub_local", node=XsubLocalConf, provider="xsub")
cs.store(group="hydra/launcher", name="xsub_slurm", node=XsubSlurmConf, provider="xsub")


def _job_dir(sweep_config: DictConfig) -> str:
    sub = OmegaConf.select(sweep_config, "hydra.sweep.subdir", default="")
    return os.path.abspath(os.path.join(str(sweep_config.hydra.sweep.dir), str(sub)))


def _job_log(config: DictConfig, folder: str) -> str:
    return os.path.join(folder, f"{config.hydra.job.name}.log")


def _planned(launcher: Any, job_overrides: Sequence[Sequence[str]], start: int) -> list[dict[str, Any]]:
    """Each job's number, overrides, folder and log file, as Hydra will make them in the job."""
    from xsub import sweep

    jobs = []
    for i, overrides in enumerate(job_overrides):
        num = start + i
        try:
            cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.num = num
                cfg.hydra.job.id = f"job_id_for_{num}"
            folder = _job_dir(cfg)
        except Exception:  # a subdir that needs the job's runtime: the job writes its own folder
            folder = ""
        log_path = _job_log(launcher.config, folder) if folder else ""
        jobs.append(sweep.job_entry(num, overrides, folder, log_path))
    return jobs


class XsubBasicLauncher(BasicLauncher):
    """Hydra's basic launcher (one job after another in this process), every job collected."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from xsub import sweep

        setup_globals()
        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = str(self.config.hydra.sweep.dir)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        planned = _planned(self, job_overrides, initial_job_idx)
        sweep.write_manifest(Path(sweep_dir), "basic", planned)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: list[JobReturn] = []
        for plan, overrides in zip(planned, job_overrides):
            idx = plan["num"]
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            ret = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            folder = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else plan["dir"]
            sweep.collect(sweep.result_of(ret, idx, overrides, _job_log(self.config, folder)), sweep_dir)
            runs.append(sweep.completed_return(overrides))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs


class _Submitit:
    """What the local and Slurm submitit launchers share (mixed in before their hydra class)."""

    _EXECUTOR: str
    params: dict[str, Any]
    config: DictConfig | None

    def __init__(self, **params: Any) -> None:
        self.wait = bool(params.pop("wait", True))
        self.set_threads = bool(params.pop("set_threads", True))
        super().__init__(**params)  # type: ignore[call-arg]

    def _executor(self, n_jobs: int) -> Any:
        import submitit

        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        if self._EXECUTOR == "slurm" and self.set_threads and params.get("cpus_per_task"):
            # before python starts, for every OpenMP user; the job sets torch's threads from
            # SLURM_CPUS_PER_TASK too (xsub.sweep.apply_threads)
            params["setup"] = [
                f"export OMP_NUM_THREADS={params['cpus_per_task']}",
                *(params.get("setup") or []),
            ]
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        return executor

    def _threads_env(self, n_jobs: int) -> dict[str, str | None]:
        from xsub import sweep

        if self._EXECUTOR != "local" or not self.set_threads:
            return {}
        n = str(sweep.threads_for(n_jobs))
        return {sweep.THREADS_ENV: n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from xsub import sweep

        assert self.config is not None
        sweep_dir = str(self.config.hydra.sweep.dir)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        executor = self._executor(len(job_overrides))
        planned = _planned(self, job_overrides, initial_job_idx)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params = []
        for plan in planned:
            log.info(f"\t#{plan['num']} : {' '.join(filter_overrides(plan['overrides']))}")
            params.append(
                (
                    plan["overrides"],
                    "hydra.sweep.dir",
                    plan["num"],
                    f"job_id_for_{plan['num']}",
                    Singleton.get_state(),
                )
            )
        with sweep.environ(**self._threads_env(len(job_overrides))):
            jobs = executor.map_array(self, *zip(*params))
        for plan, job in zip(planned, jobs):
            plan.update(job_id=str(job.job_id), stdout=str(job.paths.stdout), stderr=str(job.paths.stderr))
        sweep.write_manifest(Path(sweep_dir), self._EXECUTOR, planned)
        if not self.wait:
            self._submitted(sweep_dir, planned)
            return [sweep.completed_return(p["overrides"]) for p in planned]
        for plan, job in zip(planned, jobs):
            try:
                ret = job.results()[0]
                result = sweep.result_of(ret, plan["num"], plan["overrides"], plan["log"])
            except Exception as err:  # ended without a result: killed, cancelled, out of memory, time
                line = f"job {job.job_id} ended without a result ({job.state}): {sweep.one_line(err)}"
                result = sweep.Result(plan["num"], plan["overrides"], "failed", line, plan["stderr"])
            result.job_id = str(job.job_id)
            sweep.collect(result, sweep_dir)
        return [sweep.completed_return(p["overrides"]) for p in planned]

    def _submitted(self, sweep_dir: str, planned: list[dict[str, Any]]) -> None:
        from xsub import sweep

        ids = [p["job_id"] for p in planned]
        arrays = sorted({i.split("_")[0] for i in ids})
        print(f"submitted {len(ids)} job(s) (Slurm array {', '.join(arrays)}): {' '.join(ids)}", flush=True)
        print(f"sweep folder: {sweep_dir}")
        follow, report = sweep.follow_up(sweep_dir)
        print(f"  progress: {follow}")
        print(f"  results:  {report}", flush=True)
        for p in planned:
            sweep.collect(sweep.Result(p["num"], p["overrides"], "submitted", job_id=p["job_id"]), sweep_dir)


class XsubLocalLauncher(_Submitit, LocalLauncher):
    _EXECUTOR = "local"


class XsubSlurmLauncher(_Submitit, SlurmLauncher):
    _EXECUTOR = "slurm"
