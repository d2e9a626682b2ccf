"""The store's identities, commands, locks and writes (no model is trained here: keys come from configs)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_cfg
from xsub import store
from xsub.config import XsubError

BASE = ("task=synth-cls", "debug=tiny")


def train_key(*overrides: str) -> store.Key:
    return store.model_key(make_cfg("stage=train", *BASE, *overrides))


def mask_key(*overrides: str, lang: str = "xsvo") -> store.Key:
    cfg = make_cfg("stage=prune", *BASE, f"lang={lang}", *overrides)
    return store.mask_key(cfg, lang)


# ---- identity: every setting that changes a result is in it; the listed others are not -------------


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=5e-3",
        "train.epochs=3",
        "data.path=/elsewhere",
        "data.max_length=16",
        "model.arch.num_hidden_layers=4",
        "seed=1",
        "lang=xsvo",
        "precision=bf16",
        "train.weight_init=rand",
    ],
)
def test_a_setting_that_shapes_the_weights_is_a_new_model_run(override):
    assert train_key(override).id != train_key().id


@pytest.mark.parametrize(
    "override", ["logger=wandb", "paths.artifacts=/tmp/other", "train.save_steps=[3]", "train.progress=true"]
)
def test_settings_that_cannot_change_a_result_are_not_in_the_identity(override):
    assert train_key(override).hash == train_key().hash


def test_a_two_layer_checkpoint_is_not_the_four_layer_model():
    tiny, full = train_key(), store.model_key(make_cfg("stage=train", "task=synth-cls"))
    assert tiny.upstream[0].id != full.upstream[0].id  # the pretraining run they start from differs


def test_the_pretraining_keeps_its_own_hyperparameters():
    """A finetuning lr does not ask for a pretraining run with that lr (it was pretrained once)."""
    assert train_key("train.lr=5e-3").upstream[0].id == train_key().upstream[0].id
    assert (
        train_key("train.lr=5e-3").upstream[0].id
        == store.model_key(make_cfg("stage=train", "task=synth-mlm", "debug=tiny")).id
    )


@pytest.mark.parametrize(
    "override",
    [
        "pruning.threshold=0.1",
        "pruning.n_examples=200",
        "pruning=heads_mlp",
        "seed=2",
        "train.lr=5e-3",  # a mask of another model run
        "data.path=/elsewhere",
    ],
)
def test_a_mask_identity_covers_its_settings_and_its_model_run(override):
    assert mask_key(override).id != mask_key().id


def test_whole_mlp_and_unit_masks_are_two_masks():
    assert mask_key("pruning=heads_mlp", "pruning.mlp_units=true").id != mask_key("pruning=heads_mlp").id


def test_a_mask_contains_the_identity_of_the_run_it_was_pruned_from():
    mask = mask_key("train.lr=5e-3")
    assert mask.upstream == (train_key("train.lr=5e-3"),)
    assert mask_key("pruning.model_seed=3", "seed=1").upstream[0].field("seed") == "seed3"


@settings(max_examples=25, deadline=None)
@given(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0))
def test_identity_is_a_function_of_the_settings(a, b):
    ka, kb = store.data_key("x", {"lr": a}), store.data_key("x", {"lr": b})
    assert (ka.hash == kb.hash) == (a == b)


# ---- the command that makes an artifact -------------------------------------------------------------


def test_missing_upstream_command_carries_the_non_default_settings():
    mask = mask_key("train.lr=5e-3", "pruning.threshold=0.8")
    cmd = store.command(mask.upstream[0])
    assert cmd.startswith("python -m xsub stage=train task=synth-cls model=synth-bert lang=all seed=0")
    assert "train.lr=5e-3" in cmd and "debug=tiny" in cmd and "pruning" not in cmd
    assert "pruning.threshold=0.8" in store.command(mask)
    assert store.command(mask, force=True).endswith("force=true")


def test_the_printed_command_composes_the_same_identity():
    """The command of a key, run through the CLI's composition, gives that very key."""
    from xsub.__main__ import compose_runs

    key = mask_key("train.lr=5e-3", "pruning.threshold=0.8", "pruning=heads_mlp")
    for k in (key, *key.upstream):
        args = [a.strip("'") for a in store.command(k).split(" ")[3:]]
        (cfg,) = compose_runs(args, multirun=False)
        again = store.model_key(cfg) if k.kind == "model" else store.mask_key(cfg, "xsvo")
        assert again.id == k.id


def test_sweep_command_names_each_value_once():
    keys = [mask_key(lang=lang) for lang in ("xsvo", "xsov")]
    cmd = store.sweep_command(keys)
    assert cmd.startswith("python -m xsub -m stage=prune") and "lang=xsvo,xsov" in cmd


# ---- writes: whole or nothing, never overwritten by another identity ---------------------------------


