"""stage=report: every result of a sweep (or of the artifact store) as tidy tables, figures and one page.

`python -m xsub stage=report` scans the artifact store for `model.name`, narrowed by `report.tasks`,
`report.seeds`, `report.langs` and `report.methods` ([] = all found). `report.sweep=<multirun folder>`
instead keeps exactly the (task, lang, seed, pruning) of that sweep's jobs, read from each job's
`.hydra/config.yaml` (their `paths.artifacts` and model included; a relative artifact path is taken
from the job's `hydra.runtime.cwd`). Settings are read from `cfg.report` (a `ReportConfig`; a config
without a `report` node gets the defaults).

Output: artifacts/reports/<model>/<name>/ (name = `report.name`, else the sweep folder's name, else
"store"; the artifact root of a sweep's jobs when they agree on one), written as one directory swap:
- training.csv: one row per entry of every finished train run's metrics.json (dev and test);
- pruning.csv: one row per mask (heads kept, fraction kept per part, scores, rounds);
- mask_jaccard.csv: Jaccard of kept heads between the languages of one (task, method, seed);
- analysis_<name>[_<table>].csv: every finished analysis table, concatenated, with its folder;
- heads_kept.png, jaccard_*.png, cka_*.png, transfer_*.png: the standard figures (a figure whose
  inputs are absent is skipped, and the page says so);
- report.md (and report.html): what was found, each figure, and the first rows of each table.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from xsub import artifacts, plots
from xsub.config import ConfigError, ReportConfig, selected_languages, task_languages
from xsub.mask import Mask, MaskError
from xsub.tables import format_table

log = logging.getLogger(__name__)

SEED_RE = re.compile(r"seed(\d+)")
MASK_RE = re.compile(r"seed(\d+)\.json")
LANG_COLUMNS = ("lang", "lang_a", "lang_b", "target", "eval_lang")
TASK_COLUMNS = ("task", "task_a", "task_b")
SEED_COLUMNS = ("seed", "seed_a", "seed_b")


def report_config(cfg: DictConfig) -> ReportConfig:
    """`cfg.report` validated against ReportConfig (defaults when the config has no `report` node)."""
    node = cfg.get("report") if isinstance(cfg, DictConfig) else None
    merged = OmegaConf.merge(OmegaConf.structured(ReportConfig), node or {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# What is kept: store filters, or the jobs of a sweep


@dataclass
class Selection:
    """Which artifacts the report keeps. Sets are `None` for "any". In a sweep, training runs and masks
    must match a job exactly (`train_keys`, `mask_keys`); analysis folders and rows are kept when their
    tasks, languages, seeds and method are among the sweep's."""

    roots: list[Path]
    models: list[str]
    tasks: set[str] | None = None
    seeds: set[int] | None = None
    langs: set[str] | None = None
    methods: set[str] | None = None
    train_keys: set[tuple[str, str, str, int, str]] | None = None  # (model, task, variant, seed, lang)
    mask_keys: set[tuple[str, str, str, str, int]] | None = None  # (model, task, method, lang, seed)
    analysis_dirs: set[Path] = field(default_factory=set)  # exact folders of analyze jobs
    jobs: int = 0

    def method_ok(self, method: str) -> bool:
        # magnitude pruning also writes magnitude-random / magnitude-bad: they belong to its jobs
        return self.methods is None or any(method == m or method.startswith(m + "-") for m in self.methods)

    def keep_training(self, model: str, task: str, variant: str, seed: int, lang: str) -> bool:
        if self.train_keys is not None and (model, task, variant, seed, lang) not in self.train_keys:
            return False
        return _ok(self.tasks, task) and _ok(self.seeds, seed) and _ok(self.langs, lang)

    def keep_mask(self, model: str, task: str, method: str, lang: str, seed: int) -> bool:
        if self.mask_keys is not None and not any(
            (model, task, m, lang, seed) in self.mask_keys for m in _method_bases(method)
        ):
            return False
        ok = _ok(self.tasks, task) and _ok(self.seeds, seed) and _ok(self.langs, lang)
        return ok and self.method_ok(method)

    def keep_analysis(self, folder: Path, tasks: list[str], method: str, seeds: list[int]) -> bool:
        if folder in self.analysis_dirs:
            return True
        return (
            (self.tasks is None or bool(self.tasks & set(tasks)))
            and (self.seeds is None or bool(self.seeds & set(seeds)))
            and self.method_ok(method)
        )

    def filter_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of an analysis table whose language / task / seed columns are all selected."""
        keep = pd.Series(True, index=frame.index)
        for columns, allowed in ((LANG_COLUMNS, self.langs), (TASK_COLUMNS, self.tasks)):
            for col in columns:
                if allowed is not None and col in frame:
                    keep &= frame[col].astype(str).isin({str(a) for a in allowed})
        for col in SEED_COLUMNS:
            if self.seeds is not None and col in frame:
                keep &= pd.to_numeric(frame[col], errors="coerce").isin(self.seeds)
        return frame[keep]

    def describe(self) -> str:
        def one(name: str, values: set | None) -> str:
            return f"{name}={'all' if values is None else ','.join(map(str, sorted(values)))}"

        parts = [one("tasks", self.tasks), one("langs", self.langs), one("seeds", self.seeds)]
        return " ".join([*parts, one("methods", self.methods)])


def _ok(allowed: set | None, value: Any) -> bool:
    return allowed is None or value in allowed


def _method_bases(method: str) -> list[str]:
    """`magnitude-random` belongs to a `magnitude` job: the method and each of its dash prefixes."""
    pieces = method.split("-")
    return ["-".join(pieces[: i + 1]) for i in range(len(pieces))]


def _filter(values: Sequence[Any]) -> set | None:
    return set(values) if values else None


def _intersect(found: set, wanted: set | None) -> set:
    return found if wanted is None else found & wanted


def store_selection(cfg: DictConfig, rc: ReportConfig) -> Selection:
    return Selection(
        roots=[artifacts.root(cfg)],
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
    if not OmegaConf.has_resolver("xsub_langs"):  # task configs list their languages through it
        OmegaConf.register_new_resolver("xsub_langs", task_languages)
    return [(p.parent.parent, OmegaConf.load(p)) for p in found]


def _job_root(job_dir: Path, job: DictConfig) -> Path:
    """The job's artifact root; a relative one is relative to the directory the job was started in."""
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


