"""Structured configs: the schema every YAML file in conf/ is validated against.

Each dataclass is registered in Hydra's ConfigStore as the base of its group, so a typo'd key or a
wrong type fails at composition, before any work. Cross-field rules Hydra cannot express (a language
the task does not have, a stage that does not exist) live in `validate`, which raises ConfigError with
one line naming the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

TASK_KINDS = ("classification", "ner", "mlm")
MODEL_SOURCES = ("hub", "local", "embedded", "package")
PRUNING_METHODS = ("heads", "heads_mlp", "magnitude", "imp")
ANALYSES = ("overlap", "crosseval", "cka", "stitch", "importance_tsne", "token_overlap", "transfer")
CKA_SIDES = ("own", "full", "random")


class XsubError(ValueError):
    """An error the user can fix; the CLI prints its message as one line (no traceback)."""


class ConfigError(XsubError):
    """Invalid configuration or missing input; the message is one line that names the fix."""


@dataclass
class LangConfig:
    code: str = MISSING
    name: str = ""
    script: str = ""  # ISO 15924, e.g. Latn, Hani, Arab


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = MISSING  # classification | ner | mlm
    source: str = MISSING  # loader family: xnli | paws-x | marc | wikiann | wikipedia | synthetic
    hub_id: str = ""  # dataset id on the hub; ignored when data.path is set
    hub_subset: str = "{lang}"  # hub config name, formatted with the language code
    num_labels: int = 0
    label_names: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    metric: str = MISSING  # accuracy | span_f1 | perplexity
    train_split: str = "train"
    dev_split: str = "validation"
    test_split: str = "test"
    text_fields: list[str] = field(default_factory=list)  # informational: input columns of the source
    builtin: str = ""  # embedded default: folder of the project's generated data (cls | ner | mlm)


@dataclass
class ArchConfig:
    """Shape of a model built from config (embedded default); ignored for pretrained checkpoints."""

    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


@dataclass
class ModelConfig:
    name: str = MISSING  # id used in artifact paths
    source: str = MISSING  # hub | local | embedded | package
    path: str = ""  # hub id, local directory, or python package (source=package)
    family: str = "bert"  # bert | roberta | t5-encoder: which modules the gates hook
    pretrain_task: str = ""  # embedded: the task whose train-stage output is this model's pretrained weights
    arch: ArchConfig = field(default_factory=ArchConfig)
    attn_implementation: str = "sdpa"


@dataclass
class DataConfig:
    path: str = ""  # local directory in the source's own schema instead of the hub
    max_length: int = 128
    max_train_examples: int = 0  # 0 = all
    max_eval_examples: int = 0
    mlm_probability: float = 0.15
    split_half: int = 0  # 0 = whole train split; 1 or 2 = that half (for interpolation endpoints)
    num_workers: int = 0


@dataclass
class TrainConfig:
    epochs: int = 2
    lr: float = 2e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    grad_clip: float = 1.0
    patience: int = 2  # early stopping: epochs without dev improvement
    max_steps: int = 0  # 0 = no cap
    device: str = "auto"
    progress: bool = True
    weight_init: str = "pre"  # pre (the model's pretrained weights) | rand (re-initialised from the seed)
    save_steps: list[int] = field(default_factory=list)  # also keep the model after these optimiser steps


@dataclass
class PathsConfig:
    artifacts: str = "${oc.env:XSUB_ARTIFACTS,artifacts}"


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "${oc.env:WANDB_PROJECT,xsub}"
    entity: str = "${oc.env:WANDB_ENTITY,''}"
    mode: str = "offline"
    group: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class PruningConfig:
    """How stage=prune finds a subnetwork (see ALGORITHMS.md: structured, magnitude, IMP)."""

    method: str = "heads"  # heads | heads_mlp | magnitude | imp
    n_examples: int = 5000  # pruning data: examples of the one language, sampled by seed
    batch_size: int = 32
    heads_per_round: float = 0.1  # fraction of ALL heads masked per round (14 of 144)
    mlp_per_round: int = 1  # heads_mlp: MLP layers masked per round
    threshold: float = 0.9  # stop when score < threshold * unpruned (higher-is-better metrics)
    mlm_threshold: float = 1.1  # MLM: stop when perplexity > mlm_threshold * unpruned
    max_rounds: int = 0  # 0 = until the threshold
    normalize_tokens: bool = True  # importance / number of tokens
    normalize_layers: bool = True  # per layer, divide by the layer's L2 norm
    normalize_global: bool = True  # min-max to [0, 1] over all heads
    cumulative_grad: bool = False  # reproduce the seeds' bug: gate gradients never zeroed
    mlp_units: bool = False  # heads_mlp: gate intermediate units [L, I] instead of whole MLPs [L]
    weight_fraction_per_round: float = 0.1  # magnitude: share of the remaining weights per round
    weight_rounds: int = 10  # magnitude: at most this many rounds
    imp_prune_every: int = 0  # imp: steps between pruning events (0 = once per epoch)
    imp_final_sparsity: float = 0.9  # imp: sparsity reached at the end of training
    imp_weight_init: str = "pre"  # imp: pre (pretrained) | rand (re-initialised, seeded)
    model_seed: int = -1  # seed of the finetuned model to prune; -1 = the run's seed


@dataclass
class MaskConfig:
    """stage=train with a fixed mask: retrain a subnetwork (seeds 002, 004). Heads/MLPs are gated off and
    masked weights stay exactly zero throughout training."""

    source: str = "none"  # none | own | lang:<code> | task:<name> | random | bad | inverted | <mask file>
    pruning: str = ""  # pruning method of the stored mask; "" = the run's pruning group
    seed: int = -1  # seed of the stored mask; -1 = the run's seed


@dataclass
class PipelineConfig:
    """Steps of stage=pipeline: each a list of overrides composed on top of the run's own overrides."""

    steps: list[list[str]] = field(default_factory=list)


