"""Figures of the analyses, written as PNG: heatmaps, small multiples, line plots and a t-SNE scatter.

Everything is drawn on a bare `matplotlib.figure.Figure` with an Agg canvas, never through pyplot: no
global figure registry, no backend switch, safe in threads and on machines without a display. Every
function validates its inputs before it draws (a wrong label count raises ValueError and writes
nothing), writes the PNG atomically (`xsub.store.atomic_path`) and returns the target path.

Defaults aim at readable figures without tuning: the size grows with the matrix, small matrices
(at most `ANNOTATE_MAX` cells a side) get their values written in the cells, NaN cells are grey, one
colour scale is shared by small multiples, and long label lists are thinned.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from xsub.store import atomic_path

DPI = 150
ANNOTATE_MAX = 12  # write the values into the cells when both sides are at most this long
MAX_TICKS = 40  # label at most about this many rows/columns; thin the rest
NAN_COLOR = "#c8c8c8"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")


# ----------------------------------------------------------------------------------------------------
# Helpers


def _array(matrix: Any, name: str = "matrix") -> np.ndarray:
    """A float64 numpy copy of an array-like or a torch Tensor (any device, with or without grad)."""
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().float().numpy()
    arr = np.array(matrix, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)})")
    return arr


def _flat(values: Any) -> Any:
    if hasattr(values, "detach"):
        return values.detach().cpu().float().numpy().ravel()
    return np.asarray(values, dtype=np.float64).ravel()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG atomically, then drop its artists (the figure is not known to pyplot)."""
    target = Path(path)
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    finally:
        fig.clear()
    return target


def _limits(values: list[np.ndarray], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Colour limits from the finite values (0..1 when there are none), never an empty range."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    lo = float(finite.min()) if vmin is None and finite.size else (0.0 if vmin is None else float(vmin))
    hi = float(finite.max()) if vmax is None and finite.size else (1.0 if vmax is None else float(vmax))
    if hi <= lo:  # a constant (e.g. 1x1) matrix: centre its value in a unit range
        lo, hi = (lo - 0.5, lo + 0.5) if vmin is None or vmax is None else (lo, lo + 1.0)
    return lo, hi


def _cmap(cmap: Any) -> matplotlib.colors.Colormap:
    return matplotlib.colormaps.get_cmap(cmap).with_extremes(bad=NAN_COLOR)


def _check_labels(labels: Sequence[str], n: int, what: str) -> list[str]:
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} {what} labels for {n} {what}s")
    return labels


def _tick_step(n: int) -> int:
    return max(1, math.ceil(n / MAX_TICKS))


def _set_ticks(ax: Any, rows: list[str], cols: list[str], fontsize: float) -> None:
    rstep, cstep = _tick_step(len(rows)), _tick_step(len(cols))
    ax.set_yticks(range(0, len(rows), rstep), rows[::rstep], fontsize=fontsize)
    rotate = max((len(c) for c in cols), default=0) > 3 and len(cols) > 1
    ax.set_xticks(
        range(0, len(cols), cstep),
        cols[::cstep],
        fontsize=fontsize,
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor" if rotate else "default",
    )
    ax.tick_params(length=0)


def _annotate(ax: Any, arr: np.ndarray, image: Any, fmt: str, fontsize: float) -> None:
    """Write each value into its cell, black on light and white on dark colours; NaN as a dash."""
    for (i, j), v in np.ndenumerate(arr):
        if not np.isfinite(v):
            ax.text(j, i, "–", ha="center", va="center", fontsize=fontsize, color="#555555")
            continue
        r, g, b, _ = image.cmap(image.norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize, color="w" if dark else "k")


def _notes(fig: Figure, arrays: Sequence[np.ndarray], note: str, nan_note: str) -> None:
    """A small text under the figure: what grey cells mean (only when there are any) and `note` (the
    split, n and settings the figure was made with)."""
    parts = []
    if any(np.isnan(a).any() for a in arrays):
        parts.append(f"grey cells (–): {nan_note or 'no value'}")
    if note:
        parts.append(note)
    if parts:
        fig.text(0.0, 0.0, "\n".join(parts), ha="left", va="top", fontsize=7.5, color="0.25", wrap=True)


