"""Shared test setup: offline hub, few threads, and a per-session artifact store."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from xsub.config import register_configs, validate

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> str:
    """One artifact store for the whole session, so the synthetic data is generated once."""
    return str(tmp_path_factory.mktemp("artifacts"))


CONF = str(Path(__file__).resolve().parents[1] / "conf")


def make_cfg(*overrides: str) -> DictConfig:
    """Compose the config exactly as the command line would (validated like `python -m xsub`)."""
    from xsub.__main__ import STAGES

    register_configs(tuple(STAGES))
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    validate(cfg, tuple(STAGES))
    return cfg


def _train(root: str, task: str) -> str:
    from xsub.__main__ import run_stage

    run_stage(make_cfg("stage=train", f"task={task}", "lang=all", "debug=tiny", f"paths.artifacts={root}"))
    return root


@pytest.fixture(scope="session")
def pretrained_root(artifact_root) -> str:
    """Artifact store holding the MLM-pretrained embedded model (debug sizes), made once per session."""
    return _train(artifact_root, "synth-mlm")


@pytest.fixture(scope="session")
def finetuned_root(pretrained_root) -> str:
    """...plus the embedded model finetuned on synth-cls (debug sizes)."""
    return _train(pretrained_root, "synth-cls")
