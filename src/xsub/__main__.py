"""Entry point: `python -m xsub stage=<stage> task=<task> lang=<lang> ...` (console script `xsub`).

Before Hydra starts any job, every run of the command line (every combination of a `-m` sweep) is
composed and validated, so a typo fails in a second with one line naming the fix instead of a
traceback from inside a job.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from xsub.config import (
    SCHEMAS,
    ConfigError,
    XsubError,
    chosen_option,
    conf_dir,
    knob_error,
    register_configs,
    validate,
)
from xsub.stages import STAGES, run_stage

log = logging.getLogger("xsub")

GROUPS = ("task", "lang", "model", "pruning", "analysis", "logger", "experiment", "debug")


def fail(err: BaseException) -> None:
    print(f"xsub: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def _check_group_options(overrides: list[str], conf: Path) -> None:
    """Unknown group options get a one-line error (Hydra's own lists every option over many lines)."""
    parser = OverridesParser.create()
    for ov in parser.parse_overrides(overrides):
        group = ov.key_or_group.lstrip("+~")
        if group not in GROUPS or ov.is_delete():
            continue
        values = ov.value() if ov.is_sweep_override() or isinstance(ov.value(), list) else [ov.value()]
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
        for value in values:
            for choice in value if isinstance(value, list) else [value]:
                if choice is None or str(choice) == "null":
                    continue
                if not (conf / group / f"{choice}.yaml").is_file():
                    if group == "lang":
                        task = _chosen(overrides, "task") or _default_choice(conf, "task")
                        langs = " ".join(_task_languages(conf, task))
                        raise ConfigError(
                            f"unknown language '{choice}' for task {task}; valid: {langs} (or all)"
                        )
                    options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
                    raise ConfigError(f"unknown {group} '{choice}'; choose one of: {' '.join(options)}")


def _chosen(overrides: list[str], group: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == group]
    return values[-1].split(",")[0] if values else None


def _default_choice(conf: Path, group: str) -> str:
    defaults = OmegaConf.load(conf / "config.yaml").defaults
    return next(str(d[group]) for d in defaults if isinstance(d, DictConfig) and group in d)


def _task_languages(conf: Path, task: str) -> list[str]:
    node = OmegaConf.load(conf / "task" / f"{task}.yaml")
    return list(node.task.languages if "task" in node else node.languages)


def _task_from_analysis_tasks(overrides: list[str]) -> list[str]:
    """`analysis.tasks=[a,b]` without `task=` runs on task a (not the embedded default, whose
    languages the real tasks lack): the command names its tasks once."""
    if _chosen(overrides, "task") is not None:
        return overrides
    parser = OverridesParser.create()
    for ov in parser.parse_overrides(overrides):
        if ov.key_or_group == "analysis.tasks" and not ov.is_sweep_override():
            value = ov.value()
            if isinstance(value, list) and value:
                return [f"task={value[0]}", *overrides]
    return overrides


def compose_runs(overrides: list[str], multirun: bool) -> list[DictConfig]:
    """Compose (and validate) the config of every job the command line would launch."""
    register_configs(tuple(STAGES))
    conf = conf_dir()
    try:
        overrides = _task_from_analysis_tasks(overrides)
        _check_group_options(overrides, conf)
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:  # Hydra's message is several lines and a link
        line = str(err).strip().splitlines()[0]
        raise ConfigError(
            f"cannot parse {err.override!r}: {line}; quote values that contain = or spaces inside a "
            "list, e.g. 'key=[\"a=1\"]'"
        ) from err
    if multirun:
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
        jobs = [job for batch in batches for job in batch]
    else:
        jobs = [overrides]
    cfgs = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf), version_base="1.3"):
        for job in jobs:
            try:
                cfg = compose("config", overrides=list(job))
            except Exception as err:  # Hydra's merge/type errors: first line of the error and its cause
                raise _composition_error(err, list(job)) from err
            validate(cfg, tuple(STAGES))
            cfgs.append(cfg)
    GlobalHydra.instance().clear()
    return cfgs


def _unknown_key(err: BaseException) -> str | None:
    """The full key of an unknown-key error anywhere in the error's chain (None for other errors)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (ConfigAttributeError, ConfigKeyError)) and getattr(seen, "full_key", None):
            return str(seen.full_key)
        seen = seen.__cause__ or seen.__context__
    return None


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _composition_error(err: BaseException, job: list[str]) -> ConfigError:
    """One line for a failed composition: a knob of another option names the option that has it, an
    unknown key lists the valid keys of its node; anything else is Hydra's first line and its cause."""
    key = _unknown_key(err)
    if key:
        parent, _, leaf = key.rpartition(".")
        # the config without the offending key: its node at `parent` says what was chosen and allowed
        try:
            cfg = compose("config", overrides=[o for o in job if _key_of(o) != key])
        except Exception:  # the rest of the command line fails too: Hydra's own message below
            cfg = None
        if cfg is not None and parent in SCHEMAS:
            return ConfigError(knob_error(parent, leaf, chosen_option(cfg[parent], parent)))
        node = OmegaConf.select(cfg, parent) if cfg is not None and parent else cfg
        if isinstance(node, DictConfig) and leaf not in node:
            valid = " ".join(str(k) for k in node)
            return ConfigError(f"unknown key {key}; valid keys of {parent or 'the config'}: {valid}")
    msg = str(err).strip().splitlines()[0].rstrip(".")
    if err.__cause__ is not None:
        msg += ": " + str(err.__cause__).strip().splitlines()[0]
    return ConfigError(f"{msg} (see `python -m xsub --help`)")


