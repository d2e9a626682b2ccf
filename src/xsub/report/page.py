"""What a report shows: its standard figures and one page (Markdown and a minimal HTML page)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xsub import plots

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
    for name in pruning.attrs.get("varying", []):  # runs that differ in a setting are separate series
        labels = labels + f" {name}=" + pruning[name].astype(str)
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
    for key, group in frame.groupby(index, sort=True, dropna=False):
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
        index = ["task", "langs", *training.attrs.get("varying", []), "split", "metric"]
        headers, rows = _pivot(training[training.primary], index, "value")
        page.table(headers, rows)
    pruning = tables.get("pruning")
    if pruning is not None and not pruning.empty:
        page.heading(2, "Heads kept per language (mean ± std over seeds)")
        headers, rows = _pivot(pruning, ["task", "method", *pruning.attrs.get("varying", [])], "heads_kept")
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
