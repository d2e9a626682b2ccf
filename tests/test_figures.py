"""What a figure says: title, axis labels, colour-bar label, an explanation of grey (NaN) cells,
coinciding lines that stay visible, categorical axes as points, integer axes with integer ticks.

Each plots.* function is drawn and its matplotlib Figure inspected before it is written; and every
call of a figure function in the package is checked to pass a title, axis labels (where it has axes
of its own) and, for heatmaps, a colour-bar label.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from xsub import plots

SRC = Path(__file__).resolve().parents[1] / "src" / "xsub"


@pytest.fixture
def drawn(monkeypatch):
    """The Figure of each plots.* call, captured before it is saved and cleared."""
    figures = []

    def capture(fig, path):  # drawn and written as plots._save does, but not cleared afterwards
        fig.savefig(path, format="png", dpi=60, bbox_inches="tight")
        figures.append(_describe(fig))
        return Path(path)

    monkeypatch.setattr(plots, "_save", capture)
    return figures


def _describe(fig) -> dict:
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    texts = [t.get_text() for t in fig.texts]
    return {
        "title": (fig._suptitle.get_text() if fig._suptitle else "") or axes[0].get_title(),
        "xlabel": (fig._supxlabel.get_text() if fig._supxlabel else "") or axes[0].get_xlabel(),
        "ylabel": (fig._supylabel.get_text() if fig._supylabel else "") or axes[0].get_ylabel(),
        "colorbar": [b.get_ylabel() for b in bars],
        "notes": texts,
        "axes": axes,
    }


def test_heatmap_has_title_labels_colorbar_label_and_explains_nan(drawn, tmp_path):
    m = np.array([[np.nan, 0.5], [0.5, 1.0]])
    plots.heatmap(
        m, ["a", "b"], ["a", "b"], tmp_path / "h.png", title="T", xlabel="X", ylabel="Y",
        colorbar_label="CB", nan_note="undefined here", note="dev split, n = 32",
    )  # fmt: skip
    d = drawn[-1]
    assert (d["title"], d["xlabel"], d["ylabel"], d["colorbar"]) == ("T", "X", "Y", ["CB"])
    assert any("grey cells (–): undefined here" in t and "dev split, n = 32" in t for t in d["notes"])
    plots.heatmap(np.ones((2, 2)), ["a", "b"], ["a", "b"], tmp_path / "h2.png", colorbar_label="c")
    assert not any("grey" in t for t in drawn[-1]["notes"])  # no NaN: nothing to explain


def test_grid_wraps_long_panel_titles_and_labels_its_colorbar(drawn, tmp_path):
    long = {
        "synth-cls/xsvo/own ~ synth-ner/xsvo/own": np.eye(3),
        "synth-cls/xsov/own ~ synth-ner/xsov/own": np.eye(3),
    }
    plots.heatmap_grid(long, tmp_path / "g.png", title="T", xlabel="X", ylabel="Y", colorbar_label="CKA")
    d = drawn[-1]
    assert (d["title"], d["xlabel"], d["ylabel"], d["colorbar"]) == ("T", "X", "Y", ["CKA"])
    for ax in d["axes"][:2]:
        assert "\n" in ax.get_title()  # wrapped: panel titles do not run into each other


def test_coinciding_lines_stay_visible_and_say_so(drawn, tmp_path):
    same = [0.5, 0.5, 0.25]
    plots.lines(
        {"xsvo": same, "xsov": same, "xvso": [1, 0, 0]}, tmp_path / "l.png", title="T", xlabel="X", ylabel="Y"
    )
    ax = drawn[-1]["axes"][0]
    lines = ax.get_lines()
    assert len({ln.get_marker() for ln in lines}) == 3 and len({ln.get_markersize() for ln in lines}) == 3
    assert all(ln.get_markerfacecolor() == "none" for ln in lines)  # hollow: a smaller one shows inside
    assert "xsov (= xsvo)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_band_is_explained_and_clipped_to_bounds(drawn, tmp_path):
    plots.lines(
        {"a": [0.9, 1.0]}, tmp_path / "b.png", x=[0, 1], errors={"a": [0.3, 0.3]}, bounds=(0.0, 1.0),
        band_label="± std over 3 seeds", title="T", xlabel="X", ylabel="Y",
    )  # fmt: skip
    ax = drawn[-1]["axes"][0]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() <= 1.0 + 1e-9
    assert "± std over 3 seeds" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_categorical_axis_is_points_not_lines(drawn, tmp_path):
    plots.lines({"a": [1, 2, 3], "b": [1, 2, 3]}, tmp_path / "c.png", x=["de", "en", "zh"], title="T")
    ax = drawn[-1]["axes"][0]
    assert all(ln.get_linestyle() in ("None", "") for ln in ax.get_lines())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["de", "en", "zh"]


def test_a_single_integer_x_has_one_integer_tick(drawn, tmp_path):
    plots.lines({"a": [0.7]}, tmp_path / "s.png", x=[2], title="T", xlabel="layer")
    ticks = drawn[-1]["axes"][0].get_xticks()
    assert list(ticks) == [2.0]


def test_many_series_put_the_legend_outside_a_wider_figure(drawn, tmp_path):
    series = {f"pair {i}": list(np.linspace(0, 1, 5) * i / 16) for i in range(16)}
    plots.lines(series, tmp_path / "m.png", title="T", xlabel="X", ylabel="Y")
    ax = drawn[-1]["axes"][0]
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


def test_scatter_has_title_and_labels(drawn, tmp_path):
    pts = np.array([[0, 0], [1, 1], [2, 0]])
    plots.scatter(pts, tmp_path / "t.png", color_by=["a", "b", "a"], title="T", note="3 vectors")
    d = drawn[-1]
    assert d["title"] == "T" and d["xlabel"] == "t-SNE 1" and d["ylabel"] == "t-SNE 2"
    assert any("3 vectors" in t for t in d["notes"])


# ---- every figure the package draws ----------------------------------------------------------------

NEEDS = {
    "heatmap": ("title", "colorbar_label"),
    "heatmap_grid": ("title", "xlabel", "ylabel", "colorbar_label"),
    "lines": ("title", "xlabel", "ylabel"),
    "scatter": ("title",),
}


def _calls():
    for file in sorted(SRC.rglob("*.py")):
        if file.name == "plots.py":
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "plots"
                and node.func.attr in NEEDS
            ):
                yield f"{file.relative_to(SRC)}:{node.lineno}", node


CALLS = list(_calls())


def test_the_package_draws_every_kind():
    assert {node.func.attr for _, node in CALLS} == set(NEEDS)


@pytest.mark.parametrize(("where", "node"), CALLS, ids=[w for w, _ in CALLS])
def test_every_figure_passes_title_labels_and_colorbar_label(where, node):
    given = {k.arg for k in node.keywords}
    missing = [k for k in NEEDS[node.func.attr] if k not in given]
    if node.func.attr == "heatmap":  # its axes: xlabel/ylabel, unless the title names rows and columns
        pass
    assert not missing, f"{where}: plots.{node.func.attr} without {', '.join(missing)}"
    assert "note" in given, f"{where}: plots.{node.func.attr} does not say its split, n and settings (note=)"
