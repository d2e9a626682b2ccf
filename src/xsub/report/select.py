"""Which artifacts a report covers: the store's, narrowed by filters, or exactly a sweep's.

A sweep's jobs are read from each job's `.hydra/config.yaml`; the artifacts they made are named by
the store keys their configs give (xsub.store), so the report holds exactly what the sweep made or
read, whatever other runs share the store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import store
from xsub.config import ConfigError, ReportConfig, register_configs, selected_languages

log = logging.getLogger(__name__)


def report_config(cfg: DictConfig) -> ReportConfig:
    """`cfg.report` validated against ReportConfig (defaults when the config has no `report` node)."""
    node = cfg.get("report") if isinstance(cfg, DictConfig) else None
    merged = OmegaConf.merge(OmegaConf.structured(ReportConfig), node or {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


@dataclass
class Selection:
    """Store roots, models and filters (`None` = any); `ids` (a sweep's exact artifacts) if set."""

    roots: list[Path]
    models: list[str]
    tasks: set[str] | None = None
    seeds: set[int] | None = None
    langs: set[str] | None = None
    methods: set[str] | None = None
    ids: set[str] | None = None
    jobs: int = 0

    def entries(self) -> list[store.Entry]:
        """Finished artifacts (models, masks, analyses) of the selection."""
        found = []
        for base in self.roots:
            for kind in ("model", "mask", "analysis"):
                for entry in store.find(base, kind):
                    if entry.status != "done" or entry.fields.get("model") not in self.models:
                        continue
                    if self.ids is not None and entry.record.get("id") not in self.ids:
                        continue
                    if self.keep(entry):
                        found.append(entry)
        return found

    def keep(self, entry: store.Entry) -> bool:
        f, settings = entry.fields, entry.settings
        tasks = f.get("tasks", f.get("task", "")).split("+")
        seeds = [int(s) for s in f.get("seed", f.get("seeds", "seed")).removeprefix("seed").split("+") if s]
        langs = settings.get("langs", [settings["lang"]] if "lang" in settings else None)
        method = f.get("method")
        ok = self.tasks is None or bool(self.tasks & set(tasks))
        ok &= self.seeds is None or bool(self.seeds & set(seeds))
        ok &= self.langs is None or langs is None or bool(self.langs & set(langs))
        return ok and (self.methods is None or method is None or method in self.methods)

    def describe(self) -> str:
        def one(name: str, values: set | None) -> str:
            return f"{name}={'all' if values is None else ','.join(map(str, sorted(values)))}"

        parts = [one("tasks", self.tasks), one("langs", self.langs), one("seeds", self.seeds)]
        return " ".join([*parts, one("methods", self.methods)])


def _filter(values: Sequence[Any]) -> set | None:
    return set(values) if values else None


def store_selection(cfg: DictConfig, rc: ReportConfig) -> Selection:
    return Selection(
        roots=[store.root(cfg)],
        models=[str(cfg.model.name)],
        tasks=_filter(rc.tasks),
        seeds=_filter([int(s) for s in rc.seeds]),
        langs=_filter(rc.langs),
        methods=_filter(rc.methods),
    )


def job_configs(sweep: Path) -> list[tuple[Path, DictConfig]]:
    """(job dir, composed config) of every job of a Hydra multirun folder."""
    if not sweep.is_dir():
        raise ConfigError(
            f"report.sweep: no folder {sweep}; pass a multirun folder, e.g. report.sweep=multirun/<date>"
        )
    found = sorted(p for p in sweep.rglob(".hydra/config.yaml") if p.parent.parent != sweep)
    if not found:
        raise ConfigError(
            f"report.sweep: no job configs (<job>/.hydra/config.yaml) under {sweep}; pass the folder a "
            "`python -m xsub -m ...` sweep wrote (hydra.sweep.dir)"
        )
    register_configs()  # task configs list their languages through a resolver
    return [(p.parent.parent, OmegaConf.load(p)) for p in found]


def _job_root(job_dir: Path, job: DictConfig) -> Path:
    """The job's store root; a relative one is relative to the directory the job was started in."""
    path = Path(str(job.paths.artifacts)).expanduser()
    if not path.is_absolute():
        hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
        cwd = (
            OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd")
            if hydra_yaml.is_file()
            else None
        )
        path = Path(str(cwd)) / path if cwd else path
    return path.resolve()


def job_keys(job: DictConfig) -> list[store.Key]:
    """The artifacts one job makes, and for prune and analyze jobs the inputs they read."""
    stage = str(job.get("stage", "train"))
    if stage == "train":
        return [store.model_key(job)]
    if stage == "prune":
        keys = []
        for lang in selected_languages(job):
            mask = store.mask_key(store.upstream(job, "prune", lang=lang), lang)
            keys += [mask, *mask.upstream]
        return keys
    if stage == "analyze":
        import importlib

        from xsub.analysis.inputs import Inputs

        inputs = Inputs(job)
        module = importlib.import_module(f"xsub.analysis.{job.analysis.name}")
        ups = module.upstream(inputs) if hasattr(module, "upstream") else None
        key = inputs.key(ups)
        return [key, *key.upstream]
    return []


def sweep_selection(cfg: DictConfig, rc: ReportConfig, sweep: Path) -> Selection:
    """Exactly the artifacts the sweep's jobs made or read (by their store identities)."""
    roots: dict[Path, None] = {}
    models: dict[str, None] = {}
    ids: set[str] = set()
    langs: set[str] = set()  # the jobs' languages: a model run read for them reports only those
    jobs = job_configs(sweep)
    for job_dir, job in jobs:
        with_root = OmegaConf.merge(job, {"paths": {"artifacts": str(_job_root(job_dir, job))}})
        roots[store.root(with_root)] = None
        models[str(job.model.name)] = None
        ids.update(k.id for k in job_keys(with_root))
        langs.update(selected_languages(job))
    return Selection(
        roots=list(roots),
        models=list(models),
        tasks=_filter(rc.tasks),
        seeds=_filter([int(s) for s in rc.seeds]),
        langs=_filter(rc.langs) or langs,
        methods=_filter(rc.methods),
        ids=ids,
        jobs=len(jobs),
    )


@dataclass
class Varying:
    """Settings that differ between the collected artifacts of one kind: each becomes a column."""

    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifact id -> {setting: value}

    @staticmethod
    def of(entries: list[store.Entry]) -> Varying:
        flat = {e.record["id"]: settings_with_upstream(e) for e in entries}
        names = sorted({k for s in flat.values() for k in s})
        keep = [n for n in names if len({repr(s.get(n)) for s in flat.values()}) > 1 and not _shown(n)]
        return Varying({i: {n: s.get(n) for n in keep} for i, s in flat.items()})

    def names(self) -> list[str]:
        return sorted({n for c in self.columns.values() for n in c})

    def row(self, entry: store.Entry) -> dict[str, Any]:
        return {n: _cell(v) for n, v in self.columns.get(entry.record["id"], {}).items()}


_SHOWN = ("task.", "lang", "langs", "seed", "model.name", "model.path", "pruning.method", "analysis.name")


def _shown(name: str) -> bool:
    """Settings the rows already show as their key fields (task, languages, seed, method)."""
    return any(name == s or (s.endswith(".") and name.startswith(s)) for s in _SHOWN)


def _cell(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def settings_with_upstream(entry: store.Entry) -> dict[str, Any]:
    """An artifact's settings with those of its upstream model runs (a mask shows its `train.lr`)."""
    base = entry.path
    for _ in Path(entry.record.get("path", "")).parts:
        base = base.parent
    flat = _flat(entry.settings)
    for up in entry.record.get("upstream", []):
        done = base / up["path"] / store.DONE
        if not up["path"].startswith(store.FOLDER["model"]) or not done.is_file():
            continue
        try:
            upstream = store.read_done(done.parent)
        except (OSError, ValueError):
            continue
        for k, v in _flat(upstream.get("settings", {})).items():
            flat.setdefault(k, v)
    return flat