def sweep_selection(cfg: DictConfig, rc: ReportConfig, sweep: Path) -> Selection:
    """Exactly what the sweep's jobs made or read: their (model, task, lang, seed, pruning)."""
    train_keys: set[tuple[str, str, str, int, str]] = set()
    mask_keys: set[tuple[str, str, str, str, int]] = set()
    roots: dict[Path, None] = {}
    models: dict[str, None] = {}
    tasks, langs, seeds, methods = set(), set(), set(), set()
    analysis_dirs = set()
    jobs = job_configs(sweep)
    for job_dir, job in jobs:
        root = _job_root(job_dir, job)
        roots[root] = None
        model = str(job.model.name)
        models[model] = None
        stage = str(job.get("stage", "train"))
        seed = int(job.seed)
        method = str(job.pruning.method)
        job_langs = selected_languages(job)
        job_tasks = [str(job.task.name)]
        job_seeds = [seed]
        if stage == "analyze":
            job_tasks = [str(t) for t in job.analysis.tasks] or job_tasks
            job_seeds = [int(s) for s in job.analysis.seeds] or job_seeds
            folder = "seed" + "+".join(map(str, job_seeds))
            analysis_dirs.add(
                artifacts.analysis_dir(root, str(job.analysis.name))
                / model
                / "+".join(job_tasks)
                / method
                / folder
            )
        variant = ""
        if stage == "train":
            from xsub.stages import train as train_stage  # heavy imports, only for train jobs

            task_dir = artifacts.root(job) / "models" / model / job_tasks[0]
            variant = train_stage.output_dir(job).parent.relative_to(task_dir).as_posix()
            variant = "" if variant == "." else variant
        model_seeds = job_seeds
        if stage == "prune" and int(job.pruning.model_seed) >= 0:
            model_seeds = [int(job.pruning.model_seed)]
        for task, lang in itertools.product(job_tasks, job_langs):
            train_keys.update((model, task, variant, s, lang) for s in model_seeds)
            if stage in ("prune", "analyze"):
                mask_keys.update((model, task, method, lang, s) for s in job_seeds)
        tasks.update(job_tasks)
        langs.update(job_langs)
        seeds.update(job_seeds + model_seeds)
        methods.add(method)
    return Selection(
        roots=list(roots),
        models=list(models),
        tasks=_intersect(tasks, _filter(rc.tasks)),
        seeds=_intersect(seeds, _filter([int(s) for s in rc.seeds])),
        langs=_intersect(langs, _filter(rc.langs)),
        methods=_intersect(methods, _filter(rc.methods)),
        train_keys=train_keys,
        mask_keys=mask_keys,
        analysis_dirs=analysis_dirs,
        jobs=len(jobs),
    )


