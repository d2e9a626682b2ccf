"""Wanda (Sun et al. 2024): the score |W_ij|·‖X_j‖₂ per output row, and per-language masks that differ."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from conftest import make_cfg
from xsub import store
from xsub.__main__ import run_stage
from xsub.config import PruningConfig
from xsub.mask import Mask
from xsub.pruning.magnitude import prunable_shapes
from xsub.pruning.wanda import input_norms, prune_rows, wanda_scores

TINY = ("stage=prune", "task=synth-cls", "debug=tiny", "pruning=wanda", "pruning.n_examples=48")


class OneLayer(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.lin.weight.data.copy_(weight)

    def forward(self, x, attention_mask=None):
        return self.lin(x)


def test_score_and_row_rule_on_a_hand_made_layer():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 1.0, 1.5, 0.9]])
    # two sequences of 3 tokens; the last token of the second is padding and must not count
    x = torch.tensor(
        [
            [[1.0, 0.0, 1.0, 2.0], [1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]],
            [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [100.0, 100.0, 100.0, 100.0]],
        ]
    )
    attn = torch.tensor([[1, 1, 1], [1, 1, 0]])
    layer = OneLayer(w)
    batches = [{"x": x, "attention_mask": attn}]
    norms = input_norms(layer, batches, {"lin.weight": layer.lin}, torch.device("cpu"))
    expected = torch.tensor([4.0, 5.0, 1.0, 8.0]).sqrt()  # sums of squares over the 5 real tokens
    assert torch.allclose(norms["lin.weight"], expected)
    s = wanda_scores(w, norms["lin.weight"])
    assert torch.allclose(s, w.abs() * expected)
    # row 0 scores: 2.0, 4.47, 3.0, 1.41 -> drop columns 3 and 0
    # row 1 scores: 8.0, 2.24, 1.5, 2.55 -> drop columns 2 and 1
    keep = prune_rows(s, 0.5)
    assert keep.tolist() == [[False, True, True, False], [True, False, False, True]]
    assert prune_rows(s, 0.0).all() and prune_rows(s, 0.25).sum(1).tolist() == [3, 3]
    # |w| alone would keep column 2 of row 1 (1.5 > 0.9): the activation norm of column 3 decides
    assert prune_rows(w.abs(), 0.5)[1].tolist() == [True, False, True, False]


def test_flat_config_has_the_paper_defaults():
    cfg = PruningConfig()
    assert cfg.sparsity == 0.5 and cfg.sequential is True
    wanda = make_cfg("pruning=wanda").pruning
    assert (wanda.sparsity, wanda.n_examples, str(wanda.model_langs)) == (0.5, 128, "all")


def _jaccard(a: Mask, b: Mask) -> float:
    inter = sum(int((a.weights[n] & b.weights[n]).sum()) for n in a.weights)
    union = sum(int((a.weights[n] | b.weights[n]).sum()) for n in a.weights)
    return inter / union


def test_masks_of_different_languages_differ(finetuned_root):
    langs = ["xsvo", "xsov", "xvso"]
    cfg = make_cfg(*TINY, f"lang=[{','.join(langs)}]", f"paths.artifacts={finetuned_root}")
    results = run_stage(cfg)
    masks = {}
    for lang in langs:
        lcfg = store.upstream(cfg, "prune", lang=lang)
        directory = store.path(cfg, store.mask_key(lcfg, lang))
        masks[lang] = Mask.load(directory / "mask.safetensors")
        assert masks[lang].meta.method == "wanda"
        assert results[lang]["weights_kept"] == pytest.approx(0.5)
        # every output row keeps exactly half of its weights, and all read the ONE multilingual model
        for keep in masks[lang].weights.values():
            assert (keep.sum(1) == keep.shape[1] // 2).all()
        assert store.read_done(directory)["upstream"][0]["id"] == store.pruned_model_key(lcfg, lang).id
        assert store.pruned_model_key(lcfg, lang).field("langs") == "all"
    assert set(masks["xsvo"].weights) == set(prunable_shapes_of(finetuned_root, cfg))
    for a, b in itertools.combinations(langs, 2):
        assert _jaccard(masks[a], masks[b]) < 1.0, (a, b)

    # the masks' crosseval at equal sparsity, with the settings that sized them in its note
    analyze = [a.replace("stage=prune", "stage=analyze") for a in TINY]
    done = run_stage(
        make_cfg(
            *analyze, f"lang=[{','.join(langs)}]", "analysis=crosseval", f"paths.artifacts={finetuned_root}"
        )
    )
    assert "sparsity 0.5" in done["summary"]


def prunable_shapes_of(root, cfg) -> dict:
    from xsub.model import load_finetuned

    model, _ = load_finetuned(
        store.path(cfg, store.pruned_model_key(cfg, "xsvo")) / "model", "classification"
    )
    return prunable_shapes(model)
