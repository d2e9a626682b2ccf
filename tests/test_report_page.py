"""report.html is readable: header row, text left, numbers right-aligned and rounded, no literal backticks."""

from __future__ import annotations

import pandas as pd

from xsub.report.page import Page, fig_heads_kept, fig_jaccard, html_table


def test_html_table_marks_numbers_and_renders_code():
    out = html_table(
        ["lang", "accuracy", "heads kept"], [["xsvo", 0.876543, "3.5 ± 0.71"], ["`x/y`", 12, "-"]]
    )
    assert "<th>lang</th>" in out
    assert '<td class="num">0.8765</td>' in out  # rounded to 4 significant digits, right-aligned
    assert '<td class="num">3.5 ± 0.71</td>' in out and '<td class="num">12</td>' in out
    assert "<td>xsvo</td>" in out and "<td><code>x/y</code></td>" in out and "`" not in out


def test_page_style_aligns_text_left_and_numbers_right():
    page = Page()
    page.table(["a", "b"], [["x", 1.0]])
    html = page.html("t")
    assert "text-align:left" in html and "td.num{text-align:right" in html and "th{background" in html


def test_an_all_ones_jaccard_is_said_not_drawn(tmp_path):
    rows = [
        {
            "model": "m",
            "task": "t",
            "method": "magnitude",
            "seed": 0,
            "lang_a": a,
            "lang_b": b,
            "jaccard": 1.0,
        }
        for a in ("de", "en")
        for b in ("de", "en")
    ]
    (fig,) = fig_jaccard(pd.DataFrame(rows), tmp_path)
    assert fig.file == "" and "every pair is 1.00" in fig.note and "magnitude" in fig.note
    assert not list(tmp_path.glob("*.png"))


def test_heads_kept_of_methods_that_lack_a_setting(tmp_path):
    """A setting only some methods have is missing for the others (pandas' str dtype keeps it missing):
    each method is still one series, not a crash on a missing label."""
    frame = pd.DataFrame(
        {
            "model": ["m"] * 3,
            "task": ["t"] * 3,
            "method": ["heads", "heads", "wanda"],
            "lang": ["a", "b", "a"],
            "seed": [0, 0, 0],
            "heads_kept": [3, 4, 12],
            "heads_total": [12] * 3,
            "pruning.head_unit": pd.array(["query", "query", None], dtype="str"),
        }
    )
    frame.attrs["varying"] = ["pruning.head_unit"]
    (figure,) = fig_heads_kept(frame, tmp_path)
    assert (tmp_path / "heads_kept.png").is_file(), figure