# ----------------------------------------------------------------------------------------------------
# Collecting tables


def _visible(parts: Iterable[str]) -> bool:
    """Not a temporary (atomic write), old or checkpoint directory."""
    return not any(p.startswith(".") or p.endswith((".checkpoint", ".old", ".segments")) for p in parts)


def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible([p.name])) if path.is_dir() else []


def collect_training(sel: Selection) -> pd.DataFrame:
    """One row per (split, language, metric) of every finished train run's metrics.json."""
    rows = []
    for root, model in itertools.product(sel.roots, sel.models):
        for task_dir in _dirs(root / "models" / model):
            for metrics_path in sorted(task_dir.rglob("metrics.json")):
                run_dir = metrics_path.parent
                rel = run_dir.relative_to(task_dir).parts
                seed_match = SEED_RE.fullmatch(run_dir.name)
                if not seed_match or not _visible(rel) or not artifacts.is_done(run_dir):
                    continue
                seed, variant = int(seed_match.group(1)), "/".join(rel[:-1])
                try:
                    metrics = json.loads(metrics_path.read_text())
                except (OSError, ValueError) as err:
                    log.warning("skipping unreadable %s: %s", metrics_path, err)
                    continue
                primary = metrics.get("metric")
                for split in ("dev", "test"):
                    for lang, scores in (metrics.get(split) or {}).items():
                        if not sel.keep_training(model, task_dir.name, variant, seed, lang):
                            continue
                        for name, value in (scores or {}).items():
                            if isinstance(value, (int, float)) and not isinstance(value, bool):
                                rows.append(
                                    {
                                        "model": model,
                                        "task": task_dir.name,
                                        "variant": variant,
                                        "seed": seed,
                                        "lang": lang,
                                        "split": split,
                                        "metric": name,
                                        "value": float(value),
                                        "primary": name == primary,
                                    }
                                )
    columns = ["model", "task", "variant", "seed", "lang", "split", "metric", "value", "primary"]
    return pd.DataFrame(rows, columns=columns)


def collect_masks(sel: Selection) -> tuple[pd.DataFrame, dict[tuple, Mask], list[str]]:
    """pruning.csv rows, the head masks by (model, task, method, lang, seed), and unreadable files."""
    rows, heads, bad = [], {}, []
    for root, model in itertools.product(sel.roots, sel.models):
        base = root / "masks" / model
        for task_dir in _dirs(base):
            for method_dir in _dirs(task_dir):
                for lang_dir in _dirs(method_dir):
                    for sidecar in sorted(lang_dir.glob("seed*.json")):
                        found = MASK_RE.fullmatch(sidecar.name)
                        if not found:  # seed<s>.history.json and the like
                            continue
                        key = (model, task_dir.name, method_dir.name, lang_dir.name, int(found.group(1)))
                        if not sel.keep_mask(*key):
                            continue
                        try:
                            mask = Mask.load(sidecar)
                        except MaskError as err:
                            bad.append(f"{sidecar.relative_to(root)}: {err}")
                            continue
                        frac = mask.fractions()
                        meta = mask.meta
                        rows.append(
                            {
                                "model": model,
                                "task": key[1],
                                "method": key[2],
                                "lang": key[3],
                                "seed": key[4],
                                "heads_kept": mask.num_heads_kept,
                                "heads_total": int(mask.heads.numel()),
                                "fraction_heads": frac.get("heads"),
                                "fraction_mlp": frac.get("mlp"),
                                "fraction_weights": frac.get("weights"),
                                "score_before": meta.score_before,
                                "score_after": meta.score_after,
                                "rounds": meta.rounds,
                                "model_seed": meta.extra.get("model_seed"),
                                "path": str(sidecar.with_suffix(".safetensors").relative_to(root)),
                            }
                        )
                        heads[key] = Mask(heads=mask.heads, meta={"config_hash": meta.config_hash})
    columns = [
        "model", "task", "method", "lang", "seed", "heads_kept", "heads_total", "fraction_heads",
        "fraction_mlp", "fraction_weights", "score_before", "score_after", "rounds", "model_seed", "path",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns), heads, bad


