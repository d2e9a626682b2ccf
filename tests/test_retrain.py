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
from xsub import store as xstore
from xsub.__main__ import run_stage
from xsub.config import ConfigError
from xsub.mask import Mask
from xsub.mask_sources import resolve

TINY = ("task=synth-cls", "debug=tiny")
# The pruning settings of the masks the fixture makes. A stage finds its inputs from its own command
# line, so the retraining runs (and the transfer analysis) name them too: their masks' identities.
# A magnitude mask is named with its own method's settings (pruning=magnitude ...).
PRUNED = ("pruning.n_examples=48", "pruning.batch_size=16", "pruning.threshold=0.0", "pruning.max_rounds=3")
MAGNITUDE = (
    "pruning=magnitude",
    "pruning.model_langs=all",  # the fixture's multilingual run, one language per prune
    "pruning.n_examples=48",
    "pruning.batch_size=16",
    "pruning.threshold=0.0",
    "pruning.weight_rounds=3",
)
PRUNE = ("stage=prune", *TINY, *PRUNED)


@pytest.fixture(scope="module")
def store(finetuned_root, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("retrain")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    run_stage(make_cfg(*PRUNE, "lang=[xsvo,xsov]", f"paths.artifacts={root}"))
    run_stage(make_cfg("stage=prune", *TINY, *MAGNITUDE, "lang=xsvo", f"paths.artifacts={root}"))
    return str(root)


def train_cfg(store: str, *overrides: str):
    pruned = MAGNITUDE if "mask.pruning=magnitude" in overrides else PRUNED
    return make_cfg("stage=train", *TINY, *pruned, f"paths.artifacts={store}", *overrides)


def run_dir(cfg) -> Path:
    return xstore.path(cfg, xstore.model_key(cfg))


def train(store: str, *overrides: str) -> tuple[dict, Path]:
    cfg = train_cfg(store, *overrides)
    return run_stage(cfg), run_dir(cfg)


def mask_dir(store: str, lang: str, *overrides: str) -> Path:
    """The stored mask a retraining run of this test reads (the prune settings of the fixture)."""
    pruned = MAGNITUDE if "pruning=magnitude" in overrides else PRUNED
    cfg = make_cfg("stage=prune", *TINY, *pruned, f"lang={lang}", f"paths.artifacts={store}", *overrides)
    return xstore.path(cfg, xstore.mask_key(cfg, lang))


def pretrained_weights(store: str) -> dict[str, torch.Tensor]:
    key = xstore.pretrain_key(train_cfg(store))
    return _weights(xstore.path(store, key))


def resolve_for(cfg):
    """The mask a train run of `cfg` would use (read through its claim, as the train stage does)."""
    return resolve(cfg, xstore.Claim(cfg, xstore.model_key(cfg), force=False))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def test_weight_mask_stays_exactly_zero_through_training(store):
    # (train.* settings name the finetuned run the mask was pruned from too, so none are given here)
    overrides = ("lang=xsvo", "mask.source=own", "mask.pruning=magnitude")
    metrics, out = train(store, *overrides)
    key = xstore.model_key(train_cfg(store, *overrides))
    assert out.parent.parent.name == "xsvo"
    assert key.settings_dict()["mask"] == {"source": "own", "pruning": "magnitude", "seed": 0}
    magnitude = mask_dir(store, "xsvo", "pruning=magnitude")
    assert str(magnitude.relative_to(store)) in [u["path"] for u in xstore.read_done(out)["upstream"]]
    mask = Mask.load(out / "mask.safetensors")
    assert mask.weights and mask.fraction("weights") < 1.0
    assert mask.equals(Mask.load(magnitude / "mask.safetensors"))
    trained = _weights(out)
    pretrained = pretrained_weights(store)
    moved = 0
    for name, keep in mask.weights.items():
        assert (trained[name][~keep] == 0).all(), f"{name}: masked weights moved"
        moved += int((trained[name][keep] != pretrained[name][keep]).sum())
    assert moved > 0  # the kept weights did train
    assert metrics["mask"]["source"] == "own"


def test_head_mask_of_another_language_is_gated_during_training(store):
    metrics, out = train(store, "lang=xsvo", "mask.source=lang:xsov")
    assert out != run_dir(train_cfg(store, "lang=xsvo"))  # not the plain finetuning of xsvo
    mask = Mask.load(out / "mask.safetensors")
    source = Mask.load(mask_dir(store, "xsov") / "mask.safetensors")
    assert mask.equals(source) and mask.num_heads_kept < 8
    assert metrics["mask"]["heads_kept"] == source.num_heads_kept
    # lang:<the training language> is the language's own mask: the same run and folder as mask.source=own
    own = train_cfg(store, "lang=xsvo", "mask.source=own")
    same = train_cfg(store, "lang=xsvo", "mask.source=lang:xsvo")
    assert run_dir(own) == run_dir(same)


def test_baselines_have_the_size_of_the_own_mask(store):
    base = ("stage=train", *TINY, *PRUNED, f"paths.artifacts={store}", "lang=xsvo")
    own = resolve_for(make_cfg(*base, "mask.source=own"))
    rnd = resolve_for(make_cfg(*base, "mask.source=random"))
    bad = resolve_for(make_cfg(*base, "mask.source=bad"))
    inv = resolve_for(make_cfg(*base, "mask.source=inverted"))
    assert rnd.num_heads_kept == bad.num_heads_kept == own.num_heads_kept
    assert inv.equals(~own)
    history = load_file(str(mask_dir(store, "xsvo") / "history.safetensors"))
    imp = history["round0/importance/head"]
    assert imp[bad.heads].max() <= imp[~bad.heads].min()  # the least important heads
    wbad = resolve_for(train_cfg(store, "lang=xsvo", "mask.source=bad", "mask.pruning=magnitude"))
    assert wbad.meta.method == "magnitude-bad"


def test_missing_and_bad_mask_sources_are_one_line(store):
    # the prune command of exactly the mask this run names (heads is the default method: not spelled)
    prune = r"make it with: python -m xsub stage=prune task=synth-cls model=synth-bert lang=xvso seed=0"
    with pytest.raises(ConfigError, match=prune + r" debug=tiny .*pruning\.threshold=0\.0") as err:
        train(store, "lang=xsvo", "mask.source=lang:xvso")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="pass one lang="):
        train(store, "lang=[xsvo,xsov]", "mask.source=own")
    with pytest.raises(ConfigError, match="no mask file"):
        train(store, "lang=xsvo", "mask.source=/nonexistent/mask.safetensors")


