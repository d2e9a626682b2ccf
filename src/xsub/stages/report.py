"""stage=report: every result of a sweep (or of the artifact store) as tidy tables, figures and one page.

`python -m xsub stage=report` walks the store (xsub.store.find) for `model.name`, narrowed by
`report.tasks`, `report.seeds`, `report.langs` and `report.methods` ([] = all found).
`report.sweep=<multirun folder>` instead keeps exactly the artifacts that sweep's jobs made or read,
named by the store keys of each job's `.hydra/config.yaml` (xsub.report.select). Every setting that
differs between the collected runs is a column, so a `train.lr` × `pruning.threshold` sweep gives one
row per run.

Output: reports/<model>/<name>/ in the store (name = `report.name`, else the sweep folder's name,
else "store"), remade on every run as one directory swap: training.csv, pruning.csv,
mask_jaccard.csv, analysis_<name>[_<table>].csv, the standard figures (xsub.report.page) and
report.md (and report.html).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from xsub import store
from xsub.config import ConfigError
from xsub.report.collect import collect_analyses, collect_masks, collect_training, mask_jaccard
from xsub.report.page import build_page, fig_cka, fig_heads_kept, fig_jaccard, fig_transfer
from xsub.report.select import report_config, store_selection, sweep_selection
from xsub.tables import format_table


def run(cfg: DictConfig) -> dict[str, Any]:
    rc = report_config(cfg)
    if rc.sweep:
        sweep = Path(rc.sweep).expanduser().resolve()
        sel = sweep_selection(cfg, rc, sweep)
        name, source = rc.name or sweep.name, f"sweep `{sweep}` ({sel.jobs} jobs)"
    else:
        sel = store_selection(cfg, rc)
        name, source = rc.name or "store", "artifact store"
    entries = sel.entries()
    training = collect_training(sel, entries)
    pruning, heads, bad = collect_masks(entries)
    analyses = collect_analyses(sel, entries)
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

    root = sel.roots[0] if len(sel.roots) == 1 else store.root(cfg)
    out = root / store.FOLDER["report"] / "+".join(sel.models) / name
    counts = [
        (
            "training runs (finished, with metrics.json)",
            _n_runs(training, ["run"]),
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
        ("artifacts", where),
        ("filters", sel.describe()),
        ("generated", dt.datetime.now().isoformat(timespec="seconds")),
    ]
    with store.atomic_path(out) as tmp:
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
