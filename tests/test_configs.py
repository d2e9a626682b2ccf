"""Every option of every config group and every experiment preset composes through the CLI's path
(`compose_runs`) and validates; pruning / analysis nodes are exactly their option's dataclass; a knob of
another option, an unknown key and every out-of-range value are refused with one line."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from xsub.__main__ import STAGES, compose_runs
from xsub.config import (
    RANGES,
    SCHEMAS,
    ConfigError,
    LoggerConfig,
    ModelConfig,
    TaskConfig,
    field_names,
    task_config,
    to_container,
    validate,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
# groups whose every option is one fixed dataclass (pruning / analysis: one dataclass per option)
FIXED = {"task": TaskConfig, "model": ModelConfig, "logger": LoggerConfig}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(*overrides: str) -> DictConfig:
    (cfg,) = compose_runs(list(overrides), multirun=False)
    return cfg


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        compose_runs(list(overrides), multirun=False)
    msg = str(err.value)
    assert "\n" not in msg.strip(), msg
    return msg


def _no_enums(value) -> bool:
    if isinstance(value, dict):
        return all(_no_enums(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_enums(v) for v in value)
    return not isinstance(value, Enum)


# ---- every option composes ---------------------------------------------------------------------------


def test_groups_on_disk_are_the_tested_ones():
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    assert groups == {
        "task",
        "model",
        "pruning",
        "analysis",
        "logger",
        "debug",
        "experiment",
        "lang",
        "hydra",
    }
    for group, schemas in SCHEMAS.items():
        assert options(group) == sorted(schemas), f"conf/{group}/ and config.SCHEMAS[{group!r}] differ"


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in ("pruning", "analysis") for o in options(g)],
)
def test_typed_option_is_exactly_its_dataclass(group, option):
    node = OmegaConf.load(CONF / group / f"{option}.yaml")
    assert list(node.defaults) == [f"{option}_schema", "_self_"], f"conf/{group}/{option}.yaml defaults"
    cfg = compose(f"{group}={option}")
    schema = SCHEMAS[group][option]
    assert OmegaConf.get_type(cfg[group]) is schema
    assert list(cfg[group].keys()) == field_names(schema)
    assert OmegaConf.is_struct(cfg[group])
    # what the code writes as JSON / YAML is plain strings, not enum members
    plain = to_container(cfg[group])
    assert _no_enums(plain)
    assert json.loads(json.dumps(OmegaConf.to_container(cfg[group], resolve=True))) == plain
    assert yaml.safe_load(OmegaConf.to_yaml(cfg[group])) == plain
    # enum values still compare equal to their strings
    name_key = "method" if group == "pruning" else "name"
    assert cfg[group][name_key] == option and f"{cfg[group][name_key]}" == option


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in FIXED for o in options(g)])
def test_fixed_group_option_composes(group, option):
    extra = []
    if group == "model" and option != "synth-bert":
        extra = ["task=xnli", "lang=de"]  # pretrained multilingual models: a hub task, no download here
    cfg = compose(f"{group}={option}", *extra)
    assert list(cfg[group].keys()) == field_names(FIXED[group])
    assert OmegaConf.get_type(cfg[group]) is FIXED[group]


def test_debug_options_compose():
    for option in options("debug"):
        cfg = compose(f"debug={option}")
        assert cfg.train.epochs >= 1


def _task_languages() -> dict[str, list[str]]:
    return {t: list(task_config(t).languages) for t in options("task")}


def test_lang_options():
    """Every lang file names its own code; a sample of them composes with a task that has them."""
    by_task = _task_languages()
    for option in options("lang"):
        node = OmegaConf.load(CONF / "lang" / f"{option}.yaml")
        assert node.code == option, f"conf/lang/{option}.yaml has code {node.code}"
    sample = {"all": "synth-cls"}
    for task, langs in by_task.items():
        for lang in (langs[0], langs[-1]):
            if (CONF / "lang" / f"{lang}.yaml").is_file():
                sample.setdefault(lang, task)
    assert len(sample) >= 6
    for lang, task in sample.items():
        cfg = compose(f"task={task}", f"lang={lang}")
        assert list(cfg.lang) == [lang]


@pytest.mark.parametrize("preset", options("experiment"))
def test_experiment_preset_and_its_pipeline_steps_compose(preset):
    cfg = compose(f"experiment={preset}")
    assert cfg.experiment_name == preset
    for step in cfg.pipeline.steps:  # each step is composed on top of the run's overrides
        compose(*[str(o) for o in step])


@pytest.mark.parametrize("launcher", options("hydra/launcher"))
def test_launcher_option_composes(launcher):
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed")
    cfg = compose(f"hydra/launcher={launcher}")
    assert cfg.stage == "train"


# ---- refusals: a knob of another option, an unknown key, a value out of range -------------------------


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_knob_of_another_option_names_the_options_that_have_it(group):
    """Every option against every other option's key: on the composed config (a `+key` override is
    this), then once per option through the command line's path."""
    schemas = SCHEMAS[group]
    every = {key for schema in schemas.values() for key in field_names(schema)}
    for option, schema in schemas.items():
        cfg = compose(f"{group}={option}")
        foreign = sorted(every - set(field_names(schema)))
        for key in foreign:
            owners = [o for o, s in schemas.items() if key in field_names(s)]
            bad = cfg.copy()
            OmegaConf.update(bad, f"{group}.{key}", 1, force_add=True)  # what Hydra does for +key=1
            with pytest.raises(ConfigError) as err:
                validate(bad, tuple(STAGES))
            msg = str(err.value)
            assert msg.startswith(f"{key} is a {' / '.join(owners)} setting; choose {group}={owners[0]}"), msg
            assert msg.endswith(f"or drop {group}.{key}"), msg
        if foreign:
            key = foreign[0]
            assert refused(f"{group}={option}", f"{group}.{key}=1").startswith(f"{key} is a ")