@dataclass
class AnalysisConfig:
    """What stage=analyze compares (ALGORITHMS.md "Analyses"); inputs come from the artifact store by
    (model, task, lang, pruning, seed). Each conf/analysis/<name>.yaml sets `name` and its defaults."""

    name: str = "overlap"  # overlap | crosseval | cka | stitch | importance_tsne | token_overlap
    tasks: list[str] = field(default_factory=list)  # tasks compared; [] = the run's task
    seeds: list[int] = field(default_factory=list)  # seeds (mean ± std, seed-to-seed); [] = the run's seed
    split: str = "dev"  # crosseval / stitch: the split evaluated (dev | test)
    random_baseline: bool = True  # crosseval: also a random mask of the same size per language
    sides: list[str] = field(default_factory=lambda: ["own", "full"])  # cka: own mask | full | random
    pooling: str = "first"  # cka: first token (seed 000) | mean over the attention mask (seed 001)
    parallel_source: str = "auto"  # auto | synthetic | xnli | paws-x | flores | <dir of <lang>.parquet>
    parallel_split: str = "test"
    parallel_path: str = ""  # local files in the source's hub layout instead of the hub
    n_sentences: int = 1000  # cka / token_overlap: parallel sentences (seed 000: 8192; seed 001: 1000-5000)
    batch_size: int = 64
    memory_gb: float = 4.0  # cka: accumulator memory per pass over the sentences
    layers: list[int] = field(default_factory=list)  # stitch: layers 0..L (0 = embeddings); [] = all
    front_mask: str = "own"  # stitch: own | shuffled (across layers) | no_heads
    pairs: str = "self"  # stitch: self (A->A) | all (every ordered pair A->B)
    end_task: str = ""  # stitch: the end model's task; "" = the run's task
    epochs: int = 10  # stitch: Adam lr -> min_lr (cosine) on the end model's task loss
    lr: float = 3e-4
    min_lr: float = 1e-5
    ls_tokens: int = 50000  # stitch: tokens for the least-squares initialisation
    train_examples: int = 2000  # stitch: training examples of the end language
    baselines: list[str] = field(default_factory=lambda: ["random"])  # transfer: + none, bad, inverted
    perplexity: float = 10.0  # importance_tsne
    reference: str = "en"  # token_overlap: reference language; if the task lacks it, its first language


@dataclass
class InterpolateConfig:
    """stage=interpolate (seed 003): θ(x) = (1−x)θ1 + xθ2 between two train-stage checkpoints."""

    a: list[str] = field(default_factory=lambda: ["seed=0"])  # overrides selecting endpoint 1's train run
    b: list[str] = field(default_factory=lambda: ["seed=1"])  # e.g. [data.split_half=2], [mask.source=own]
    a_path: str = ""  # or a train-stage run directory (or save_pretrained dir) given directly
    b_path: str = ""
    points: int = 26
    split: str = "dev"
    mask_policy: str = "union"  # masked endpoints: union | intersection of their masks along the path
    curve: bool = False  # also a quadratic Bezier curve with one bend trained between the ends
    curve_epochs: int = 1
    curve_lr: float = 2e-5
    train_examples: int = 2000  # bend training examples per language


@dataclass
class ReportConfig:
    """stage=report: what to collect (filters: [] = everything found) and how much to show."""

    sweep: str = ""  # a multirun folder: report exactly its jobs' (task, lang, seed, pruning)
    tasks: list[str] = field(default_factory=list)  # [] = every task found
    seeds: list[int] = field(default_factory=list)  # [] = every seed found
    langs: list[str] = field(default_factory=list)  # [] = every language found
    methods: list[str] = field(default_factory=list)  # pruning methods; [] = every method found
    name: str = ""  # report folder name; "" = the sweep folder's name, or "store"
    head_rows: int = 8  # rows of each table shown on the page
    html: bool = True  # also write report.html next to report.md


@dataclass
class XsubConfig:
    stage: str = "train"
    seed: int = 0
    force: bool = False  # redo a stage whose artifact already exists
    precision: str = "auto"  # auto (bf16 on GPU and on CPUs with native bf16: xsub.precision) | fp32 | bf16
    task: TaskConfig = MISSING
    lang: dict[str, LangConfig] = field(default_factory=dict)
    model: ModelConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    experiment_name: str = ""