def test_commit_is_atomic_and_records_identity_and_upstream(tmp_path):
    up = store.data_key("up", {"a": 1})
    with store.claim(tmp_path, up) as job, job.commit() as out:
        (out / "x.txt").write_text("up")
    key = store.Key("data", (("name", "down"),), "{}", (up,))
    with pytest.raises(RuntimeError), store.claim(tmp_path, key) as job, job.commit() as out:
        (out / "figure.png").write_text("half")
        raise RuntimeError("killed between the figure and DONE")
    assert not store.path(tmp_path, key).exists()
    assert not [p for p in store.path(tmp_path, key).parent.iterdir() if p.name.startswith(".")]
    with store.claim(tmp_path, key) as job, job.commit() as out:
        (out / "figure.png").write_text("whole")
    done = store.read_done(store.path(tmp_path, key))
    assert done["id"] == key.id and done["upstream"][0]["id"] == up.id
    assert done["upstream"][0]["run_id"] == store.read_done(store.path(tmp_path, up))["run_id"]


def test_a_rewritten_input_makes_its_consumer_stale(tmp_path):
    up = store.data_key("up", {"a": 1})
    down = store.Key("data", (("name", "down"),), "{}", (up,))
    for key in (up, down):
        with store.claim(tmp_path, key) as job, job.commit():
            pass
    with store.claim(tmp_path, down) as job:
        assert job.done is not None  # nothing changed: reuse
    with store.claim(tmp_path, up, force=True) as job, job.commit():
        pass  # force=true: the same identity made again, a new run id
    with store.claim(tmp_path, down) as job:
        assert job.done is None


def test_a_reader_waits_while_the_input_is_being_rewritten(tmp_path, caplog):
    key = store.data_key("model", {"a": 1})
    with store.claim(tmp_path, key) as job, job.commit() as out:
        (out / "weights").write_text("old")
    seen: list[str] = []
    writing = threading.Event()

    def rewrite() -> None:
        with store.claim(tmp_path, key, force=True) as job, job.commit() as out:
            writing.set()
            time.sleep(0.5)
            (out / "weights").write_text("new")

    writer = threading.Thread(target=rewrite)
    writer.start()
    writing.wait()
    with store.reading(tmp_path, key) as directory:
        seen.append((directory / "weights").read_text())
    writer.join()
    assert seen == ["new"]
    assert "another job is writing it" in caplog.text


def test_a_missing_input_is_one_line_with_the_command():
    key = mask_key("train.lr=5e-3").upstream[0]
    with (
        pytest.raises(store.Missing) as err,
        store.reading(make_cfg(*BASE, "paths.artifacts=/nonexistent"), key),
    ):
        pass
    line = str(err.value)
    assert "\n" not in line and "make it with: python -m xsub stage=train" in line and "train.lr=5e-3" in line


def test_a_corrupt_record_names_the_command_with_force(tmp_path):
    cfg = make_cfg(*BASE, f"paths.artifacts={tmp_path}")
    key = store.model_key(make_cfg("stage=train", *BASE, f"paths.artifacts={tmp_path}"))
    target = store.path(cfg, key)
    target.mkdir(parents=True)
    (target / store.DONE).write_text("{ not json")
    with pytest.raises(store.Missing, match=r"corrupt.*force=true"), store.reading(cfg, key):
        pass


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    key = store.data_key("big", {"a": 1})

    def full(*_a, **_k):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    with (
        pytest.raises(
            XsubError, match=r"no space left on device writing .*; free space or move paths.artifacts"
        ),
        store.claim(tmp_path, key) as job,
        job.commit() as out,
    ):
        (out / "a").write_text("1")
        monkeypatch.setattr(store, "_swap_in", full)
    assert not store.path(tmp_path, key).exists()


# ---- resumable state ---------------------------------------------------------------------------------


def test_checkpoint_of_other_settings_is_never_resumed(tmp_path):
    file = tmp_path / "rounds.pt"
    store.Checkpoint(file, "mask:a/1").save({"round": 3, "t": torch.ones(2)})
    assert store.Checkpoint(file, "mask:a/1").load()["round"] == 3
    assert store.Checkpoint(file, "mask:a/2").load() is None  # e.g. another pruning.n_examples
    file.write_bytes(b"torn")
    assert store.Checkpoint(file, "mask:a/1").load() is None


# ---- walking the store --------------------------------------------------------------------------------


def test_find_lists_done_partial_and_filters(tmp_path):
    a, b = store.data_key("syn", {"n": 1}), store.data_key("syn", {"n": 2})
    with store.claim(tmp_path, a) as job, job.commit():
        pass
    with store.claim(tmp_path, b) as job:
        job.start()  # failed before saving any state: nothing to resume, no entry
    assert {e.record["hash"]: e.status for e in store.find(tmp_path, "data")} == {a.hash: "done"}
    with store.claim(tmp_path, b) as job:
        store.Checkpoint(job.start() / "rounds.pt", b.id).save({"round": 1})  # killed after a round
    status = {e.record["hash"]: e.status for e in store.find(tmp_path, "data")}
    assert status == {a.hash: "done", b.hash: "partial"}
    assert json.loads((store.path(tmp_path, b).with_name(b.hash + ".partial") / "KEY.json").read_text())


def test_locks_live_in_one_hidden_folder(tmp_path):
    key = store.data_key("syn", {"n": 1})
    with store.claim(tmp_path, key) as job, job.commit():
        pass
    assert not list(Path(tmp_path).rglob("data/**/*.lock"))
    assert list((tmp_path / ".locks").glob("*.lock"))
