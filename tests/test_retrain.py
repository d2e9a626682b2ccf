"""stage=train with a fixed mask (mask.source=...), weight_init=rand, and analysis=transfer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cfg
from xsub.__main__ import run_stage
from xsub.config import ConfigError
from xsub.mask import Mask
from xsub.mask_sources import resolve
from xsub.stages import train as train_stage

TINY = ("task=synth-cls", "debug=tiny")
PRUNE = ("stage=prune", *TINY, "pruning.n_examples=48", "pruning.batch_size=16", "pruning.threshold=0.0")


@pytest.fixture(scope="module")
def store(finetuned_root, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("retrain")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    run_stage(make_cfg(*PRUNE, "lang=[xsvo,xsov]", "pruning.max_rounds=3", f"paths.artifacts={root}"))
    run_stage(
        make_cfg(
            *PRUNE, "lang=xsvo", "pruning=magnitude", "pruning.weight_rounds=3", f"paths.artifacts={root}"
        )
    )
    return str(root)


def train(store: str, *overrides: str) -> tuple[dict, Path]:
    cfg = make_cfg("stage=train", *TINY, f"paths.artifacts={store}", *overrides)
    return run_stage(cfg), train_stage.output_dir(cfg)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def test_weight_mask_stays_exactly_zero_through_training(store):
    metrics, out = train(store, "lang=xsvo", "mask.source=own", "mask.pruning=magnitude", "train.epochs=2")
    assert out.parent.name == "mask-magnitude-own" and out.parent.parent.name == "lang-xsvo"
    mask = Mask.load(out / "mask.safetensors")
    assert mask.weights and mask.fraction("weights") < 1.0
    trained = _weights(out)
    pretrained = _weights(Path(store) / "models/synth-bert/synth-mlm/seed0")
    moved = 0
    for name, keep in mask.weights.items():
        assert (trained[name][~keep] == 0).all(), f"{name}: masked weights moved"
        moved += int((trained[name][keep] != pretrained[name][keep]).sum())
    assert moved > 0  # the kept weights did train
    assert metrics["mask"]["source"] == "own"


def test_head_mask_of_another_language_is_gated_during_training(store):
    metrics, out = train(store, "lang=xsvo", "mask.source=lang:xsov")
    assert out.parent.name == "mask-heads-lang-xsov"
    mask = Mask.load(out / "mask.safetensors")
    source = Mask.load(Path(store) / "masks/synth-bert/synth-cls/heads/xsov/seed0")
    assert mask.equals(source) and mask.num_heads_kept < 8
    assert metrics["mask"]["heads_kept"] == source.num_heads_kept
    # lang:<the training language> is the language's own mask: the same run and folder as mask.source=own
    own = make_cfg("stage=train", *TINY, f"paths.artifacts={store}", "lang=xsvo", "mask.source=own")
    same = make_cfg("stage=train", *TINY, f"paths.artifacts={store}", "lang=xsvo", "mask.source=lang:xsvo")
    assert train_stage.output_dir(own) == train_stage.output_dir(same)


def test_baselines_have_the_size_of_the_own_mask(store):
    base = ("stage=train", *TINY, f"paths.artifacts={store}", "lang=xsvo")
    own = resolve(make_cfg(*base, "mask.source=own"))
    rnd = resolve(make_cfg(*base, "mask.source=random"))
    bad = resolve(make_cfg(*base, "mask.source=bad"))
    inv = resolve(make_cfg(*base, "mask.source=inverted"))
    assert rnd.num_heads_kept == bad.num_heads_kept == own.num_heads_kept
    assert inv.equals(~own)
    history = load_file(str(Path(store) / "masks/synth-bert/synth-cls/heads/xsvo/seed0.history.safetensors"))
    imp = history["round0/importance/head"]
    assert imp[bad.heads].max() <= imp[~bad.heads].min()  # the least important heads
    wbad = resolve(make_cfg(*base, "mask.source=bad", "mask.pruning=magnitude"))
    assert wbad.meta.method == "magnitude-bad"


def test_missing_and_bad_mask_sources_are_one_line(store):
    with pytest.raises(ConfigError, match=r"stage=prune task=synth-cls .*lang=xvso pruning=heads"):
        train(store, "lang=xsvo", "mask.source=lang:xvso")
    with pytest.raises(ConfigError, match="pass one lang="):
        train(store, "lang=[xsvo,xsov]", "mask.source=own")
    with pytest.raises(ConfigError, match="no mask file"):
        train(store, "lang=xsvo", "mask.source=/nonexistent/mask.safetensors")


def test_weight_init_rand_trains_from_a_seeded_reinitialisation(store):
    metrics, out = train(store, "lang=xsov", "train.weight_init=rand", "mask.source=own")
    assert out.parent.name == "init-rand"
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in metrics["history"])
    pre = _weights(Path(store) / "models/synth-bert/synth-mlm/seed0")
    got = _weights(out)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(got[name], pre[name], atol=1e-2)  # not the pretrained weights moved a little


def test_transfer_table_of_target_language_by_mask_source(store):
    args = ("stage=analyze", "analysis=transfer", *TINY, f"paths.artifacts={store}", "lang=[xsvo,xsov]")
    with pytest.raises(ConfigError, match=r"python -m xsub -m stage=train .*mask.source=.*lang:xsov"):
        run_stage(make_cfg(*args, "force=true"))
    for target in ("xsvo", "xsov"):
        for source in ("lang:xsvo", "lang:xsov", "none", "random"):
            train(store, f"lang={target}", f"mask.source={source}")
    done = run_stage(make_cfg(*args))
    from xsub.analysis.inputs import Inputs

    out = Inputs(make_cfg(*args)).out
    table = pd.read_csv(out / "transfer.csv")
    assert len(table) == 2 * 4
    row = table[(table.target == "xsvo") & (table.mask_of == "xsov")]
    retrained = json.loads(
        (
            Path(store) / "models/synth-bert/synth-cls/lang-xsvo/mask-heads-lang-xsov/seed0/metrics.json"
        ).read_text()
    )
    assert row.value.item() == retrained["test"]["xsvo"]["accuracy"]
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert "random" in done["summary"] and "none" in done["summary"]