def task_languages(source: str) -> list[str]:
    """Language codes a data source has (one table in xsub.languages; the synthetic ones are generated)."""
    if source == "synthetic":
        from xsub.data.synthetic import LANGUAGES as SYNTHETIC

        return list(SYNTHETIC)
    from xsub import languages

    return list(getattr(languages, source.upper().replace("-", "")))


def conf_dir() -> Path:
    """conf/ of the checkout (editable install) or $XSUB_CONF."""
    env = os.environ.get("XSUB_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"no conf/config.yaml at {path}; install with `pip install -e .` or set XSUB_CONF")
    return path


def group_option(group: str, name: str) -> DictConfig:
    """One option of a config group as its node (e.g. another task for a cross-task analysis)."""
    path = conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        options = " ".join(sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")))
        raise ConfigError(f"unknown {group} '{name}'; choose one of: {options}")
    node = OmegaConf.load(path)
    return node.get(group, node)  # `# @package _global_` files nest their content under the group


def task_config(name: str) -> DictConfig:
    """The validated TaskConfig of task `name` from conf/task/."""
    return OmegaConf.merge(OmegaConf.structured(TaskConfig), group_option("task", name))


def register_configs(stages: tuple[str, ...] = ()) -> None:
    """Register the schema and the resolvers the YAML files use; idempotent."""
    ConfigStore.instance().store(name="xsub_schema", node=XsubConfig)
    if not OmegaConf.has_resolver("xsub_langs"):
        OmegaConf.register_new_resolver("xsub_langs", task_languages)
    if not OmegaConf.has_resolver("xsub_stages"):
        OmegaConf.register_new_resolver("xsub_stages", lambda: ", ".join(stages))


def selected_languages(cfg: DictConfig | Any) -> list[str]:
    """Languages a run covers: the `lang` group selections, with `all` expanded to the task's list."""
    codes = list(cfg.lang.keys())
    if "all" in codes:
        return list(cfg.task.languages)
    return codes


def validate(cfg: DictConfig, stages: tuple[str, ...]) -> None:
    """Cross-field checks that must pass before any work starts."""
    if cfg.stage not in stages:
        raise ConfigError(f"unknown stage '{cfg.stage}'; choose one of: {', '.join(stages)}")
    task = cfg.task
    if task.kind not in TASK_KINDS:
        raise ConfigError(f"task {task.name}: kind '{task.kind}' is not one of {', '.join(TASK_KINDS)}")
    if cfg.model.source not in MODEL_SOURCES:
        raise ConfigError(f"model {cfg.model.name}: source must be one of {', '.join(MODEL_SOURCES)}")
    if not cfg.lang:
        raise ConfigError("no language selected; pass lang=<code>, lang=[a,b] or lang=all")
    for code in cfg.lang:
        if code != "all" and code not in task.languages:
            raise ConfigError(f"task {task.name} has no language '{code}'; valid: {' '.join(task.languages)}")
    if cfg.data.split_half not in (0, 1, 2):
        raise ConfigError(f"data.split_half must be 0, 1 or 2, got {cfg.data.split_half}")
    if not 0.0 < cfg.data.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability must be in (0, 1), got {cfg.data.mlm_probability}")
    if cfg.pruning.method not in PRUNING_METHODS:
        methods = ", ".join(PRUNING_METHODS)
        raise ConfigError(f"unknown pruning '{cfg.pruning.method}'; choose one of {methods}")
    an = cfg.analysis
    if an.name not in ANALYSES:
        raise ConfigError(f"unknown analysis '{an.name}'; choose one of {', '.join(ANALYSES)}")
    if an.pooling not in ("first", "mean"):
        raise ConfigError(f"analysis.pooling must be first or mean, got '{an.pooling}'")
    for side in an.sides:
        if side not in CKA_SIDES:
            raise ConfigError(f"analysis.sides: unknown '{side}'; use any of {', '.join(CKA_SIDES)}")
    if an.front_mask not in ("own", "shuffled", "no_heads"):
        raise ConfigError(f"analysis.front_mask must be own, shuffled or no_heads, got '{an.front_mask}'")
    if an.pairs not in ("self", "all"):
        raise ConfigError(f"analysis.pairs must be self or all, got '{an.pairs}'")
    if an.split not in ("dev", "test"):
        raise ConfigError(f"analysis.split must be dev or test, got '{an.split}'")
    ic = cfg.interpolate
    if ic.mask_policy not in ("union", "intersection"):
        raise ConfigError(f"interpolate.mask_policy must be union or intersection, got '{ic.mask_policy}'")
    if ic.split not in ("dev", "test") or ic.points < 2:
        raise ConfigError("interpolate needs split dev or test and points >= 2 (both ends)")
    if cfg.train.weight_init not in ("pre", "rand"):
        raise ConfigError(f"train.weight_init must be pre or rand, got '{cfg.train.weight_init}'")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision must be auto, fp32 or bf16, got '{cfg.precision}'")


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
