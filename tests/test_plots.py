"""Figures (valid PNGs, atomic, no pyplot state), t-SNE of importance vectors, token overlap."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xsub import plots
from xsub.analysis.importance_tsne import importance_vectors, tsne
from xsub.analysis.token_overlap import token_overlap
from xsub.config import ConfigError
from xsub.data import synthetic as syn

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LANGS = ["xsvo", "xsvo2", "xsov", "xvso"]


def _check_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert np.ptp(img[..., :3]) > 0.1, "the image is a single colour"
    assert plt.get_fignums() == [], "a figure was left open in pyplot"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temporary files left behind"


def _nan_matrix(rows: int, cols: int) -> np.ndarray:
    m = np.random.default_rng(0).random((rows, cols))
    m[0, -1] = np.nan
    return m


# ----------------------------------------------------------------------------------------------------
# Plots

CASES: dict[str, Callable[[Path], Path]] = {
    "heatmap": lambda p: plots.heatmap(
        _nan_matrix(4, 4), LANGS, LANGS, p, title="Jaccard", xlabel="lang", ylabel="lang", colorbar_label="J"
    ),
    "heatmap_tensor": lambda p: plots.heatmap(
        torch.rand(3, 5), list("abc"), list("vwxyz"), p, vmin=0, vmax=1
    ),
    "heatmap_1x1": lambda p: plots.heatmap(np.array([[0.7]]), ["en"], ["en"], p, title="one cell"),
    "heatmap_large": lambda p: plots.heatmap(
        _nan_matrix(50, 60), [str(i) for i in range(50)], [str(i) for i in range(60)], p
    ),
    "heatmap_all_nan": lambda p: plots.heatmap(np.full((2, 2), np.nan), ["a", "b"], ["c", "d"], p),
    "grid": lambda p: plots.heatmap_grid(
        {lang: _nan_matrix(4, 6) for lang in LANGS[:3]}, p, title="masks", xlabel="head", ylabel="layer"
    ),
    "grid_annotated": lambda p: plots.heatmap_grid(
        {"a-b": _nan_matrix(3, 3), "a-c": torch.rand(3, 3)}, p, annotate=True, ncols=1, vmin=0, vmax=1
    ),
    "grid_1x1": lambda p: plots.heatmap_grid({"only": np.array([[1.0]])}, p, title="1x1"),
    "lines": lambda p: plots.lines(
        {"xsvo": [0.1, 0.5, np.nan, 0.9], "xsov": [0.3, 0.2, 0.6, 0.4]},
        p,
        title="kept per layer",
        xlabel="layer",
        ylabel="kept",
        errors={"xsvo": [0.05, 0.1, 0.0, 0.02]},
    ),
    "lines_categorical_x": lambda p: plots.lines({"cka": [0.9, 0.5, 0.2]}, p, x=["emb", "l1", "l2"]),
    "scatter": lambda p: plots.scatter(
        np.random.default_rng(0).normal(size=(12, 2)),
        p,
        color_by=[LANGS[i % 4] for i in range(12)],
        marker_by=[("cls", "ner", "mlm")[i % 3] for i in range(12)],
        labels=[str(i) for i in range(12)],
        title="t-SNE",
    ),
    "scatter_color_only": lambda p: plots.scatter(np.array([[0.0, 1.0], [2.0, 3.0]]), p, color_by=["a", "b"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_writes_valid_png(case: str, tmp_path: Path) -> None:
    target = tmp_path / "fig" / f"{case}.png"
    assert CASES[case](target) == target
    _check_png(target)


def test_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "h.png"
    target.write_bytes(b"old")
    plots.heatmap(np.eye(2), ["a", "b"], ["a", "b"], target)
    _check_png(target)


BAD: dict[str, Callable[[Path], Path]] = {
    "heatmap_rows": lambda p: plots.heatmap(np.eye(3), ["a", "b"], ["a", "b", "c"], p),
    "heatmap_cols": lambda p: plots.heatmap(np.eye(3), ["a", "b", "c"], ["a"], p),
    "heatmap_1d": lambda p: plots.heatmap(np.ones(3), ["a"], ["a", "b", "c"], p),
    "grid_empty": lambda p: plots.heatmap_grid({}, p),
    "grid_1d": lambda p: plots.heatmap_grid({"a": np.ones(3)}, p),
    "lines_x": lambda p: plots.lines({"a": [1, 2, 3]}, p, x=[0, 1]),
    "lines_errors_len": lambda p: plots.lines({"a": [1, 2, 3]}, p, errors={"a": [0.1]}),
    "lines_errors_key": lambda p: plots.lines({"a": [1, 2, 3]}, p, errors={"b": [0.1, 0.1, 0.1]}),
    "scatter_shape": lambda p: plots.scatter(np.zeros((3, 3)), p, color_by=["a"] * 3),
    "scatter_colors": lambda p: plots.scatter(np.zeros((3, 2)), p, color_by=["a"] * 2),
    "scatter_markers": lambda p: plots.scatter(np.zeros((3, 2)), p, color_by=["a"] * 3, marker_by=["m"]),
    "scatter_labels": lambda p: plots.scatter(np.zeros((3, 2)), p, color_by=["a"] * 3, labels=["x"] * 4),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_and_writes_nothing(case: str, tmp_path: Path) -> None:
    target = tmp_path / "out" / "fig.png"
    with pytest.raises(ValueError):
        BAD[case](target)
    assert not target.exists()
    assert not target.parent.exists() or not any(target.parent.iterdir())


# ----------------------------------------------------------------------------------------------------
# t-SNE


def _blobs(n_per: int = 10, d: int = 20, gap: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (n_per, d)), rng.normal(gap, 1, (n_per, d))])
    return x, np.repeat([0, 1], n_per)


def test_tsne_deterministic_shape_and_separates_clusters() -> None:
    x, y = _blobs()
    a, b = tsne(x, seed=3), tsne(x, seed=3)
    assert a.shape == (20, 2)
    np.testing.assert_array_equal(a, b)
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert (y[dist.argmin(axis=1)] == y).all(), "a nearest neighbour lies in the other cluster"
    # linearly separable along the line joining the two centroids
    c0, c1 = a[y == 0].mean(0), a[y == 1].mean(0)
    proj = (a - (c0 + c1) / 2) @ (c1 - c0)
    assert (proj[y == 0] < 0).all() and (proj[y == 1] > 0).all()


def test_tsne_clamps_perplexity(caplog: pytest.LogCaptureFixture) -> None:
    x = np.random.default_rng(0).normal(size=(5, 8))
    with caplog.at_level(logging.WARNING, logger="xsub.analysis.importance_tsne"):
        out = tsne(x, perplexity=10.0)
    assert out.shape == (5, 2) and np.isfinite(out).all()
    assert any("perplexity" in r.getMessage() for r in caplog.records)


def test_tsne_edge_cases() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        tsne(np.zeros((1, 4)))
    assert tsne(np.random.default_rng(0).normal(size=(2, 3))).shape == (2, 2)
    np.testing.assert_array_equal(tsne(np.ones((4, 3))), np.zeros((4, 2)))


# ----------------------------------------------------------------------------------------------------
# Importance vectors


def test_importance_vectors_reads_final_round(tmp_path: Path) -> None:
    path = tmp_path / "seed0.history.safetensors"
    tensors = {}
    for r in range(3):
        tensors[f"round{r}/importance/head"] = torch.full((2, 3), float(r))
        tensors[f"round{r}/mask/head"] = torch.ones(2, 3)
        tensors[f"round{r}/importance/mlp"] = torch.arange(4, dtype=torch.float32) + 10 * r
        tensors[f"round{r}/mask/mlp"] = torch.ones(4)
    tensors["round10/importance/head"] = torch.full((2, 3), 10.0)  # numeric, not lexicographic order
    tensors["round10/importance/mlp"] = torch.arange(4, dtype=torch.float32) + 100
    save_file(tensors, str(path))
    vec = importance_vectors(path)
    assert set(vec) == {"head", "mlp"}
    assert vec["head"].shape == (6,) and vec["head"].dtype == np.float32
    np.testing.assert_array_equal(vec["head"], np.full(6, 10.0))
    np.testing.assert_array_equal(vec["mlp"], np.arange(4) + 100.0)
    np.testing.assert_array_equal(importance_vectors(path, at_round=1)["head"], np.ones(6))


def test_importance_vectors_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prune first"):
        importance_vectors(tmp_path / "nope.history.safetensors")
    with pytest.raises(ConfigError, match="run stage=prune task=cls"):
        importance_vectors(tmp_path / "nope.history.safetensors", fix="run stage=prune task=cls")
    empty = tmp_path / "masks_only.safetensors"
    save_file({"round0/mask/head": torch.ones(2)}, str(empty))
    with pytest.raises(ConfigError):
        importance_vectors(empty)


# ----------------------------------------------------------------------------------------------------
# Token overlap


@pytest.fixture(scope="module")
def synthetic_texts() -> tuple[object, dict[str, list[str]]]:
    """The embedded languages' parallel sentences and their tokenizer (disjoint lexicons)."""
    lexicons = syn.build_lexicons(0)
    frames = syn.parallel_frames(0, 30)
    texts = {
        lang: [" ".join(syn.render(f, lang, lexicons[lang])[0]) for f in frames] for lang in syn.LANGUAGES
    }
    return syn.build_tokenizer(lexicons), texts


