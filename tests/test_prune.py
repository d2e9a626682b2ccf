"""stage=prune: masks land in the store, really remove heads, resume to the same mask, fail clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from xsub import store, tracking
from xsub.__main__ import run_stage
from xsub.config import XsubError
from xsub.mask import Mask
from xsub.metrics import task_metric
from xsub.model import load_finetuned
from xsub.stages import prune as prune_stage
from xsub.subnetwork import masked
from xsub.trainer import score_batches

TINY = ("stage=prune", "task=synth-cls", "debug=tiny", "pruning.n_examples=48", "pruning.batch_size=16")


def _mask_dir(cfg, lang: str) -> Path:
    """A language's mask artifact, found by its identity (which contains the model run's)."""
    return store.path(cfg, store.mask_key(store.upstream(cfg, "prune", lang=lang), lang))


def _partial(directory: Path) -> Path:
    return directory.with_name(directory.name + ".partial")


def _finetuned_dir(cfg) -> Path:
    return store.path(cfg, store.pruned_model_key(cfg)) / "model"


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
    directory = _mask_dir(cfg, "xsov")
    assert result["path"] == str(directory) and (directory / "DONE.json").is_file()
    mask = Mask.load(directory / "mask.safetensors")
    assert mask.meta.lang == "xsov" and mask.meta.method == "heads" and mask.meta.rounds == 3
    assert result["heads_kept"] == mask.num_heads_kept < mask.heads.numel()
    history = json.loads((directory / "history.json").read_text())
    assert [r["round"] for r in history] == [0, 1, 2, 3]
    assert (directory / "history.safetensors").is_file()
    assert not _partial(directory).exists()  # resume state is gone once the mask is saved
    # provenance: the mask's record names the model run it was pruned from
    model_key = store.pruned_model_key(cfg)
    assert [u["id"] for u in store.read_done(directory)["upstream"]] == [model_key.id]
    assert mask.meta.extra["finetuned"] == model_key.id

    model, tok = load_finetuned(_finetuned_dir(cfg), "classification")
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
    path = _mask_dir(cfg, "xsov") / "mask.safetensors"
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
    directory = _mask_dir(resumed, "xsvo2")
    assert not (directory / "DONE.json").exists() and not (directory / "mask.safetensors").exists()
    assert (_partial(directory) / "rounds.pt").is_file()  # the rounds done so far
    rounds: list[int] = []
    with monkeypatch.context() as m:
        m.setattr(
            tracking.Tracker, "log", lambda self, metrics, step=None: rounds.append(metrics.get("round"))
        )
        run_stage(resumed)
    assert rounds == [3, 4]  # resumed after the last saved round, not from the start
    a, b = (
        Mask.load(_mask_dir(straight, "xsvo2") / "mask.safetensors"),
        Mask.load(directory / "mask.safetensors"),
    )
    assert a.equals(b) and a.meta.rounds == b.meta.rounds == 4
    history = [json.loads((_mask_dir(c, "xsvo2") / "history.json").read_text()) for c in (straight, resumed)]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in history[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in history[1]
    ]


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
        "pruning.model_langs=all",  # the multilingual run the fixture trained (one language)
        "pruning.weight_rounds=2",
        f"paths.artifacts={finetuned_root}",
    )
    res = run_stage(cfg)["xvso"]
    assert 0.0 < res["weights_kept"] < 1.0
    directory = _mask_dir(cfg, "xvso")
    for method, file in (("magnitude", "mask"), ("magnitude-random", "random"), ("magnitude-bad", "bad")):
        mask = Mask.load(directory / f"{file}.safetensors")
        assert mask.meta.method == method
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
    file = next(Path(root).glob("wandb/**/offline-run-*/run-*.wandb"))
    # wandb-core (one service process per session) writes the log asynchronously; on a loaded machine
    # the records can land a moment after finish() returns, so wait for them (at most 60 s)
    deadline = time.monotonic() + 60
    while b"mask.json" not in (run := file.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    # the offline transaction log stores these strings verbatim (protobuf); `wandb sync` uploads them
    for expected in (
        b"prune-synth-cls-xsov-s0",
        b"prune-synth-cls",
        b"mask-synth-bert-synth-cls-heads-xsov-s0",
        b"mask.safetensors",
        b"mask.json",
    ):
        assert expected in run, expected


# ---- identity: other settings are another mask, never the old one (issue 13) ---------------------


def test_another_threshold_is_another_mask(finetuned_root):
    """`pruning.threshold=0.99`, then `0.1`: the second used to return the first mask in 0.0 s."""
    base = (*TINY, "lang=xsov", "pruning.max_rounds=3", f"paths.artifacts={finetuned_root}")
    strict, loose = make_cfg(*base, "pruning.threshold=0.99"), make_cfg(*base, "pruning.threshold=0.1")
    run_stage(strict)
    result = run_stage(loose)["xsov"]
    a, b = _mask_dir(strict, "xsov"), _mask_dir(loose, "xsov")
    assert a != b and a.parent == b.parent and (a / "DONE.json").is_file() and (b / "DONE.json").is_file()
    assert result["path"] == str(b) and result["seconds"] > 0.0  # pruned, not found
    first, second = Mask.load(a / "mask.safetensors"), Mask.load(b / "mask.safetensors")
    assert (first.meta.extra["threshold"], second.meta.extra["threshold"]) == (0.99, 0.1)
    assert second.meta.rounds == 3 and second.num_heads_kept < second.heads.numel()  # really pruned
    assert store.read_done(b)["settings"]["pruning"]["threshold"] == 0.1


def test_mlp_units_after_a_whole_mlp_prune_is_a_new_mask(finetuned_root):
    """`pruning=heads_mlp pruning.mlp_units=true` after a whole-MLP prune gives an [L, I] mask."""
    base = (*TINY, "lang=xvso", "pruning=heads_mlp", "pruning.threshold=0.0", "pruning.max_rounds=2")
    whole = make_cfg(*base, f"paths.artifacts={finetuned_root}")
    units = make_cfg(*base, "pruning.mlp_units=true", f"paths.artifacts={finetuned_root}")
    run_stage(whole)
    result = run_stage(units)["xvso"]
    a, b = _mask_dir(whole, "xvso"), _mask_dir(units, "xvso")
    assert a != b
    assert Mask.load(a / "mask.safetensors").mlp.shape == (2,)
    mask = Mask.load(b / "mask.safetensors")
    assert mask.mlp.shape == (2, 64) and not bool(mask.mlp.all())
    assert result["mlp_total"] == 2 * 64


def test_prune_reads_the_model_its_own_train_settings_name(finetuned_root, tmp_path):
    """`stage=prune train.lr=5e-3`: without that run, one line (exit 2) whose command makes it, even
    though the default run is in the store; once trained, prune makes a new mask from that run."""
    root = _copy_root(finetuned_root, tmp_path / "lr")
    args = (*TINY, "lang=xsov", "pruning.threshold=0.0", "pruning.max_rounds=2", f"paths.artifacts={root}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # as tests/test_cli.py runs the command line
    res = subprocess.run(
        [sys.executable, "-m", "xsub", *args, "train.lr=5e-3"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    command = lines[0].split("make it with: ", 1)[1]
    assert command.startswith("python -m xsub stage=train task=synth-cls model=synth-bert lang=all seed=0")
    assert " train.lr=5e-3" in command and "debug=tiny" in command

    run_stage(make_cfg(*command.split(" ")[3:], f"paths.artifacts={root}"))  # the command, as printed
    default, faster = make_cfg(*args), make_cfg(*args, "train.lr=5e-3")
    run_stage(default)
    result = run_stage(faster)["xsov"]
    a, b = _mask_dir(default, "xsov"), _mask_dir(faster, "xsov")
    assert a != b and result["path"] == str(b) and result["seconds"] > 0.0
    model = store.pruned_model_key(faster)
    assert model == store.model_key(
        make_cfg("stage=train", *TINY, "train.lr=5e-3", f"paths.artifacts={root}")
    )
    assert model in store.mask_key(store.upstream(faster, "prune", lang="xsov"), "xsov").upstream
    assert [u["id"] for u in store.read_done(b)["upstream"]] == [model.id]
    assert Mask.load(b / "mask.safetensors").meta.extra["finetuned"] == model.id
    assert store.read_done(a)["upstream"][0]["id"] == store.pruned_model_key(default).id != model.id


def test_killed_prune_rerun_with_other_examples_does_not_mix_baselines(finetuned_root, tmp_path, monkeypatch):
    """A prune killed at round 2 and run again with another `pruning.n_examples` is another artifact
    started fresh: its unpruned score is that of its own examples (it used to resume the killed run's
    rounds, "0.6337 -> 0.7000"); the killed run's state stays for its own resume."""
    root = _copy_root(finetuned_root, tmp_path / "n")
    base = ("stage=prune", "task=synth-cls", "debug=tiny", "pruning.batch_size=16", "lang=xsvo2")
    base = (*base, "pruning.threshold=0.0", "pruning.max_rounds=3", f"paths.artifacts={root}")
    killed, other = make_cfg(*base, "pruning.n_examples=48"), make_cfg(*base, "pruning.n_examples=24")

    def kill_at_round_two(self, metrics, step=None):
        if metrics.get("round") == 2:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(tracking.Tracker, "log", kill_at_round_two)
        with pytest.raises(KeyboardInterrupt):
            run_stage(killed)
    rounds: list[int] = []
    with monkeypatch.context() as m:
        m.setattr(
            tracking.Tracker, "log", lambda self, metrics, step=None: rounds.append(metrics.get("round"))
        )
        result = run_stage(other)["xsvo2"]
    assert rounds == [0, 1, 2, 3]  # every round, from the unpruned model on
    a, b = _mask_dir(killed, "xsvo2"), _mask_dir(other, "xsvo2")
    assert a != b and result["path"] == str(b)
    assert (_partial(a) / "rounds.pt").is_file() and not (a / "DONE.json").exists()

    model, tok = load_finetuned(_finetuned_dir(other), "classification")
    metric = task_metric(other.task)
    own = prune_stage.pruning_batches(other, "xsvo2", tok)
    assert sum(len(batch["labels"]) for batch in own) == 24
    unpruned = score_batches(model, own, metric, torch.device("cpu"), other.precision)[metric.name]
    mask = Mask.load(b / "mask.safetensors")
    assert mask.meta.score_before == result["score_before"] == pytest.approx(unpruned, abs=1e-6)
    history = json.loads((b / "history.json").read_text())
    assert history[0]["tokens"] == sum(int(batch["attention_mask"].sum()) for batch in own)