def mask_jaccard(heads: dict[tuple, Mask]) -> pd.DataFrame:
    """Jaccard of kept heads for every ordered pair of languages of one (model, task, method, seed)."""
    rows = []
    groups: dict[tuple, dict[str, Mask]] = {}
    for (model, task, method, lang, seed), mask in heads.items():
        groups.setdefault((model, task, method, seed), {})[lang] = mask
    for (model, task, method, seed), masks in groups.items():
        for (la, a), (lb, b) in itertools.product(masks.items(), repeat=2):
            if a.heads.shape != b.heads.shape:
                continue
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "method": method,
                    "seed": seed,
                    "lang_a": la,
                    "lang_b": lb,
                    "jaccard": a.jaccard(b, "heads"),
                }
            )
    return pd.DataFrame(rows, columns=["model", "task", "method", "seed", "lang_a", "lang_b", "jaccard"])


def collect_analyses(sel: Selection) -> dict[str, pd.DataFrame]:
    """analysis_<name>[_<table>] -> every finished analysis folder's table, with folder/model/pruning."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for root, model in itertools.product(sel.roots, sel.models):
        base = root / "analysis"
        for name_dir in _dirs(base):
            for task_dir in _dirs(name_dir / model):
                for method_dir in _dirs(task_dir):
                    for seed_dir in _dirs(method_dir):
                        seeds = [int(s) for s in re.findall(r"\d+", seed_dir.name)]
                        tasks = task_dir.name.split("+")
                        if not artifacts.is_done(seed_dir) or not sel.keep_analysis(
                            seed_dir, tasks, method_dir.name, seeds
                        ):
                            continue
                        for csv in sorted(seed_dir.glob("*.csv")):
                            try:
                                frame = pd.read_csv(csv)
                            except (OSError, ValueError, pd.errors.EmptyDataError) as err:
                                log.warning("skipping unreadable %s: %s", csv, err)
                                continue
                            frame = sel.filter_rows(frame)
                            if frame.empty:
                                continue
                            extra = {
                                "folder": seed_dir.relative_to(base).as_posix(),
                                "model": model,
                                "tasks": task_dir.name,
                                "pruning": method_dir.name,
                            }
                            for i, (col, value) in enumerate(extra.items()):
                                if col not in frame:
                                    frame.insert(i, col, value)
                            table = (
                                name_dir.name if csv.stem == name_dir.name else f"{name_dir.name}_{csv.stem}"
                            )
                            frames.setdefault(f"analysis_{table}", []).append(frame)
    return {k: pd.concat(v, ignore_index=True) for k, v in sorted(frames.items())}


# ----------------------------------------------------------------------------------------------------
# Figures


def _list(values: Iterable[Any]) -> str:
    return ", ".join(map(str, values))


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)) for p in parts if str(p))


@dataclass
class Figure:
    title: str
    file: str = ""  # relative to the report folder; "" = not drawn
    note: str = ""  # why it was not drawn, or what it shows


def fig_heads_kept(pruning: pd.DataFrame, out: Path) -> list[Figure]:
    title = "Heads kept per language"
    if pruning.empty:
        return [Figure(title, note="no masks found (run stage=prune)")]
    multi_model = pruning.model.nunique() > 1
    labels = pruning.task + "/" + pruning.method
    if multi_model:
        labels = pruning.model + "/" + labels
    frame = pruning.assign(label=labels)
    langs = sorted(frame.lang.unique())
    stats = frame.groupby(["label", "lang"]).heads_kept.agg(["mean", "std"])
    series, errors = {}, {}
    for label in sorted(frame.label.unique()):
        sub = stats.loc[label].reindex(langs)
        series[label] = sub["mean"].tolist()
        errors[label] = sub["std"].fillna(0.0).tolist()
    many_seeds = frame.groupby(["label", "lang"]).seed.nunique().max() > 1
    total = int(frame.heads_total.max())
    path = plots.lines(
        series,
        out / "heads_kept.png",
        x=langs,
        title="heads kept per language" + (" (mean ± std over seeds)" if many_seeds else ""),
        xlabel="language",
        ylabel=f"heads kept (of {total})",
        errors=errors if many_seeds else None,
    )
    return [Figure(title, path.name, note=f"series: {', '.join(series)}")]


def _language_matrix(mean: pd.DataFrame, path: Path, title: str, label: str) -> None:
    """A [0, 1] measure between languages (Jaccard, CKA) as a square heatmap in sorted order."""
    order = sorted(set(mean.index) | set(mean.columns))
    mean = mean.reindex(index=order, columns=order)
    plots.heatmap(
        mean.to_numpy(dtype=float), order, order, path, title=title, vmin=0.0, vmax=1.0, colorbar_label=label
    )


def fig_jaccard(jac: pd.DataFrame, out: Path) -> list[Figure]:
    title = "Jaccard of kept heads between languages"
    if jac.empty or jac[jac.lang_a != jac.lang_b].empty:
        return [Figure(title, note="needs masks of at least two languages of one task, method and seed")]
    figures = []
    for (model, task, method), group in jac.groupby(["model", "task", "method"], sort=True):
        if group[group.lang_a != group.lang_b].empty:
            continue
        seeds = sorted(group.seed.unique())
        name = f"jaccard_{_slug(model, task, method)}.png"
        _language_matrix(
            group.groupby(["lang_a", "lang_b"]).jaccard.mean().unstack(),
            out / name,
            f"Jaccard of kept heads: {task} / {method} (seeds {_list(seeds)}"
            + (", mean)" if len(seeds) > 1 else ")"),
            "Jaccard",
        )
        figures.append(Figure(f"{title}: {model} / {task} / {method}", name))
    return figures


def fig_cka(cka: pd.DataFrame | None, out: Path) -> list[Figure]:
    title = "CKA between languages (own subnetworks, mean over layers)"
    if cka is None or cka.empty:
        return [Figure(title, note="no cka results (run stage=analyze analysis=cka)")]
    own = cka[(cka.mask_a == "own") & (cka.mask_b == "own") & (cka.layer_a == cka.layer_b)]
    if own.empty:
        return [Figure(title, note="cka results have no own-vs-own rows (analysis.sides must include own)")]
    keys = ["model", "pruning", "seed", "task_a", "lang_a", "task_b", "lang_b", "layer_a"]
    own = own.drop_duplicates(subset=keys, keep="last")
    figures = []
    for (model, method), group in own.groupby(["model", "pruning"], sort=True):
        multi = len(set(group.task_a) | set(group.task_b)) > 1
        a = group.task_a + "/" + group.lang_a if multi else group.lang_a
        b = group.task_b + "/" + group.lang_b if multi else group.lang_b
        g = group.assign(a=a, b=b)
        per_seed = g.groupby(["a", "b", "seed"]).linear.mean()  # mean over the diagonal layers
        seeds = sorted(g.seed.unique())
        name = f"cka_{_slug(model, method)}.png"
        _language_matrix(
            per_seed.groupby(["a", "b"]).mean().unstack(),
            out / name,
            f"linear CKA of own subnetworks, mean over layers ({method}; seeds {_list(seeds)})",
            "linear CKA",
        )
        figures.append(Figure(f"{title}: {model} / {method}", name))
    return figures


def fig_transfer(transfer: pd.DataFrame | None, out: Path) -> list[Figure]:
    title = "Mask transfer (retrained with the mask of another language)"
    if transfer is None or transfer.empty:
        return [Figure(title, note="no transfer results (run stage=analyze analysis=transfer)")]
    keys = ["model", "tasks", "pruning", "target", "source", "seed", "metric"]
    transfer = transfer.drop_duplicates(subset=keys, keep="last")
    figures = []
    for (model, tasks, method, metric), group in transfer.groupby(["model", "tasks", "pruning", "metric"]):
        rows = sorted(group.target.unique())
        cols = [c for c in dict.fromkeys(group.mask_of) if c in rows]
        cols = sorted(cols) + [c for c in dict.fromkeys(group.mask_of) if c not in rows]
        mean = group.groupby(["target", "mask_of"]).value.mean().unstack().reindex(index=rows, columns=cols)
        seeds = sorted(group.seed.unique())
        name = f"transfer_{_slug(model, tasks, method)}.png"
        plots.heatmap(
            mean.to_numpy(dtype=float),
            rows,
            [c if c in rows else f"[{c}]" for c in cols],
            out / name,
            title=f"{metric} retrained with the mask of ... ({tasks} / {method}; seeds "
            f"{', '.join(map(str, seeds))})",
            xlabel="mask of (language) / [baseline]",
            ylabel="target language",
            colorbar_label=str(metric),
        )
        figures.append(Figure(f"{title}: {model} / {tasks} / {method}", name))
    return figures


# ----------------------------------------------------------------------------------------------------
# The page


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (pipes and newlines in cells escaped; floats to 4 digits)."""

    def cell(v: Any) -> str:
        return _fmt(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(_fmt(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Page:
    """Blocks rendered both as Markdown and as a minimal HTML page (no scripts, no external files but
    the report's own PNGs and CSVs)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(headers), [list(r) for r in rows])))

    def frame(self, frame: pd.DataFrame, n: int) -> None:
        self.table(list(frame.columns), frame.head(n).itertuples(index=False, name=None))

    def image(self, alt: str, file: str) -> None:
        self.blocks.append(("img", (alt, file)))

    def link(self, text: str, file: str, after: str = "") -> None:
        self.blocks.append(("a", (text, file, after)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                out.append(markdown_table(*value))
            elif kind == "img":
                out.append(f"![{value[0]}]({value[1]})")
            elif kind == "a":
                out.append(f"[{value[0]}]({value[1]}){value[2]}")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                text = html.escape(value)
                text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
                text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
                out.append(f"<p>{text}</p>")
            elif kind == "table":
                out.append(html_table(*value))
            elif kind == "img":
                out.append(f'<p><img src="{html.escape(value[1])}" alt="{html.escape(value[0])}"></p>')
            elif kind == "a":
                href, text, after = (html.escape(v) for v in (value[1], value[0], value[2]))
                out.append(f'<p><a href="{href}">{text}</a>{after}</p>')
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}"
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
        )


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.4g}"
    return f"{values.mean():.4g} ± {values.std():.2g}"


def _pivot(frame: pd.DataFrame, index: list[str], value: str) -> tuple[list[str], list[list[Any]]]:
    """index... × language cells of mean ± std over seeds."""
    langs = sorted(frame.lang.unique())
    rows = []
    for key, group in frame.groupby(index, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        by_lang = group.groupby("lang")[value]
        rows.append(
            [*key, *(_mean_std(by_lang.get_group(lg)) if lg in by_lang.groups else "" for lg in langs)]
        )
    return [*index, *langs], rows


def build_page(
    title: str,
    meta: list[tuple[str, str]],
    counts: list[tuple[str, Any]],
    tables: dict[str, pd.DataFrame],
    figures: list[Figure],
    bad: list[str],
    head_rows: int,
) -> Page:
    page = Page()
    page.heading(1, title)
    page.table(["report", ""], meta)
    page.heading(2, "What was found")
    page.table(["what", "count"], counts)
    if bad:
        page.text(f"**{len(bad)} unreadable mask(s) skipped:** " + "; ".join(f"`{b}`" for b in bad[:5]))
    training = tables.get("training")
    if training is not None and not training.empty:
        page.heading(2, "Task metric per language (mean ± std over seeds)")
        headers, rows = _pivot(training[training.primary], ["task", "variant", "split", "metric"], "value")
        page.table(headers, rows)
    pruning = tables.get("pruning")
    if pruning is not None and not pruning.empty:
        page.heading(2, "Heads kept per language (mean ± std over seeds)")
        headers, rows = _pivot(pruning, ["task", "method"], "heads_kept")
        page.table(headers, rows)
    page.heading(2, "Figures")
    for fig in figures:
        page.heading(3, fig.title)
        if fig.file:
            page.image(fig.title, fig.file)
            if fig.note:
                page.text(fig.note)
        else:
            page.text(f"_Not drawn: {fig.note}._")
    page.heading(2, "Tables")
    for name, frame in tables.items():
        page.heading(3, f"{name}.csv")
        page.link(f"{name}.csv", f"{name}.csv", f" — {len(frame)} rows; first {min(head_rows, len(frame))}:")
        page.frame(frame, head_rows)
    return page


# ----------------------------------------------------------------------------------------------------
# The stage


def run(cfg: DictConfig) -> dict[str, Any]:
    rc = report_config(cfg)
    if rc.sweep:
        sweep = Path(rc.sweep).expanduser().resolve()
        sel = sweep_selection(cfg, rc, sweep)
        name, source = rc.name or sweep.name, f"sweep `{sweep}` ({sel.jobs} jobs)"
    else:
        sel = store_selection(cfg, rc)
        name, source = rc.name or "store", "artifact store"
    training = collect_training(sel)
    pruning, heads, bad = collect_masks(sel)
    analyses = collect_analyses(sel)
    where = ", ".join(str(r) for r in sel.roots)
    if training.empty and pruning.empty and not analyses:
        fix = (
            f"check report.sweep={rc.sweep} (its jobs' paths.artifacts) and that its jobs finished"
            if rc.sweep
            else "run stage=train / stage=prune first, or fix model=, paths.artifacts= or report.* filters"
        )
        raise ConfigError(f"no results for model {'+'.join(sel.models)} in {where} ({sel.describe()}); {fix}")
    jaccard = mask_jaccard(heads)
    tables: dict[str, pd.DataFrame] = {"training": training, "pruning": pruning, "mask_jaccard": jaccard}
    tables.update(analyses)

    root = sel.roots[0] if len(sel.roots) == 1 else artifacts.root(cfg)
    out = root / "reports" / "+".join(sel.models) / name
    counts = [
        (
            "training runs (finished, with metrics.json)",
            _n_runs(training, ["model", "task", "variant", "seed"]),
        ),
        ("training metric rows", len(training)),
        ("masks", len(pruning)),
        ("tasks with masks", ", ".join(sorted(pruning.task.unique())) or "-"),
        ("pruning methods", ", ".join(sorted(pruning.method.unique())) or "-"),
        ("languages with masks", ", ".join(sorted(pruning.lang.unique())) or "-"),
        ("seeds with masks", ", ".join(map(str, sorted(pruning.seed.unique()))) or "-"),
        ("unreadable masks (skipped)", len(bad)),
        ("analysis folders", len({f for t in analyses.values() for f in t.folder.unique()})),
        *((f"{k}.csv rows", len(v)) for k, v in analyses.items()),
    ]
    meta = [
        ("model", "+".join(sel.models)),
        ("source", source),
        ("artifacts", f"`{where}`"),
        ("filters", sel.describe()),
        ("generated", dt.datetime.now().isoformat(timespec="seconds")),
    ]
    with artifacts.lock(out), artifacts.atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for table, frame in tables.items():
            frame.to_csv(tmp / f"{table}.csv", index=False)
        figures = [
            *fig_heads_kept(pruning, tmp),
            *fig_jaccard(jaccard, tmp),
            *fig_cka(analyses.get("analysis_cka"), tmp),
            *fig_transfer(analyses.get("analysis_transfer"), tmp),
        ]
        title = f"xsub report: {name}"
        page = build_page(title, meta, counts, tables, figures, bad, rc.head_rows)
        (tmp / "report.md").write_text(page.markdown())
        if rc.html:
            (tmp / "report.html").write_text(page.html(title))
    drawn = [f.file for f in figures if f.file]
    skipped = {f.title: f.note for f in figures if not f.file}
    print(format_table(["found", "count"], [(k, v) for k, v in counts], title=f"report {name} ({source})"))
    for what, why in skipped.items():
        print(f"  not drawn: {what}: {why}")
    print(f"report: {out / 'report.md'}")
    return {
        "out": str(out),
        "report": str(out / "report.md"),
        "counts": dict(counts),
        "tables": [f"{t}.csv" for t in tables],
        "figures": drawn,
        "skipped": skipped,
    }


def _n_runs(frame: pd.DataFrame, keys: list[str]) -> int:
    return 0 if frame.empty else len(frame.drop_duplicates(subset=keys))
