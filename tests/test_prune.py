"""stage=prune: masks land in the store, really remove heads, resume to the same mask, fail clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from xsub import tracking
from xsub.__main__ import run_stage
from xsub.config import XsubError
from xsub.mask import Mask
from xsub.model import load_finetuned
from xsub.stages import prune as prune_stage
from xsub.subnetwork import masked

TINY = ("stage=prune", "task=synth-cls", "debug=tiny", "pruning.n_examples=48", "pruning.batch_size=16")


def _copy_root(src: str, dst: Path) -> str:
    shutil.copytree(Path(src) / "data", dst / "data")
    shutil.copytree(Path(src) / "models", dst / "models")
    return str(dst)


def test_prune_writes_a_mask_that_really_removes_heads(finetuned_root):
    cfg = make_cfg(
        *TINY,
        "lang=xsov",
        "pruning.threshold=0.0",
        "pruning.max_rounds=3",
        f"paths.artifacts={finetuned_root}",
    )
    result = run_stage(cfg)["xsov"]
    path = prune_stage.mask_path(cfg, "xsov")
    mask = Mask.load(path)
    assert mask.meta.lang == "xsov" and mask.meta.method == "heads" and mask.meta.rounds == 3
    assert result["heads_kept"] == mask.num_heads_kept < mask.heads.numel()
    history = json.loads(path.with_name("seed0.history.json").read_text())
    assert [r["round"] for r in history] == [0, 1, 2, 3]
    assert not path.with_name("seed0.state").exists()  # resume state is gone once the mask is saved

    model, tok = load_finetuned(prune_stage.finetuned_dir(cfg) / "model", "classification")
    batch = prune_stage.pruning_batches(cfg, "xsov", tok)[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    full = model(**inputs).logits
    with masked(model, mask):
        pruned = model(**inputs).logits
    assert not torch.allclose(full, pruned)
    # the recorded score is the metric with the mask applied
    assert mask.meta.score_after == history[-1]["score"]


def test_prune_skips_a_finished_language(finetuned_root):
    cfg = make_cfg(
        *TINY,
        "lang=xsov",
        "pruning.threshold=0.0",
        "pruning.max_rounds=3",
        f"paths.artifacts={finetuned_root}",
    )
    path = prune_stage.mask_path(cfg, "xsov")
    if not path.exists():
        run_stage(cfg)
    stamp = path.stat().st_mtime_ns
    assert run_stage(cfg)["xsov"]["seconds"] == 0.0
    assert path.stat().st_mtime_ns == stamp


def test_killed_prune_resumes_to_the_identical_mask(finetuned_root, tmp_path, monkeypatch):
    args = (*TINY, "lang=xsvo2", "pruning.threshold=0.0", "pruning.max_rounds=4")
    straight = make_cfg(*args, f"paths.artifacts={_copy_root(finetuned_root, tmp_path / 'a')}")
    run_stage(straight)
    resumed = make_cfg(*args, f"paths.artifacts={_copy_root(finetuned_root, tmp_path / 'b')}")

    def kill_at_round_two(self, metrics, step=None):
        if metrics.get("round") == 2:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(tracking.Tracker, "log", kill_at_round_two)
        with pytest.raises(KeyboardInterrupt):
            run_stage(resumed)
    assert not prune_stage.mask_path(resumed, "xsvo2").exists()
    run_stage(resumed)
    a, b = (
        Mask.load(prune_stage.mask_path(straight, "xsvo2")),
        Mask.load(prune_stage.mask_path(resumed, "xsvo2")),
    )
    assert a.equals(b) and a.meta.rounds == b.meta.rounds == 4


def test_missing_finetuned_model_names_the_train_command(pretrained_root, tmp_path):
    cfg = make_cfg(*TINY, "lang=xsov", "seed=7", f"paths.artifacts={pretrained_root}")
    with pytest.raises(
        XsubError,
        match=r"make it with: python -m xsub stage=train task=synth-cls model=synth-bert lang=all seed=7",
    ):
        run_stage(cfg)


def test_heads_mlp_and_magnitude_methods(finetuned_root):
    cfg = make_cfg(
        *TINY,
        "lang=xvso",
        "pruning=heads_mlp",
        "pruning.threshold=0.0",
        "pruning.max_rounds=2",
        f"paths.artifacts={finetuned_root}",
    )
    res = run_stage(cfg)["xvso"]
    assert res["mlp_total"] == 2 and res["mlp_kept"] >= 1
    cfg = make_cfg(
        *TINY,
        "lang=xvso",
        "pruning=magnitude",
        "pruning.weight_rounds=2",
        f"paths.artifacts={finetuned_root}",
    )
    res = run_stage(cfg)["xvso"]
    assert 0.0 < res["weights_kept"] < 1.0
    for method in ("magnitude", "magnitude-random", "magnitude-bad"):
        mask = Mask.load(prune_stage.mask_path(cfg, "xvso", method))
        assert mask.fraction("weights") == pytest.approx(res["weights_kept"], abs=1e-3)


def test_imp_prunes_while_finetuning_from_pretrained(finetuned_root):
    # seed 5 has no finetuned model: IMP starts from the pretrained one and must not need it
    cfg = make_cfg(
        *TINY[:3],  # IMP trains on the whole train split: no pruning.n_examples / batch_size
        "lang=xsvo",
        "seed=5",
        "pruning=imp",
        "pruning.imp_final_sparsity=0.5",
        "train.epochs=2",
        f"paths.artifacts={finetuned_root}",
    )
    res = run_stage(cfg)["xsvo"]
    assert res["weights_kept"] == pytest.approx(0.5, abs=0.01)


def test_wandb_offline_run_records_the_mask_artifact_name_and_group(finetuned_root, tmp_path):
    root = _copy_root(finetuned_root, tmp_path / "w")
    cfg = make_cfg(*TINY, "lang=xsov", "pruning.max_rounds=1", "logger=wandb", f"paths.artifacts={root}")
    run_stage(cfg)
    run = next(Path(root).glob("wandb/**/offline-run-*/run-*.wandb")).read_bytes()
    # the offline transaction log stores these strings verbatim (protobuf); `wandb sync` uploads them
    for expected in (
        b"prune-synth-cls-xsov-s0",
        b"prune-synth-cls",
        b"mask-synth-bert-synth-cls-heads-xsov-s0",
        b"seed0.safetensors",
        b"seed0.json",
    ):
        assert expected in run, expected
