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
        # a setting another method lacks is missing there (pandas' str dtype keeps it missing): "-"
        labels = labels + f" {name}=" + pruning[name].map(lambda v: "-" if pd.isna(v) else str(v))
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
        band_label="± std over seeds" if many_seeds else "",
        bounds=(0.0, float(total)),
        note=_settings_note(frame),
    )
    return [Figure(title, path.name, note=f"series: {', '.join(series)}")]


def _settings_note(frame: pd.DataFrame) -> str:
    """The runs a report figure shows: models, tasks, methods, seeds and the pruning data per language."""
    parts = []
    for col, name in (("model", "model"), ("task", "task"), ("method", "pruning"), ("seed", "seeds")):
        if col in frame:
            parts.append(f"{name} {_list(sorted(frame[col].dropna().unique()))}")
    if "n_examples" in frame and frame.n_examples.notna().any():
        parts.append(
            f"{_list(sorted(frame.n_examples.dropna().astype(int).unique()))} pruning examples per language"
        )
    return " · ".join(parts)


def _language_matrix(
    mean: pd.DataFrame, path: Path, title: str, label: str, nan_note: str = "", note: str = ""
) -> None:
    """A [0, 1] symmetric measure between languages (Jaccard, CKA) as a square heatmap in sorted
    order: a pair measured one way round fills both cells, the diagonal is 1."""
    order = sorted(set(mean.index) | set(mean.columns))
    mean = mean.reindex(index=order, columns=order)
    values = mean.to_numpy(dtype=float)
    values = np.where(np.isnan(values), values.T, values)
    np.fill_diagonal(values, 1.0)
    plots.heatmap(
        values,
        order,
        order,
        path,
        title=title,
        vmin=0.0,
        vmax=1.0,
        colorbar_label=label,
        nan_note=nan_note,
        note=note,
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
        if (group[group.lang_a != group.lang_b].jaccard >= 1.0 - 1e-12).all():
            figures.append(
                Figure(
                    f"{title}: {model} / {task} / {method}",
                    note="every pair is 1.00, all languages keep the same heads"
                    + (
                        " (magnitude pruning removes weights, not heads)"
                        if "magnitude" in str(method)
                        else ""
                    ),
                )
            )
            continue
        name = f"jaccard_{_slug(model, task, method)}.png"
        _language_matrix(
            group.groupby(["lang_a", "lang_b"]).jaccard.mean().unstack(),
            out / name,
            f"Jaccard of kept heads: {task} / {method} (seeds {_list(seeds)}"
            + (", mean)" if len(seeds) > 1 else ")"),
            "Jaccard |A∩B| / |A∪B|",
            note=f"model {model} · task {task} · pruning {method} · seeds {_list(seeds)}",
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
            nan_note="pair not compared (a cka analysis compares sides that differ in one of task, "
            "language and mask)",
            note=f"model {model} · pruning {method} · seeds {_list(seeds)}"
            + (f" · n = {_list(sorted(group.n.unique()))} parallel sentences" if "n" in group else ""),
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
            nan_note="no retrained run for this cell",
            note=f"model {model} · tasks {tasks} · pruning {method} · seeds {_list(seeds)}",
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


_NUMBER = re.compile(r"^[-+]?(\d[\d.,]*(e[-+]?\d+)?|nan|inf)( ± [\d.e+-]+)?%?$", re.IGNORECASE)


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold** as HTML (never literal backticks)."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"(?<![\w/])_([^_]+)_(?![\w/])", r"<em>\1</em>", text)


def html_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """Headers on a shaded row; text left-aligned, numbers (and mean ± std) right-aligned and rounded."""

    def td(v: Any) -> str:
        text = _fmt(v)
        numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        cls = ' class="num"' if numeric or _NUMBER.match(text) else ""
        return f"<td{cls}>{_inline(text)}</td>"

    head = "".join(f"<th>{_inline(_fmt(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(td(v) for v in r) + "</tr>" for r in rows)
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
                out.append(f"<p>{_inline(value)}</p>")
            elif kind == "table":
                out.append(f'<div class="wide">{html_table(*value)}</div>')
            elif kind == "img":
                out.append(f'<p><img src="{html.escape(value[1])}" alt="{html.escape(value[0])}"></p>')
            elif kind == "a":
                href, text, after = (html.escape(v) for v in (value[1], value[0], value[2]))
                out.append(f'<p><a href="{href}">{text}</a>{after}</p>')
        style = (
            "body{font-family:system-ui,sans-serif;font-size:15px;line-height:1.45;max-width:1400px;"
            "margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;font-size:14px;margin:.6em 0 1.2em}"
            "td,th{border:1px solid #d0d0d0;padding:4px 10px;text-align:left;vertical-align:top;"
            "white-space:nowrap}.wide{overflow-x:auto}"
            "th{background:#eef1f5;font-weight:600}"
            "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
            "tbody tr:nth-child(even){background:#fafafa}"
            "code{font-size:13px;background:#f3f3f3;padding:0 3px;border-radius:3px}"
            "img{max-width:100%;border:1px solid #eee}"
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