def test_knob_refusal_examples():
    assert (
        refused("analysis=cka", "analysis.front_mask=own")
        == "front_mask is a stitch setting; choose analysis=stitch or drop analysis.front_mask"
    )
    assert (
        refused("pruning.mlp_units=true")
        == "mlp_units is a heads_mlp setting; choose pruning=heads_mlp or drop pruning.mlp_units"
    )
    # `+key=value` adds a key to a struct node in Hydra: refused the same way by validate
    assert refused("+pruning.mlp_units=true").startswith("mlp_units is a heads_mlp setting")
    assert refused("pruning=imp", "pruning.n_examples=10").startswith(
        "n_examples is a heads / heads_mlp / magnitude / wanda setting"
    )
    assert refused("analysis=overlap", "analysis.n_sentences=10").startswith(
        "n_sentences is a cka / token_overlap setting; choose analysis=cka or analysis=token_overlap"
    )


def test_unknown_key_lists_the_valid_keys_of_its_option():
    msg = refused("analysis=cka", "analysis.poolng=mean")
    assert msg == "unknown key analysis.poolng for analysis=cka; valid keys: " + " ".join(
        field_names(SCHEMAS["analysis"]["cka"])
    )
    assert refused("pruning=magnitude", "+pruning.rounds=3").startswith(
        "unknown key pruning.rounds for pruning=magnitude; valid keys: method model_seed"
    )
    assert refused("train.lrr=1").startswith("unknown key train.lrr; valid keys of train: epochs lr")
    assert refused("+train.lrr=1").startswith("unknown key train.lrr; valid keys of train: epochs lr")
    assert refused("model.arch.layers=2").startswith(
        "unknown key model.arch.layers; valid keys of model.arch:"
    )
    assert refused("nope=1").startswith("unknown key nope; valid keys of the config: stage seed")


def test_method_or_name_must_match_the_option():
    msg = refused("pruning=heads", "pruning.method=magnitude")
    assert msg == (
        "pruning.method=magnitude does not match pruning=heads; choose pruning=magnitude instead of "
        "setting pruning.method"
    )
    assert refused("analysis=cka", "analysis.name=stitch").startswith("analysis.name=stitch does not match")


def test_enum_values_are_checked_at_composition():
    assert "expected one of [first, mean]" in refused("analysis=cka", "analysis.pooling=max")
    assert "expected one of [pre, rand]" in refused("train.weight_init=scratch")
    assert "expected one of [auto, fp32, bf16]" in refused("precision=fp16")
    assert "expected one of [own, full, random]" in refused("analysis=cka", "analysis.sides=[own,half]")
    cfg = compose("analysis=stitch", "analysis.front_mask=no_heads", "analysis.pairs=all")
    assert cfg.analysis.front_mask == "no_heads" and cfg.analysis.pairs == "all"


