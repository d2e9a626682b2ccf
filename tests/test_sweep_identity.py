"""A sweep over settings other than task x language x seed gives one result per value (the CLI, as a
user runs it): two learning rates are two model runs, two thresholds two masks each, two poolings two
analyses, and the report tells them apart by their settings. A rerun of the sweep trains nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from xsub import store

ROOT = Path(__file__).resolve().parents[1]
BASE = ["task=synth-cls", "debug=tiny", "train.epochs=1"]


def xsub(root: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "xsub",
            *args,
            f"paths.artifacts={root}",
            "hydra.sweep.dir=" + f"{root}/sweep",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
    )


@pytest.mark.slow
def test_a_sweep_over_settings_gives_one_result_per_value(pretrained_root):
    root = pretrained_root  # the session store: every result has its own identity, nothing collides
    trained = xsub(root, "-m", "stage=train", *BASE, "train.lr=1e-3,5e-3")
    assert trained.returncode == 0, trained.stderr[-2000:]
    runs = [
        e
        for e in store.find(Path(root), "model", task="synth-cls")
        if e.settings["train"]["lr"] in (1e-3, 5e-3)
    ]
    assert sorted(e.settings["train"]["lr"] for e in runs) == [1e-3, 5e-3]
    weights = [(e.path / "model" / "model.safetensors").read_bytes() for e in runs]
    assert weights[0] != weights[1]

    start = time.perf_counter()
    again = xsub(root, "-m", "stage=train", *BASE, "train.lr=1e-3,5e-3")
    said = again.stdout + again.stderr
    assert again.returncode == 0 and said.count("already trained: ") == 2, said[-2000:]
    assert time.perf_counter() - start < 120  # two skips, no training (generous for a loaded machine)

    missing = xsub(root, "stage=prune", *BASE, "lang=xsvo", "train.lr=7e-3")
    assert missing.returncode == 2
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith("xsub: error: no finetuned") and "train.lr=7e-3" in line

    prune = ["stage=prune", *BASE, "lang=xsvo,xsov", "pruning.n_examples=64", "pruning.max_rounds=2"]
    pruned = xsub(root, "-m", *prune, "train.lr=1e-3,5e-3", "pruning.threshold=0.5,0.99")
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    masks = store.find(Path(root), "mask", task="synth-cls")
    ours = [
        m
        for m in masks
        # the session store holds masks of other methods too, whose settings name neither option
        if m.settings["pruning"].get("n_examples") == 64 and m.settings["pruning"].get("max_rounds") == 2
    ]
    assert len({m.record["id"] for m in ours}) == 8  # 2 lr x 2 thresholds x 2 languages

    report = xsub(root, "stage=report", "model=synth-bert", "report.name=sweep", "report.tasks=[synth-cls]")
    assert report.returncode == 0, report.stderr[-2000:]
    pruning = pd.read_csv(Path(root) / "reports" / "synth-bert" / "sweep" / "pruning.csv")
    for name, value in (("pruning.n_examples", 64), ("pruning.max_rounds", 2)):
        if name in pruning:  # a column only where the collected masks differ in it
            pruning = pruning[pruning[name] == value]
    assert {"train.lr", "pruning.threshold"} <= set(pruning.columns)
    per_lang = pruning.groupby("lang")[["train.lr", "pruning.threshold"]].apply(
        lambda f: len(f.drop_duplicates())
    )
    assert (per_lang == 4).all()

    analyze = ["stage=analyze", *BASE, "lang=[xsvo,xsov]", "pruning.n_examples=64", "pruning.max_rounds=2"]
    analyze.append("pruning.threshold=0.5")  # the masks' own settings name them
    cka = xsub(
        root,
        "-m",
        *analyze,
        "train.lr=1e-3",
        "analysis=cka",
        "analysis.n_sentences=32",
        "analysis.pooling=first,mean",
    )
    assert cka.returncode == 0, cka.stderr[-2000:]
    poolings = [e.settings["analysis"]["pooling"] for e in store.find(Path(root), "analysis", name="cka")]
    assert {"first", "mean"} <= set(poolings)