def _wrap(text: str, width: int) -> list[str]:
    """A panel title in lines of at most about `width` characters, broken at spaces only (a label
    like synth-cls/xsvo/own is never split at its hyphens)."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [text]


def _cell_font(rows: int, cols: int) -> float:
    return 9.0 if max(rows, cols) <= 6 else 7.5 if max(rows, cols) <= 9 else 6.5


# ----------------------------------------------------------------------------------------------------
# Figures


def heatmap(
    matrix: Any,
    rows: Sequence[str],
    cols: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: Any = "viridis",
    fmt: str = ".2f",
    colorbar_label: str = "",
    note: str = "",
    nan_note: str = "",
) -> Path:
    """One matrix as a heatmap, e.g. Jaccard language x language, cross-evaluation, CKA layer x layer.

    `matrix` is [len(rows), len(cols)] (numpy or torch); NaN cells are grey. Values are written into
    the cells (with `fmt`) when the matrix is at most `ANNOTATE_MAX` a side. `nan_note` says what a
    grey cell means (written under the figure when there is one); `note` adds a line there (split, n).
    """
    arr = _array(matrix)
    n_rows, n_cols = arr.shape
    row_labels = _check_labels(rows, n_rows, "row")
    col_labels = _check_labels(cols, n_cols, "column")
    annotate = max(n_rows, n_cols) <= ANNOTATE_MAX
    side = max(n_rows, n_cols)
    cell = (0.6 if side <= 8 else 0.5) if annotate else max(0.1, min(0.35, 8.0 / side))
    label_w = 0.08 * max((len(r) for r in row_labels), default=1)
    width = min(16.0, max(3.8, n_cols * cell + 2.0 + label_w))
    height = min(14.0, max(3.0, n_rows * cell + 1.4 + (0.4 if title else 0.0)))
    fig = _figure(width, height)
    ax = fig.add_subplot()
    lo, hi = _limits([arr], vmin, vmax)
    image = ax.imshow(
        np.ma.masked_invalid(arr), cmap=_cmap(cmap), vmin=lo, vmax=hi, aspect="auto", interpolation="nearest"
    )
    tick_font = 9.0 if max(n_rows, n_cols) <= 16 else 7.0 if max(n_rows, n_cols) <= 40 else 6.0
    _set_ticks(ax, row_labels, col_labels, tick_font)
    if annotate:
        _annotate(ax, arr, image, fmt, _cell_font(n_rows, n_cols))
    cbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _notes(fig, [arr], note, nan_note)
    return _save(fig, path)


def heatmap_grid(
    matrices: Mapping[str, Any],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: Any = "viridis",
    ncols: int = 4,
    annotate: bool = False,
    fmt: str = ".2f",
    colorbar_label: str = "",
    note: str = "",
    nan_note: str = "",
) -> Path:
    """Small multiples on one colour scale (one colorbar): e.g. every language's head mask [L, H]
    (kept = 1), or CKA layer x layer per language pair. Panels are titled by their key; rows and
    columns are labelled by index. `annotate` writes values into panels at most `ANNOTATE_MAX` a side.
    Long panel titles are wrapped to the panel's width; `note` and `nan_note` as for `heatmap`.
    """
    if not matrices:
        raise ValueError("heatmap_grid needs at least one matrix")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    arrays = {str(k): _array(v, f"matrix {k!r}") for k, v in matrices.items()}
    n = len(arrays)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    max_r = max(a.shape[0] for a in arrays.values())
    max_c = max(a.shape[1] for a in arrays.values())
    small = max(max_r, max_c) <= ANNOTATE_MAX
    cell = (0.45 if annotate else 0.25) if small else max(0.05, min(0.2, 4.0 / max(max_r, max_c)))
    longest = max(len(k) for k in arrays)
    panel_w = max(1.6, max_c * cell + 0.5, min(3.0, 0.045 * longest + 0.4))
    wrap_at = max(12, int(panel_w / 0.075))  # characters of a 7.5 pt title across the panel, with a gap
    title_lines = max(len(_wrap(k, wrap_at)) for k in arrays)
    panel_h = max(1.4, max_r * cell + 0.7) + 0.14 * (title_lines - 1)
    width = min(20.0, ncols * panel_w + 1.4)
    height = min(20.0, nrows * panel_h + (0.5 if title else 0.0) + 0.6)
    fig = _figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    lo, hi = _limits(list(arrays.values()), vmin, vmax)
    colormap = _cmap(cmap)
    image = None
    for ax, (name, arr) in zip(axes.flat, arrays.items()):
        image = ax.imshow(
            np.ma.masked_invalid(arr),
            cmap=colormap,
            vmin=lo,
            vmax=hi,
            aspect="equal",
            interpolation="nearest",
        )
        ax.set_title("\n".join(_wrap(name, wrap_at)), fontsize=7.5 if len(name) > 14 else 9)
        r, c = arr.shape
        if max(r, c) <= 16:
            ax.set_yticks(range(r))
            ax.set_xticks(range(c))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.tick_params(labelsize=7, length=2)
        if annotate and max(r, c) <= ANNOTATE_MAX:
            _annotate(ax, arr, image, fmt, _cell_font(r, c) - 1.5)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    cbar = fig.colorbar(
        image, ax=axes.ravel().tolist(), shrink=0.9 if nrows > 1 else 1.0, aspect=25, fraction=0.03, pad=0.02
    )
    if colorbar_label:
        cbar.set_label(colorbar_label)
    if title:
        fig.suptitle(title)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=10)
    if ylabel:
        fig.supylabel(ylabel, fontsize=10)
    _notes(fig, list(arrays.values()), note, nan_note)
    return _save(fig, path)


def lines(
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    x: Sequence[float] | Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    errors: Mapping[str, Sequence[float]] | None = None,
    band_label: str = "",
    bounds: tuple[float, float] | None = None,
    note: str = "",
) -> Path:
    """One line per series, e.g. the per-layer proportion of heads kept per language or per-layer CKA.

    `x` is shared by every series: numbers, or strings, which make a categorical axis drawn as points
    (side by side, no connecting line); without it each series is drawn at 0..len-1. Every series has
    its own marker and dash pattern, hollow and of decreasing size, so lines that coincide stay visible,
    and a series equal to an earlier one says so in the legend ("= other"). `errors[name]` (e.g. the
    std over seeds) draws a band of ±error (error bars on a categorical axis), clipped to `bounds` (the
    metric's range, e.g. (0, 1)) and explained in the legend by `band_label`; a NaN value leaves a gap.
    `note` adds a small line under the figure (split, n, settings).
    """
    if not series:
        raise ValueError("lines needs at least one series")
    data = {str(k): np.asarray(_flat(v), dtype=np.float64) for k, v in series.items()}
    errs = {str(k): np.asarray(_flat(v), dtype=np.float64) for k, v in (errors or {}).items()}
    unknown = sorted(set(errs) - set(data))
    if unknown:
        raise ValueError(f"errors for unknown series {unknown}; series: {sorted(data)}")
    for name, e in errs.items():
        if e.shape != data[name].shape:
            raise ValueError(f"errors[{name!r}] has {e.size} values for {data[name].size} points")
    categorical = x is not None and any(isinstance(v, str) for v in x)
    if x is not None:
        xs = np.arange(len(x), dtype=np.float64) if categorical else np.asarray(x, dtype=np.float64)
        for name, y in data.items():
            if y.size != xs.size:
                raise ValueError(f"series {name!r} has {y.size} values for {xs.size} x values")
    n_points = max(y.size for y in data.values())
    outside = len(data) > 6 or max(len(k) for k in data) > 24  # many or long labels: beside the axes
    legend_cols = 1 if len(data) <= 16 else 2
    longest = max(len(k) for k in data) + 12  # + " (= other)" on a copy
    legend_w = min(9.0, max(2.4, 0.062 * longest)) * legend_cols if outside else 0.0
    width = min(12.0, max(5.0, 3.0 + 0.25 * n_points)) + legend_w
    height = max(3.6, 0.2 * math.ceil(len(data) / legend_cols) + 0.6) if outside else 3.6
    fig = _figure(width, height + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    palette = matplotlib.colormaps["tab10" if len(data) <= 10 else "tab20"]
    styles = ("-", "--", "-.", ":")
    n = len(data)
    dodge = min(0.6 / n, 0.15) if categorical and n > 1 else 0.0
    seen: dict[str, np.ndarray] = {}
    span = float(np.ptp(xs)) if x is not None and xs.size > 1 else float(max(1, n_points - 1))
    repeats = 0
    for k, (name, y) in enumerate(data.items()):
        xv = xs if x is not None else np.arange(y.size, dtype=np.float64)
        xv = xv + dodge * (k - (n - 1) / 2)
        color = palette(k % palette.N)
        same = next(
            (o for o, v in seen.items() if v.shape == y.shape and np.allclose(v, y, equal_nan=True)), None
        )
        seen[name] = y
        label = f"{name} (= {same})" if same is not None else name
        if same is not None and not categorical:  # a copy of an earlier line: shifted a little, so visible
            repeats += 1
            xv = xv + 0.012 * span * repeats
        size = max(3.5, 8.0 - 4.5 * k / max(1, n - 1))
        style = {
            "marker": MARKERS[k % len(MARKERS)],
            "markersize": size,
            "markerfacecolor": "none",
            "markeredgewidth": 1.3,
            "color": color,
            "label": label,
        }
        if categorical:
            yerr = errs.get(name)
            ax.errorbar(xv, y, yerr=yerr, linestyle="", capsize=3 if yerr is not None else 0, **style)
            continue
        ax.plot(xv, y, linestyle=styles[k % len(styles)], linewidth=1.4, **style)
        if name in errs:
            lo, hi = y - errs[name], y + errs[name]
            if bounds is not None:
                lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
            ax.fill_between(xv, lo, hi, color=color, alpha=0.15, linewidth=0)
    if categorical:
        labels = [str(v) for v in x]  # type: ignore[union-attr]
        step = _tick_step(len(labels))
        rotate = max(len(s) for s in labels) > 4
        ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=45 if rotate else 0)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        xv_all = xs if x is not None else np.arange(n_points, dtype=np.float64)
        if np.allclose(xv_all, np.round(xv_all)):
            if xv_all.size <= 25:
                ax.set_xticks(np.unique(xv_all))  # exactly the layers (or steps) there are
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if np.unique(xv_all).size == 1:
                ax.set_xlim(xv_all[0] - 1, xv_all[0] + 1)
    if bounds is not None:
        finite = np.concatenate([v[np.isfinite(v)] for v in data.values()])
        pad = 0.04 * (bounds[1] - bounds[0])
        lo = min(bounds[0], float(finite.min()) if finite.size else bounds[0]) - pad
        hi = max(bounds[1], float(finite.max()) if finite.size else bounds[1]) + pad
        ax.set_ylim(lo, hi)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    handles, labels_ = ax.get_legend_handles_labels()
    if errs and band_label:
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.5", alpha=0.3, label=band_label))
        labels_.append(band_label)
    if len(data) > 1 or any(data):
        if outside:
            ax.legend(
                handles,
                labels_,
                fontsize=7.5,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                frameon=False,
                ncol=legend_cols,
            )
        else:
            ax.legend(handles, labels_, fontsize=8)
    _notes(fig, [], note, "")
    return _save(fig, path)


def scatter(
    points: Any,
    path: str | Path,
    *,
    color_by: Sequence[str],
    marker_by: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "t-SNE 1",
    ylabel: str = "t-SNE 2",
    color_title: str = "",
    marker_title: str = "",
    note: str = "",
) -> Path:
    """2-D points (e.g. a t-SNE of importance vectors): colour = `color_by` (language), marker =
    `marker_by` (task), each with its own legend; `labels` adds a small text next to every point.
    Categories are sorted, so a language keeps its colour across figures of the same set of languages.
    `color_title`/`marker_title` title the two legends (e.g. "language", "task").
    """
    pts = _array(points, "points")
    if pts.shape[1] != 2:
        raise ValueError(f"points must be [n, 2], got shape {tuple(pts.shape)}")
    n = pts.shape[0]
    colors = _check_labels(color_by, n, "color_by")
    markers = _check_labels(marker_by, n, "marker_by") if marker_by is not None else None
    texts = _check_labels(labels, n, "label") if labels is not None else None
    color_cats = sorted(set(colors))
    marker_cats = sorted(set(markers)) if markers is not None else [""]
    if len(marker_cats) > len(MARKERS):
        raise ValueError(f"at most {len(MARKERS)} marker categories, got {len(marker_cats)}")
    palette = matplotlib.colormaps["tab10" if len(color_cats) <= 10 else "tab20"]
    color_of = {c: palette(i % palette.N) for i, c in enumerate(color_cats)}
    marker_of = {m: MARKERS[i] for i, m in enumerate(marker_cats)}

    fig = _figure(6.4, 5.0 + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    for m in marker_cats:
        for c in color_cats:
            idx = [i for i in range(n) if colors[i] == c and (markers is None or markers[i] == m)]
            if idx:
                ax.scatter(
                    pts[idx, 0],
                    pts[idx, 1],
                    color=color_of[c],
                    marker=marker_of[m],
                    s=42,
                    edgecolors="k",
                    linewidths=0.4,
                    alpha=0.9,
                )
    if texts is not None:
        for i, t in enumerate(texts):
            ax.annotate(t, pts[i], xytext=(3, 3), textcoords="offset points", fontsize=6, alpha=0.8)
    color_handles = [
        Line2D([], [], linestyle="", marker="o", color=color_of[c], markeredgecolor="k", label=c)
        for c in color_cats
    ]
    legend = ax.legend(
        handles=color_handles,
        title=color_title or None,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        title_fontsize=8,
        frameon=False,
    )
    if markers is not None:
        ax.add_artist(legend)
        marker_handles = [
            Line2D([], [], linestyle="", marker=marker_of[m], color="0.4", markeredgecolor="k", label=m)
            for m in marker_cats
        ]
        ax.legend(
            handles=marker_handles,
            title=marker_title or None,
            loc="lower left",
            bbox_to_anchor=(1.02, 0.0),
            fontsize=8,
            title_fontsize=8,
            frameon=False,
        )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.25)
    _notes(fig, [], note, "")
    return _save(fig, path)