# one out-of-range value per checked key (a new range check needs its case here)
BAD = {
    "seed": "-1",
    "train.epochs": "0",
    "train.lr": "0",
    "train.batch_size": "0",
    "train.eval_batch_size": "0",
    "train.weight_decay": "-0.1",
    "train.warmup_ratio": "1.0",
    "train.grad_clip": "-1",
    "train.patience": "-1",
    "train.max_steps": "-1",
    "train.save_steps": "[10,0]",
    "data.max_length": "1",
    "data.max_train_examples": "-1",
    "data.max_eval_examples": "-1",
    "data.num_workers": "-1",
    "data.split_half": "3",
    "data.mlm_probability": "1.0",
    "model.device_map": "everywhere",
    "model.arch.hidden_size": "0",
    "model.arch.num_hidden_layers": "0",
    "model.arch.num_attention_heads": "0",
    "model.arch.intermediate_size": "0",
    "model.arch.max_position_embeddings": "1",
    "model.arch.hidden_dropout_prob": "1.0",
    "model.arch.attention_probs_dropout_prob": "-0.1",
    "model.arch.num_key_value_heads": "-1",
    "mask.seed": "-2",
    "pruning.model_seed": "-2",
    "pruning.n_examples": "0",
    "pruning.batch_size": "0",
    "pruning.threshold": "1.5",
    "pruning.mlm_threshold": "0.9",
    "pruning.heads_per_round": "14",
    "pruning.max_rounds": "-1",
    "pruning.mlp_per_round": "0",
    "pruning.weight_fraction_per_round": "1.0",
    "pruning.weight_rounds": "0",
    "pruning.imp_prune_every": "-1",
    "pruning.imp_epochs": "-1",
    "pruning.imp_final_sparsity": "1.0",
    "pruning.imp_rate": "0",
    "pruning.sparsity": "1.0",
    "pruning.n_tokens": "0",
    "pruning.n_texts": "1",
    "pruning.top_k": "0",
    "pruning.top_rate": "0",
    "pruning.filter_rate": "1.5",
    "pruning.activation_bar_ratio": "0",
    "analysis.seeds": "[0,-1]",
    "analysis.batch_size": "0",
    "analysis.n_sentences": "0",
    "analysis.memory_gb": "-1",
    "analysis.layers": "[-1]",
    "analysis.epochs": "0",
    "analysis.lr": "0",
    "analysis.min_lr": "-1",
    "analysis.ls_tokens": "0",
    "analysis.train_examples": "0",
    "analysis.perplexity": "0",
    "analysis.n_prompts": "0",
    "analysis.prompt_tokens": "0",
    "analysis.new_tokens": "0",
    "analysis.temperature": "-1",
    "analysis.percentile": "101",
    "analysis.n_texts": "0",
    "analysis.examples": "-1",
    "interpolate.points": "1",
    "interpolate.curve_epochs": "0",
    "interpolate.curve_lr": "0",
    "interpolate.train_examples": "0",
    "report.head_rows": "-1",
}


def _option_having(key: str) -> list[str]:
    group, _, leaf = key.partition(".")
    if group not in SCHEMAS:
        return []
    return [f"{group}={next(o for o, s in SCHEMAS[group].items() if leaf in field_names(s))}"]


def test_every_range_check_has_a_case():
    assert sorted(BAD) == sorted(key for key, _, _ in RANGES)


@functools.cache
def _composed(*overrides: str) -> DictConfig:
    return compose(*overrides)


@pytest.mark.parametrize("key", sorted(BAD))
def test_out_of_range_value_is_one_line_naming_the_key(key):
    cfg = _composed(*_option_having(key)).copy()
    OmegaConf.update(cfg, key, yaml.safe_load(BAD[key]))
    with pytest.raises(ConfigError) as err:
        validate(cfg, tuple(STAGES))
    assert str(err.value).startswith(f"{key} must be "), err.value


@pytest.mark.parametrize("key", ["train.epochs", "train.lr", "train.batch_size", "pruning.heads_per_round"])
def test_out_of_range_through_the_command_line_path(key):
    assert refused(*_option_having(key), f"{key}={BAD[key]}").startswith(f"{key} must be ")


def test_range_edges_that_mean_something_are_accepted():
    compose("pruning.heads_per_round=1.0", "pruning.threshold=0.0", "pruning.max_rounds=0")
    compose("analysis=cka", "analysis.memory_gb=0.0")
    compose("pruning=imp", "pruning.imp_final_sparsity=0.0", "pruning.imp_prune_every=0")
    compose("train.warmup_ratio=0.0", "train.grad_clip=0", "train.patience=0")
    assert refused("analysis=stitch", "analysis.lr=1e-5", "analysis.min_lr=1e-4").startswith(
        "analysis.min_lr must be <= analysis.lr"
    )


def test_precision_is_a_top_level_setting():
    cfg = compose("precision=bf16")
    assert cfg.precision == "bf16" and "precision" not in cfg.train


# ---- through the command line ------------------------------------------------------------------------


def _xsub(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "xsub", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("analysis=cka", "analysis.front_mask=own"),
            "xsub: error: front_mask is a stitch setting; choose analysis=stitch or drop analysis.front_mask",
        ),
        (
            ("-m", "train.epochs=1,0"),  # a sweep: every job is checked before any starts
            "xsub: error: train.epochs must be >= 1, got 0",
        ),
    ],
)
def test_cli_refusal_is_one_stderr_line_and_exit_2(args, line):
    proc = _xsub(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == line
    assert proc.stdout == ""


def test_dataclass_fields_have_defaults_or_are_the_option_name():
    """Each option's schema is complete: composing it needs nothing but its YAML."""
    for schemas in SCHEMAS.values():
        for schema in schemas.values():
            for f in dataclasses.fields(schema):
                has_default = (
                    f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                )
                assert has_default, f"{schema.__name__}.{f.name} has no default"
