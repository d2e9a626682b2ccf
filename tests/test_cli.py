"""The command line: config groups compose, bad input fails before any work with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_cfg
from xsub.__main__ import compose_runs
from xsub.config import ConfigError, selected_languages


def xsub(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "xsub", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_language_the_task_lacks_is_one_line_naming_the_valid_ones():
    res = xsub("stage=train", "task=wikiann", "lang=xx")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "unknown language 'xx' for task wikiann" in lines[0]
    assert " de " in lines[0] and "zh-min-nan" in lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["stage=nope"], "unknown stage 'nope'"),
        (["task=nli"], "unknown task 'nli'"),
        (["task=xnli", "lang=ja"], "task xnli has no language 'ja'"),
        (["task=marc", "lang=[de,ko]"], "task marc has no language 'ko'"),
        (["seed=abc"], "could not be converted to Integer"),
        (["train.lrr=1"], "unknown key train.lrr; valid keys of train: epochs lr"),
        (["model=gpt9"], "unknown model 'gpt9'"),
        (["data.split_half=3"], "data.split_half must be 0, 1 or 2"),
    ],
)
def test_bad_input_is_a_single_line_config_error(overrides, expected):
    with pytest.raises(ConfigError) as err:
        compose_runs(overrides, multirun=False)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_sweep_is_checked_job_by_job_before_launch():
    with pytest.raises(ConfigError, match="no language 'ja'"):
        compose_runs(["task=xnli", "lang=de,ja", "seed=0,1"], multirun=True)
    cfgs = compose_runs(["task=xnli", "lang=de,fr", "seed=0,1"], multirun=True)
    assert sorted((selected_languages(c)[0], c.seed) for c in cfgs) == [
        ("de", 0),
        ("de", 1),
        ("fr", 0),
        ("fr", 1),
    ]


def test_language_selection_single_list_and_all():
    assert selected_languages(make_cfg("task=xnli", "lang=de")) == ["de"]
    assert selected_languages(make_cfg("task=paws-x", "lang=[de,ja]")) == ["de", "ja"]
    assert len(selected_languages(make_cfg("task=wikiann", "lang=all"))) == 176
    assert selected_languages(make_cfg("task=xnli", "lang=all"))[:2] == ["ar", "bg"]
    assert make_cfg("task=wikiann", "lang=zh-min-nan").lang["zh-min-nan"].script


def test_help_lists_groups_and_cfg_prints_the_config():
    res = xsub("--help")
    assert res.returncode == 0
    for group in ("task:", "model:", "lang:", "experiment:", "debug:", "logger:"):
        assert group in res.stdout
    assert "Stages: train" in res.stdout
    res = xsub("task=xnli", "lang=de", "model=xlmr-base", "--cfg", "job")
    assert res.returncode == 0
    assert "hub_id: facebook/xnli" in res.stdout and "path: FacebookAI/xlm-roberta-base" in res.stdout


def test_console_script_is_the_module():
    exe = os.path.join(os.path.dirname(sys.executable), "xsub")
    res = subprocess.run([exe, "stage=nope"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown stage 'nope'" in res.stderr


def test_artifact_root_follows_the_environment(monkeypatch, tmp_path):
    from xsub import store

    monkeypatch.setenv("XSUB_ARTIFACTS", str(tmp_path / "store"))
    assert store.root(make_cfg("task=xnli", "lang=de")) == tmp_path / "store"
    assert store.root(make_cfg("task=xnli", "lang=de", "paths.artifacts=/x/y")) == Path("/x/y")


# ---- interrupts and read-only stores (issue 13, reliability of the CLI) --------------------------------

TRAIN = ("stage=train", "task=synth-cls", "lang=all", "debug=tiny")


def _copy_store(finetuned_root: str, to: Path) -> Path:
    import shutil

    for folder in ("data", "models"):
        shutil.copytree(Path(finetuned_root) / folder, to / folder)
    return to


def test_sigterm_is_one_line_naming_the_checkpoint(finetuned_root, tmp_path):
    """Ctrl-C / SIGTERM: "interrupted; rerun the same command to resume from <checkpoint>", no traceback."""
    import signal
    import time

    root = _copy_store(finetuned_root, tmp_path / "store")
    long = ("train.epochs=500", "train.patience=500", "train.lr=1e-3")  # a new run that takes a while
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "xsub", *TRAIN, *long, f"paths.artifacts={root}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            partial = list((root / "models").rglob("*.partial"))
        assert partial and proc.poll() is None, "the run never started its resumable state"
        time.sleep(3)  # well into training
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "Traceback" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.startswith("xsub:")]
    assert lines == [f"xsub: interrupted; rerun the same command to resume from {partial[0]}"], err[-2000:]
    assert (partial[0] / "KEY.json").is_file()  # the resumable state is kept


def _read_only(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with `root` mounted read-only (a bind mount in a private mount namespace: root
    ignores file modes, so chmod cannot make a store read-only for the tests' user)."""
    import shlex
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a read-only bind mount")
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root}",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip()}")
    xsub_cmd = shlex.join([sys.executable, "-m", "xsub", *args])
    script = f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root} && exec {xsub_cmd}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=env
    )


def test_read_only_store_serves_a_finished_stage_and_names_the_path_it_cannot_write(finetuned_root, tmp_path):
    root = _copy_store(finetuned_root, tmp_path / "store")
    done = _read_only(root, *TRAIN, f"paths.artifacts={root}")  # its run log cannot go into the store
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already trained" in done.stdout + done.stderr
    # a learning rate no other test of the session store trains with: a new result, not a reuse
    new = _read_only(root, *TRAIN, "train.lr=7e-4", f"paths.artifacts={root}")
    assert new.returncode != 0 and "Traceback" not in new.stderr, new.stderr[-2000:]
    (line,) = [x for x in new.stderr.strip().splitlines() if x.startswith("xsub:")]
    assert line.startswith("xsub: error: cannot write ") and str(root) in line and "read-only" in line