def _quiet_libraries() -> None:
    """Our own log lines say what was loaded; the libraries' per-map progress bars and load reports
    (new heads initialised, unused MLM head weights) drown them. Set through the environment, which
    the libraries read when they are imported, so a stage that needs neither (a skip) never loads them."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "datasets" in sys.modules:  # already imported (stage=pipeline in one process, tests)
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (Slurm, kill) ends the job like Ctrl-C: finished work is kept


def _job(cfg: DictConfig) -> dict | None:
    from xsub import store, sweep

    _quiet_libraries()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if sweep.in_sweep():  # outcome recorded, a failure returned to the launcher (xsub.sweep)
            return sweep.run_job(cfg, run_stage)
        run_stage(cfg)
    except XsubError as err:
        fail(err)
    except KeyboardInterrupt:
        partial = store.current_partial()
        where = f" from {partial}" if partial is not None else ""
        print(f"xsub: interrupted; rerun the same command to resume{where}", file=sys.stderr)
        sys.exit(130)
    except OSError as err:
        mapped = store.disk_error(err, Path(err.filename or store.root(cfg)))
        if isinstance(mapped, XsubError):
            fail(mapped)
        raise


def _logs_outside_a_read_only_store(cfg: DictConfig) -> None:
    """Hydra's run folder (its log) lives in the store; a read-only store keeps it in the temp dir
    instead, so a stage that only reads (a finished, skipped one) still runs there."""
    import os
    import tempfile

    from xsub import store

    where = store.root(cfg)
    while not where.exists() and where != where.parent:
        where = where.parent
    if not os.access(where, os.W_OK):
        run_dir = Path(tempfile.gettempdir()) / "xsub-runs" / str(cfg.stage) / "${now:%Y-%m-%d_%H-%M-%S}"
        sys.argv.append(f"hydra.run.dir={run_dir}")


def check(argv: list[str]) -> int:
    """`--check`: compose and validate every job of the command line (sweeps included); the number of
    jobs, or ConfigError with the one-line reason. Nothing runs and nothing is written."""
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    return len(compose_runs(overrides, multirun=bool(set(argv) & {"-m", "--multirun"})))


def main() -> None:
    register_configs(tuple(STAGES))
    argv = sys.argv[1:]
    if "--check" in argv:
        try:
            n = check([a for a in argv if a != "--check"])
        except ConfigError as err:
            fail(err)
        print(f"ok: {n} job{'s' if n != 1 else ''}")
        sys.exit(0)
    flags = {a for a in argv if a.startswith("-")}
    informational = flags & {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion"}
    if not informational:
        overrides = [a for a in argv if not a.startswith("-") and "=" in a]
        multirun = bool(flags & {"-m", "--multirun"})
        try:
            cfgs = compose_runs(overrides, multirun=multirun)
        except ConfigError as err:
            fail(err)
        if cfgs and not multirun and not any(o.startswith("hydra.run.dir=") for o in overrides):
            _logs_outside_a_read_only_store(cfgs[0])
    if flags & {"--cfg", "-c"} and "--resolve" not in flags:
        sys.argv.append("--resolve")  # print ${xsub_langs:xnli} as the language list it stands for
    overrides = [a for a in sys.argv[1:] if not a.startswith("-") and "=" in a]
    if _task_from_analysis_tasks(overrides) != overrides:
        sys.argv.insert(1, _task_from_analysis_tasks(overrides)[0])
    slurm = any(a.split("=", 1)[0] == "hydra/launcher" and "slurm" in a for a in sys.argv[1:])
    if slurm:  # let a failed submission reach us instead of Hydra's 47-line report
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_job)()
    except Exception as err:
        if slurm and _submission_error(err):
            fail(ConfigError(_submission_error(err)))
        raise
    from xsub import sweep

    code = sweep.finish()  # a sweep: one line per job; 1 if any job failed
    if code:
        sys.exit(code)


def _submission_error(err: BaseException) -> str:
    """One line for a sweep that could not be submitted to Slurm (no cluster here, sbatch failing)."""
    seen: BaseException | None = err
    while seen is not None:
        text = str(seen).strip()
        if type(seen).__name__ == "FailedJobError" or "sbatch" in text or isinstance(seen, FileNotFoundError):
            lines = [ln for ln in text.splitlines() if ln.strip()]
            reason = next(
                (ln for ln in reversed(lines) if "fatal" in ln or "error" in ln), lines[-1] if lines else ""
            )
            return (
                f"could not submit the sweep to Slurm ({reason.strip()}); check the cluster with `sinfo`, "
                "or run it here with hydra/launcher=local"
            )
        seen = seen.__cause__ or seen.__context__
    return ""


if __name__ == "__main__":
    main()