def test_weight_init_rand_trains_from_a_seeded_reinitialisation(store):
    metrics, out = train(store, "lang=xsov", "train.weight_init=rand", "mask.source=own")
    assert out != run_dir(train_cfg(store, "lang=xsov", "mask.source=own"))  # weight_init is in the identity
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in metrics["history"])
    pre = pretrained_weights(store)
    got = _weights(out)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(got[name], pre[name], atol=1e-2)  # not the pretrained weights moved a little


def test_transfer_table_of_target_language_by_mask_source(store):
    args = (
        "stage=analyze",
        "analysis=transfer",
        *TINY,
        *PRUNED,
        f"paths.artifacts={store}",
        "lang=[xsvo,xsov]",
    )
    with pytest.raises(ConfigError, match=r"python -m xsub -m stage=train .*mask.source=.*lang:xsov"):
        run_stage(make_cfg(*args, "force=true"))
    for target in ("xsvo", "xsov"):
        for source in ("lang:xsvo", "lang:xsov", "none", "random"):
            train(store, f"lang={target}", f"mask.source={source}")
    done = run_stage(make_cfg(*args))
    out = Path(store) / done["path"]
    table = pd.read_csv(out / "transfer.csv")
    assert len(table) == 2 * 4
    row = table[(table.target == "xsvo") & (table.mask_of == "xsov")]
    retrained = json.loads(
        (run_dir(train_cfg(store, "lang=xsvo", "mask.source=lang:xsov")) / "metrics.json").read_text()
    )
    assert row.value.item() == retrained["test"]["xsvo"]["accuracy"]
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert "random" in done["summary"] and "none" in done["summary"]


def test_a_retraining_run_is_keyed_by_the_mask_it_uses():
    """A mask.source run's identity contains its mask's, so a re-prune with other settings makes a
    new retraining run; a plain run (mask.source=none) does not depend on the pruning settings."""
    root = "/nonexistent"
    own = xstore.model_key(train_cfg(root, "lang=xsvo", "mask.source=own"))
    mask = xstore.mask_key(make_cfg(*PRUNE, "lang=xsvo", f"paths.artifacts={root}"), "xsvo")
    assert mask in own.upstream
    other = xstore.model_key(train_cfg(root, "lang=xsvo", "mask.source=own", "pruning.threshold=0.5"))
    assert other.fields == own.fields and other.hash != own.hash
    # a random-init retraining of the own mask reads the same mask (the finetuned run's, not a rand one)
    rand = xstore.model_key(train_cfg(root, "lang=xsvo", "mask.source=own", "train.weight_init=rand"))
    assert mask in rand.upstream and rand.hash != own.hash
    plain = xstore.model_key(train_cfg(root, "lang=xsvo"))
    assert plain == xstore.model_key(train_cfg(root, "lang=xsvo", "pruning.threshold=0.5"))
    assert plain.hash not in (own.hash, other.hash)
