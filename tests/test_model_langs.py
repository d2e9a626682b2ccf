"""pruning.model_langs: prune the run trained on the language itself (own) or the multilingual one (all)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_cfg
from xsub import store
from xsub.__main__ import run_stage
from xsub.config import ConfigError
from xsub.mask import Mask

TINY = ("stage=prune", "task=synth-cls", "debug=tiny", "pruning.n_examples=48", "pruning.batch_size=16")


@pytest.mark.parametrize(
    ("method", "default"),
    [("heads", "all"), ("heads_mlp", "all"), ("magnitude", "own"), ("imp", "own"), ("wanda", "all")],
)
def test_defaults(method, default):
    assert str(make_cfg(f"pruning={method}").pruning.model_langs) == default


def test_the_key_names_the_run_it_reads():
    own = make_cfg("stage=prune", "pruning=magnitude", "lang=xsvo")
    assert store.pruned_model_key(own, "xsvo").field("langs") == "xsvo"
    assert store.pruned_model_key(own, "xsvo") == store.model_key(make_cfg("stage=train", "lang=xsvo"))
    multi = make_cfg("stage=prune", "pruning=magnitude", "pruning.model_langs=all", "lang=xsvo")
    assert store.pruned_model_key(multi, "xsvo") == store.model_key(make_cfg("stage=train", "lang=all"))
    heads = make_cfg("stage=prune", "lang=xsov")
    assert store.pruned_model_key(heads, "xsov").field("langs") == "all"
    own_heads = make_cfg("stage=prune", "pruning.model_langs=own", "lang=xsov")
    assert store.pruned_model_key(own_heads, "xsov").field("langs") == "xsov"
    # the mask's identity contains the model run's: own and all are different masks
    assert store.mask_key(own, "xsvo") != store.mask_key(multi, "xsvo")


@pytest.mark.parametrize("lang", ["lang=[xsvo,xsov]", "lang=all"])
def test_magnitude_of_one_multilingual_run_refuses_several_languages(lang):
    with pytest.raises(ConfigError) as err:
        make_cfg("stage=prune", "pruning=magnitude", "pruning.model_langs=all", lang)
    msg = str(err.value)
    assert "\n" not in msg and "same mask" in msg
    assert "pruning.model_langs=own" in msg and "pruning=wanda" in msg
    make_cfg("stage=prune", "pruning=magnitude", "pruning.model_langs=all", "lang=xsvo")  # one language: fine
    make_cfg("stage=prune", "pruning=magnitude", lang)  # own runs: fine
    make_cfg("stage=analyze", "pruning=magnitude", "pruning.model_langs=all", lang)  # not a prune


def test_own_run_missing_prints_its_train_command(finetuned_root):
    cfg = make_cfg(*TINY, "pruning=magnitude", "lang=xsvo", f"paths.artifacts={finetuned_root}")
    with pytest.raises(store.Missing) as err:
        run_stage(cfg)
    msg = str(err.value)
    assert "finetuned synth-bert for task synth-cls on xsvo" in msg
    assert msg.split("make it with: ")[1].startswith(
        "python -m xsub stage=train task=synth-cls model=synth-bert lang=xsvo seed=0 debug=tiny"
    )


def test_magnitude_prunes_the_languages_own_run(finetuned_root, tmp_path):
    root = tmp_path / "own"
    for part in ("data", "models"):
        shutil.copytree(Path(finetuned_root) / part, root / part)
    run_stage(make_cfg("stage=train", "task=synth-cls", "debug=tiny", "lang=xsvo", f"paths.artifacts={root}"))
    cfg = make_cfg(
        *TINY, "pruning=magnitude", "pruning.weight_rounds=1", "lang=xsvo", f"paths.artifacts={root}"
    )
    run_stage(cfg)
    own = store.model_key(make_cfg("stage=train", "task=synth-cls", "debug=tiny", "lang=xsvo"))
    directory = store.path(cfg, store.mask_key(cfg, "xsvo"))
    assert [u["id"] for u in store.read_done(directory)["upstream"]] == [own.id]
    mask = Mask.load(directory / "mask.safetensors")
    assert mask.meta.extra["finetuned"] == own.id and mask.meta.extra["model_langs"] == "own"
