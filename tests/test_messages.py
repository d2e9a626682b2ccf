"""Messages a user meets: each one line that says what happened and what to do."""

from __future__ import annotations

import pytest

from conftest import make_cfg
from xsub.config import ConfigError


def test_hub_error_offline_does_not_suggest_offline_mode():
    import datasets

    from xsub.data.hub import load_hub

    assert datasets.config.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(ConfigError) as err:
        load_hub("no-such-owner/no-such-dataset", "de", "train")
    msg = str(err.value)
    assert "\n" not in msg and "data.path=<dir>" in msg
    assert "set HF_HUB_OFFLINE=1" not in msg and "download it once online" in msg


def test_parallel_corpus_hint_names_the_analysis_keys():
    from xsub.data.parallel import load_parallel

    with pytest.raises(ConfigError) as err:
        load_parallel("flores", ["de"], "devtest")
    assert "analysis.parallel_path=<dir>" in str(err.value) and "data.path" not in str(err.value)


def test_pruning_seed_without_its_model_suggests_model_seed(finetuned_root):
    from xsub.stages import run_stage

    cfg = make_cfg(
        "stage=prune",
        "task=synth-cls",
        "lang=xsvo",
        "seed=1",
        "debug=tiny",
        f"paths.artifacts={finetuned_root}",
    )
    with pytest.raises(ConfigError) as err:
        run_stage(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "make it with: python -m xsub stage=train" in msg
    assert msg.endswith("pruning.model_seed=0")
