"""The chance guard: prune refuses a classifier whose unpruned accuracy is within noise of chance."""

from __future__ import annotations

import pytest
import torch

from conftest import make_cfg
from xsub.config import XsubError
from xsub.sanity import ALPHA, Chance, chance_of, refuse_if_chance


def test_chance_is_the_majority_label_share_of_the_pruning_data():
    batches = [{"labels": torch.tensor([0, 1, 1, 2])}, {"labels": torch.tensor([1, 1, 0, 2])}]
    chance = chance_of(batches)
    assert chance == Chance(level=0.5, n=8)
    assert chance_of([{"labels": torch.zeros(2, 5, dtype=torch.long)}]) is None  # token labels: NER, MLM


def test_noise_band_is_a_one_sided_binomial_test():
    chance = Chance(level=1 / 3, n=1000)
    assert chance.within_noise(0.334) and chance.within_noise(0.35)
    assert not chance.within_noise(0.40) and not chance.within_noise(0.9)
    # the band's edge: the first accuracy whose p-value is at most ALPHA
    edge = chance.upper()
    assert chance.p_value(edge) <= ALPHA < chance.p_value(edge - 1 / chance.n)
    # fewer examples, wider noise: 0.40 is not significant on 64 examples
    assert Chance(level=1 / 3, n=64).within_noise(0.40)


def test_refusal_is_one_line_with_score_chance_and_n():
    with pytest.raises(XsubError) as err:
        refuse_if_chance(0.334, Chance(level=1 / 3, n=1000), "the finetuned minilm-local", allow=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "0.334" in msg and "chance 0.333" in msg and "n=1000" in msg and "pruning.allow_chance=true" in msg
    refuse_if_chance(0.334, Chance(level=1 / 3, n=1000), "x", allow=True)  # allowed: no error
    refuse_if_chance(0.9, Chance(level=1 / 3, n=1000), "x", allow=False)  # learned: no error
    refuse_if_chance(0.1, None, "x", allow=False)  # no chance level (F1, perplexity): not checked


def test_prune_stage_refuses_a_model_at_chance(finetuned_root):
    from xsub.stages import run_stage

    # debug=tiny turns the guard off (a tiny model stays at chance); the test turns it back on
    cfg = make_cfg(
        "stage=prune",
        "task=synth-cls",
        "lang=xsvo",
        "debug=tiny",
        "pruning.n_examples=64",
        "pruning.allow_chance=false",
        f"paths.artifacts={finetuned_root}",
    )
    with pytest.raises(XsubError, match=r"within noise of chance .* n=\d+"):
        run_stage(cfg)


def test_allow_chance_is_not_part_of_the_mask_identity():
    from xsub import store

    a = make_cfg("stage=prune", "task=synth-cls", "lang=xsvo", "pruning.allow_chance=true")
    b = make_cfg("stage=prune", "task=synth-cls", "lang=xsvo")
    assert store.mask_key(a, "xsvo").id == store.mask_key(b, "xsvo").id