def test_token_overlap_disjoint_languages(synthetic_texts) -> None:
    tokenizer, texts = synthetic_texts
    out = token_overlap(tokenizer, texts, reference="xsvo")
    assert set(out) == set(syn.LANGUAGES)
    assert out["xsvo"]["type_overlap"] == out["xsvo"]["token_overlap"] == 1.0
    assert out["xsvo"]["shared_types"] == out["xsvo"]["types"] > 10
    for lang in set(syn.LANGUAGES) - {"xsvo"}:
        assert out[lang]["types"] > 10
        assert out[lang]["shared_types"] == out[lang]["type_overlap"] == out[lang]["token_overlap"] == 0.0
        assert out[lang]["unk_share"] == 0.0


def test_token_overlap_shared_lexicon(synthetic_texts) -> None:
    tokenizer, texts = synthetic_texts
    same = {"a": texts["xsov"], "b": list(reversed(texts["xsov"]))}
    out = token_overlap(tokenizer, same, reference="a")
    assert out["b"]["type_overlap"] == out["b"]["token_overlap"] == 1.0
    assert out["b"]["shared_types"] == out["b"]["types"] == out["a"]["types"]


def test_token_overlap_hand_computed_and_unk() -> None:
    tokenizer = syn.word_level_tokenizer(["a", "b", "c", "d"])
    texts = {"ref": ["a b c", "c"], "other": ["a d d", "zz"], "none": ["qq"]}
    out = token_overlap(tokenizer, texts, reference="ref")
    # other: ids {a, d} ([UNK] for "zz" left out), shared {a}; occurrences a d d -> 1 of 3 shared
    assert out["other"]["types"] == 2 and out["other"]["shared_types"] == 1
    assert out["other"]["type_overlap"] == pytest.approx(0.5)
    assert out["other"]["token_overlap"] == pytest.approx(1 / 3)
    assert out["other"]["unk_share"] == pytest.approx(1 / 4)
    assert (
        out["none"]["types"] == 0 and out["none"]["type_overlap"] == 0.0 and out["none"]["unk_share"] == 1.0
    )
    assert out["ref"]["type_overlap"] == 1.0 and out["ref"]["types"] == 3


def test_token_overlap_unknown_reference(synthetic_texts) -> None:
    tokenizer, texts = synthetic_texts
    with pytest.raises(ValueError, match="xsvo"):
        token_overlap(tokenizer, texts, reference="en")
