"""`model.device_map` (accelerate's big-model placement), checked on this CPU-only machine by
offloading weights to disk: accelerate then brings every layer in for each forward, which exercises
the same hooks that carry activations between GPUs.

What a user relies on: a model spread out this way gives the same logits under a head mask, the same
head and MLP-unit importances and the same LAPE counts as the model held whole; the prune stage gives
the same mask under the same identity (placement is not part of what a result is); what needs the
weights themselves (weight masks, magnitude, Wanda, training) is refused in one line, as is a
placement for what holds two models on one device, or an unknown strategy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import make_cfg
from test_decoders import batch, tiny
from xsub import store
from xsub.__main__ import run_stage
from xsub.config import ConfigError
from xsub.mask import Mask
from xsub.metrics import TaskMetric
from xsub.model import attach_gates, load_finetuned
from xsub.model.placement import input_device, load_kwargs, offloaded
from xsub.neurons import collect
from xsub.pruning.importance import importance
from xsub.subnetwork import apply_weight_mask, masked

DISK = OmegaConf.create({"device_map": "auto", "max_memory": {"cpu": 10_000}})  # ~nothing stays in memory


def _whole_and_offloaded(model_type: str, tmp_path: Path):
    """The same weights twice: held whole, and loaded with every layer offloaded to disk."""
    whole = tiny(model_type)
    whole.save_pretrained(tmp_path / "model")
    spread, _ = load_finetuned(tmp_path / "model", "clm", placement=load_kwargs(DISK, tmp_path))
    if whole.config._attn_implementation != spread.config._attn_implementation:  # BLOOM: eager only
        pytest.skip("attention implementations differ")
    return whole, spread


@pytest.fixture
def no_tokenizer(monkeypatch):
    """The tiny random models have no tokenizer; the placement under test is the weights'."""
    monkeypatch.setattr("xsub.model.load._load_tokenizer", lambda directory: None)


@pytest.mark.usefixtures("no_tokenizer")
@pytest.mark.parametrize("model_type", ["llama", "gpt2", "bloom"])
def test_offloaded_model_equals_the_whole_one(model_type: str, tmp_path: Path) -> None:
    whole, spread = _whole_and_offloaded(model_type, tmp_path)
    assert offloaded(spread) and not offloaded(whole)
    assert input_device(spread) == torch.device("cpu")
    b = batch()

    def scores(model):
        with attach_gates(model, units=True) as gates:
            return importance(model, gates, [b, b], TaskMetric("clm"), "cpu", parts=("head", "mlp_units"))

    a, s = scores(whole), scores(spread)
    for part in ("head", "mlp_units"):
        assert torch.allclose(a.parts()[part], s.parts()[part], rtol=1e-5, atol=1e-7), part
    assert all(p.grad is None for p in spread.parameters())
    counts = collect(whole, [b], torch.device("cpu")), collect(spread, [b], torch.device("cpu"))
    assert torch.equal(counts[0].over_zero, counts[1].over_zero)

    inputs = {k: v for k, v in b.items() if k != "labels"}
    heads = torch.ones(whole.config.num_hidden_layers, 4, dtype=torch.bool)
    heads[0, 1] = heads[1, 3] = False
    mask = Mask(heads=heads)
    with torch.no_grad(), masked(whole, mask), masked(spread, mask):
        assert torch.allclose(whole(**inputs).logits, spread(**inputs).logits, atol=1e-6)


@pytest.mark.usefixtures("no_tokenizer")
def test_what_needs_the_weights_is_refused_in_one_line(tmp_path: Path) -> None:
    from xsub.pruning.magnitude import magnitude_prune
    from xsub.pruning.wanda import wanda_prune
    from xsub.trainer import fit

    _, spread = _whole_and_offloaded("llama", tmp_path)
    some = {"model.layers.0.mlp.down_proj.weight": torch.zeros(32, 48, dtype=torch.bool)}
    with pytest.raises(ConfigError, match=r"^a weight mask .* drop model\.device_map$"):
        apply_weight_mask(spread, some)
    with pytest.raises(ConfigError, match=r"^magnitude pruning reads or changes the weights"):
        magnitude_prune(spread, lambda m: 1.0, OmegaConf.create({}))
    with pytest.raises(ConfigError, match=r"^Wanda reads"):
        wanda_prune(spread, [], OmegaConf.create({}), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^training reads"):
        fit(spread, *[None] * 6, seed=0)


BASE = ["task=synth-clm", "model=synth-gpt", "debug=tiny"]


def test_placement_settings_are_checked_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"^model\.device_map must be auto, balanced"):
        make_cfg("stage=prune", *BASE, "lang=xsvo", "model.device_map=everywhere")
    with pytest.raises(ConfigError, match=r"set model\.device_map=auto too$"):
        make_cfg("stage=prune", *BASE, "lang=xsvo", "model.max_memory={cpu:1GiB}")
    with pytest.raises(ConfigError, match=r"^stage=interpolate holds two models"):
        make_cfg("stage=interpolate", *BASE, "lang=xsvo", "model.device_map=auto")
    with pytest.raises(ConfigError, match=r"^analysis=stitch holds two models"):
        make_cfg("stage=analyze", "analysis=stitch", *BASE, "lang=all", "model.device_map=auto")
    make_cfg("stage=analyze", "analysis=crosseval", *BASE, "lang=all", "model.device_map=auto")


def test_training_an_offloaded_model_is_refused(tmp_path: Path) -> None:
    cfg = make_cfg(
        "stage=train", *BASE, "lang=all", f"paths.artifacts={tmp_path}", "model.device_map=auto",
        "model.max_memory={cpu:10000}",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"^training reads or changes the weights"):
        run_stage(cfg)
    assert not store.find(tmp_path, "model")


def test_prune_stage_on_an_offloaded_model_gives_the_same_mask(tmp_path: Path, caplog) -> None:
    root = str(tmp_path)
    run_stage(make_cfg("stage=train", *BASE, "lang=all", f"paths.artifacts={root}"))
    plain = make_cfg("stage=prune", *BASE, "lang=xsvo", f"paths.artifacts={root}")
    placed = make_cfg(
        "stage=prune", *BASE, "lang=xsvo", f"paths.artifacts={root}", "model.device_map=auto",
        "model.max_memory={cpu:10000}", "force=true",
    )  # fmt: skip
    assert store.mask_key(plain, "xsvo").id == store.mask_key(placed, "xsvo").id
    run_stage(plain)
    (entry,) = store.find(Path(root), "mask", method="heads")
    before = Mask.load(entry.path / "mask.safetensors")
    with caplog.at_level(logging.INFO, logger="xsub.model.load"):
        run_stage(placed)  # force: recomputed in place under the same identity
    assert "module(s) on disk" in caplog.text
    after = Mask.load(entry.path / "mask.safetensors")
    assert torch.equal(before.heads, after.heads) and before.meta.rounds == after.meta.rounds
    assert before.meta.score_after == pytest.approx(after.meta.score_after, rel=1e-5)
