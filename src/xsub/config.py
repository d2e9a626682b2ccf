"""Structured configs: the schema every YAML file in conf/ is validated against.

Each dataclass is registered in Hydra's ConfigStore as the base of its group, so a typo'd key or a
wrong type fails at composition, before any work. Cross-field rules Hydra cannot express (a language
the task does not have, a stage that does not exist) live in `validate`, which raises ConfigError with
one line naming the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# Enums of allowed values. Member names equal their values: OmegaConf parses a command-line value by
# name and writes YAML (`to_yaml`, `to_container(enum_to_str=True)`) by name, and a member is a str
# equal to its value, so `cfg.analysis.pooling == "first"`, f-strings and json.dumps are unchanged.

TASK_KINDS = ("classification", "ner", "mlm", "clm")  # clm: causal language modelling (decoders)
MODEL_SOURCES = ("hub", "local", "embedded", "package")


class Precision(StrEnum):
    auto = "auto"  # bf16 autocast on GPU, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"


class HeadUnit(StrEnum):
    query = "query"  # one gate per query head
    kv_group = "kv_group"  # one gate per key/value group (grouped-query attention): its query heads together


class WeightInit(StrEnum):
    pre = "pre"  # the model's pretrained weights
    rand = "rand"  # re-initialised from the seed


class MaskPolicy(StrEnum):
    union = "union"
    intersection = "intersection"


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
    kind: str = MISSING  # classification | ner | mlm | clm
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
    num_key_value_heads: int = 0  # decoders (family llama): key/value heads for GQA; 0 = one per query head


DEVICE_MAPS = ("", "auto", "balanced", "balanced_low_0", "sequential")  # accelerate's; "" = one device


@dataclass
class ModelConfig:
    name: str = MISSING  # id used in artifact paths
    source: str = MISSING  # hub | local | embedded | package
    path: str = ""  # hub id, local directory, or python package (source=package)
    # which modules the gates hook: bert | roberta | t5-encoder; decoders: llama (also Mistral, Qwen, Gemma,
    # Cohere, OLMo 2) | phi3 | bloom | xglm | opt | gpt2 | phi. An embedded model is built as this family.
    family: str = "bert"
    pretrain_task: str = ""  # embedded: the task whose train-stage output is this model's pretrained weights
    arch: ArchConfig = field(default_factory=ArchConfig)
    attn_implementation: str = "sdpa"
    # accelerate's placement for a model larger than one GPU: auto | balanced | balanced_low_0 |
    # sequential ("" = the whole model on train.device); max_memory caps each device, {0: 70GiB, cpu: 200GiB}
    device_map: str = ""
    max_memory: Any = None


@dataclass
class DataConfig:
    path: str = ""  # local directory in the source's own schema instead of the hub
    max_length: int = 128
    max_train_examples: int = 0  # 0 = all
    max_eval_examples: int = 0
    streaming: bool = False  # read the source lazily and keep only the capped sample (wiki-mlm default)
    shuffle_buffer: int = 10000  # streaming: rows in the seeded shuffle buffer
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
    weight_init: WeightInit = WeightInit.pre  # pre (pretrained weights) | rand (re-initialised from the seed)
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


class PruningMethod(StrEnum):
    heads = "heads"
    heads_mlp = "heads_mlp"
    magnitude = "magnitude"
    imp = "imp"
    wanda = "wanda"
    lape = "lape"
    lang_ap = "lang_ap"


NEURON_METHODS = ("lape", "lang_ap")  # language neurons: masks that deactivate a language's MLP units


class NeuronModel(StrEnum):
    released = "released"  # the weights as released (an embedded model: its pretraining run)
    trained = "trained"  # this task's multilingual train-stage run (stage=train lang=all)


class ModelLangs(StrEnum):
    own = "own"  # the run finetuned on the pruned language alone (stage=train lang=<l>)
    all = "all"  # the multilingual run (stage=train lang=all)


@dataclass
class PruningBase:
    """What every pruning method has: its name and which finetuned model it starts from. Each method's
    own knobs live in its subclass; conf/pruning/<method>.yaml composes exactly that subclass."""

    method: PruningMethod = MISSING
    model_seed: int = -1  # seed of the finetuned model to prune; -1 = the run's seed
    # which finetuned run: own = trained on the pruned language alone, all = the multilingual one
    # (IMP, which finetunes while it prunes: its training data, the language alone or all of them)
    model_langs: ModelLangs = ModelLangs.all
    # prune even a classifier whose unpruned accuracy is within noise of chance (xsub.sanity); not
    # part of any identity. IMP starts from the pretrained model, so it is never checked
    allow_chance: bool = False


@dataclass
class ScoredPruning(PruningBase):
    """Methods that prune a finetuned model while scoring it on a sample of one language's data."""

    n_examples: int = 5000  # pruning data: examples of the one language, sampled by seed
    batch_size: int = 32
    threshold: float = 0.9  # stop when score < threshold * unpruned (higher-is-better metrics)
    mlm_threshold: float = 1.1  # MLM: stop when perplexity > mlm_threshold * unpruned


@dataclass
class HeadsPruning(ScoredPruning):
    """Michel et al. 2019 head importance, iterative (docs/methods.md)."""

    method: PruningMethod = PruningMethod.heads
    heads_per_round: float = 0.1  # fraction of ALL heads masked per round (14 of 144), in (0, 1]
    max_rounds: int = 0  # 0 = until the threshold
    normalize_tokens: bool = True  # importance / number of tokens
    normalize_layers: bool = True  # per layer, divide by the layer's L2 norm
    normalize_global: bool = True  # min-max to [0, 1] over all heads
    # the original projects' behaviour: gate gradients are never zeroed between batches
    cumulative_grad: bool = False
    # decoders with grouped-query attention: prune single query heads, or whole key/value groups
    head_unit: HeadUnit = HeadUnit.query


@dataclass
class HeadsMlpPruning(HeadsPruning):
    """Prasanna et al. 2020's joint schedule: heads and MLPs per round, then heads only, then MLPs only."""

    method: PruningMethod = PruningMethod.heads_mlp
    mlp_per_round: int = 1  # MLP layers masked per round
    mlp_units: bool = False  # gate intermediate units [L, I] instead of whole MLPs [L]


@dataclass
class MagnitudePruning(ScoredPruning):
    """Prasanna et al. 2020's global L1 magnitude pruning, iterative without retraining."""

    method: PruningMethod = PruningMethod.magnitude
    model_langs: ModelLangs = ModelLangs.own  # Foroutan et al. 2022 finetuned one model per language
    weight_fraction_per_round: float = 0.1  # share of the remaining weights removed per round
    weight_rounds: int = 10  # at most this many rounds


@dataclass
class ImpPruning(PruningBase):
    """Foroutan et al. 2022's iterative magnitude pruning with rewinding while finetuning (train.*)."""

    method: PruningMethod = PruningMethod.imp
    model_langs: ModelLangs = ModelLangs.own  # Foroutan et al. 2022 trained on one language
    imp_rate: float = 0.1  # share of the ORIGINAL prunable weights removed per event (their p = 10%)
    imp_final_sparsity: float = 0.5  # the ticket's sparsity: events = final / rate (their main level)
    imp_prune_every: int = 0  # optimiser steps of training before each event (0 = imp_epochs epochs)
    imp_epochs: int = 0  # epochs of each segment and of the ticket's retraining (0 = train.epochs)
    imp_weight_init: WeightInit = WeightInit.pre  # pre (pretrained) | rand (re-initialised, seeded)
    imp_retrain: bool = True  # retrain the final ticket from the rewind point and record its score


@dataclass
class WandaPruning(PruningBase):
    """Sun et al. 2024 (Wanda): |W_ij| * ||X_j||_2 on one language's calibration tokens, per output row."""

    method: PruningMethod = PruningMethod.wanda
    n_examples: int = 128  # calibration examples of the one language (the paper's code: 128 sequences)
    batch_size: int = 32
    sparsity: float = 0.5  # share of each output row's weights removed (the paper's default)
    sequential: bool = True  # layer by layer, later layers calibrated on the pruned earlier ones (their code)


@dataclass
class NeuronPruning(PruningBase):
    """Language neurons: statistics of one forward pass per language, then a joint selection. Every
    language of the run gets a mask with its neurons off (heads all kept); docs/methods.md."""

    model: NeuronModel = NeuronModel.released
    batch_size: int = 8
    # the languages compared (empty: the run's lang=); a per-language job of a multi-language command
    # carries them, so each language's mask names the set it was selected against
    languages: list[str] = field(default_factory=list)


@dataclass
class LapePruning(NeuronPruning):
    """Tang et al. 2024 (LAPE): activation probability entropy across the run's languages."""

    method: PruningMethod = PruningMethod.lape
    n_tokens: int = 100_000_000  # tokens per language in order (their activation.py: 99,999,744)
    top_rate: float = 0.01  # share of all neurons selected (lowest entropy)
    filter_rate: float = 0.95  # rank of the high-activation filter among all probabilities
    activation_bar_ratio: float = 0.95  # rank of the bar a language's probability must exceed
    # LAPE's released neuron file (RUCAIBox/Language-Specific-Neurons *.neuron.pth): imported instead of
    # computing statistics; file_langs is its language order (empty: theirs, en zh fr es vi id ja)
    neurons_file: str = ""
    file_langs: list[str] = field(default_factory=list)


@dataclass
class LangApPruning(NeuronPruning):
    """Kojima et al. 2024: average precision of each unit's mean activation for one language's texts."""

    method: PruningMethod = PruningMethod.lang_ap
    n_texts: int = 500  # texts per language, sampled by seed (theirs: 500 positives, 500 per negative)
    top_k: int = 1000  # units of highest AP and as many of lowest, per language (the paper's 1000)


# conf/pruning/<option>.yaml -> its schema (registered as pruning/<option>_schema)
PRUNING_SCHEMAS: dict[str, type[PruningBase]] = {
    "heads": HeadsPruning,
    "heads_mlp": HeadsMlpPruning,
    "magnitude": MagnitudePruning,
    "imp": ImpPruning,
    "wanda": WandaPruning,
    "lape": LapePruning,
    "lang_ap": LangApPruning,
}


@dataclass
class PruningConfig(HeadsMlpPruning, MagnitudePruning, ImpPruning, WandaPruning, LapePruning, LangApPruning):
    """Every method's knobs in one flat object, for calling the pruning functions directly (tests,
    benchmarks). Not a config group schema: the CLI composes one of PRUNING_SCHEMAS."""

    method: PruningMethod = PruningMethod.heads
    model_langs: ModelLangs = ModelLangs.all
    n_examples: int = 5000
    imp_final_sparsity: float = 0.5


@dataclass
class MaskConfig:
    """stage=train with a fixed mask: retrain a subnetwork (Foroutan et al. 2022; Prasanna et al. 2020).
    Heads/MLPs are gated off and masked weights stay exactly zero throughout training."""

    source: str = "none"  # none | own | lang:<code> | task:<name> | random | bad | inverted | <mask file>
    pruning: str = ""  # pruning method of the stored mask; "" = the run's pruning group
    seed: int = -1  # seed of the stored mask; -1 = the run's seed


@dataclass
class PipelineConfig:
    """Steps of stage=pipeline: each a list of overrides composed on top of the run's own overrides."""

    steps: list[list[str]] = field(default_factory=list)


class AnalysisName(StrEnum):
    overlap = "overlap"
    crosseval = "crosseval"
    cka = "cka"
    stitch = "stitch"
    importance_tsne = "importance_tsne"
    token_overlap = "token_overlap"
    transfer = "transfer"
    ablation = "ablation"
    steering = "steering"


class Ablate(StrEnum):
    zero = "zero"  # gate 0: the unit's output is 0
    mean = "mean"  # the unit's mean activation over every evaluated language's tokens


class Split(StrEnum):
    dev = "dev"
    test = "test"


class CkaSide(StrEnum):
    own = "own"  # the language's subnetwork
    full = "full"  # no mask
    random = "random"  # a random mask of the same size


class Pooling(StrEnum):
    first = "first"  # the first token
    mean = "mean"  # mean over the attention mask


class FrontMask(StrEnum):
    own = "own"
    shuffled = "shuffled"  # the front mask's layers permuted
    no_heads = "no_heads"


class Pairs(StrEnum):
    self = "self"  # A -> A
    all = "all"  # every ordered pair A -> B


class Baseline(StrEnum):
    none = "none"  # retrained without a mask
    random = "random"
    bad = "bad"
    inverted = "inverted"


@dataclass
class AnalysisBase:
    """What stage=analyze compares (docs/methods.md "Analyses"); inputs come from the artifact store by
    (model, task, lang, pruning, seed). Each analysis's own knobs live in its subclass;
    conf/analysis/<name>.yaml composes exactly that subclass."""

    name: AnalysisName = MISSING
    tasks: list[str] = field(default_factory=list)  # tasks compared; [] = the run's task
    seeds: list[int] = field(default_factory=list)  # seeds (mean ± std, seed-to-seed); [] = the run's seed
    batch_size: int = 64  # sentences per forward pass over the parallel corpus


@dataclass
class OverlapAnalysis(AnalysisBase):
    name: AnalysisName = AnalysisName.overlap


@dataclass
class CrossevalAnalysis(AnalysisBase):
    name: AnalysisName = AnalysisName.crosseval
    split: Split = Split.dev  # the split evaluated
    random_baseline: bool = True  # also a random mask of the same size per language


@dataclass
class AblationAnalysis(AnalysisBase):
    """LAPE's experiment (Tang et al. 2024): language A's units off, the metric on every language B."""

    name: AnalysisName = AnalysisName.ablation
    split: Split = Split.test
    ablate: Ablate = Ablate.zero
    random_baseline: bool = True  # also random units of A's count in every layer, seeded


@dataclass
class SteeringAnalysis(AnalysisBase):
    """Kojima et al. 2024: language B's units fixed to their activation on B's texts while generating
    from prompts in language A; the share of generations in B."""

    name: AnalysisName = AnalysisName.steering
    split: Split = Split.test  # prompts (of A) and the texts the fixed values come from (of B)
    n_prompts: int = 50  # prompts per language A
    prompt_tokens: int = 3  # the first tokens of a text of A
    new_tokens: int = 24  # tokens generated
    temperature: float = 0.8  # sampling, seeded (theirs: 0.8 for unconditional generation)
    percentile: float = 50.0  # the fixed value: percentile of the unit's per-text mean on B (50: theirs)
    n_texts: int = 200  # texts of B the percentile is taken over
    examples: int = 3  # generations shown per (A, B) pair


@dataclass
class ParallelAnalysis(AnalysisBase):
    """Analyses that read a parallel corpus (aligned sentences of every language)."""

    parallel_source: str = "auto"  # auto | synthetic | xnli | paws-x | flores | <dir of <lang>.parquet>
    parallel_split: str = "test"
    parallel_path: str = ""  # local files in the source's hub layout instead of the hub
    # parallel sentences (apostolikas/Language-Specific-Subnetworks: 8192;
    # MaxBelitsky/cross-lingual-subnetworks: 1000-5000)
    n_sentences: int = 1000


@dataclass
class CkaAnalysis(ParallelAnalysis):
    name: AnalysisName = AnalysisName.cka
    sides: list[CkaSide] = field(default_factory=lambda: [CkaSide.own, CkaSide.full])
    # first token (apostolikas/Language-Specific-Subnetworks) | mean over the attention mask
    # (MaxBelitsky/cross-lingual-subnetworks)
    pooling: Pooling = Pooling.first
    memory_gb: float = 4.0  # accumulator memory per pass over the sentences (0 = one pair per pass)


@dataclass
class TokenOverlapAnalysis(ParallelAnalysis):
    name: AnalysisName = AnalysisName.token_overlap
    reference: str = "en"  # reference language; if the task lacks it, its first language


@dataclass
class StitchAnalysis(AnalysisBase):
    name: AnalysisName = AnalysisName.stitch
    split: Split = Split.dev  # the split evaluated
    layers: list[int] = field(default_factory=list)  # layers 0..L (0 = embeddings); [] = all
    front_mask: FrontMask = FrontMask.own  # own | shuffled (across layers) | no_heads
    pairs: Pairs = Pairs.self  # self (A->A) | all (every ordered pair A->B)
    end_task: str = ""  # the end model's task; "" = the run's task
    epochs: int = 10  # Adam lr -> min_lr (cosine) on the end model's task loss
    lr: float = 3e-4
    min_lr: float = 1e-5
    ls_tokens: int = 50000  # tokens for the least-squares initialisation
    train_examples: int = 2000  # training examples of the end language


@dataclass
class ImportanceTsneAnalysis(AnalysisBase):
    name: AnalysisName = AnalysisName.importance_tsne
    perplexity: float = 10.0  # t-SNE perplexity


@dataclass
class TransferAnalysis(AnalysisBase):
    name: AnalysisName = AnalysisName.transfer
    split: Split = Split.test  # the split of the retrained runs' metrics
    baselines: list[Baseline] = field(
        default_factory=lambda: [Baseline.none, Baseline.random]
    )  # + bad, inverted


# conf/analysis/<option>.yaml -> its schema (registered as analysis/<option>_schema)
ANALYSIS_SCHEMAS: dict[str, type[AnalysisBase]] = {
    "overlap": OverlapAnalysis,
    "crosseval": CrossevalAnalysis,
    "cka": CkaAnalysis,
    "stitch": StitchAnalysis,
    "importance_tsne": ImportanceTsneAnalysis,
    "token_overlap": TokenOverlapAnalysis,
    "transfer": TransferAnalysis,
    "ablation": AblationAnalysis,
    "steering": SteeringAnalysis,
}
SCHEMAS: dict[str, dict[str, type]] = {"pruning": PRUNING_SCHEMAS, "analysis": ANALYSIS_SCHEMAS}


@dataclass
class InterpolateConfig:
    """stage=interpolate (Qin et al. 2022, mode connectivity): θ(x) = (1−x)θ1 + xθ2 between two
    train-stage checkpoints."""

    a: list[str] = field(default_factory=lambda: ["seed=0"])  # overrides selecting endpoint 1's train run
    b: list[str] = field(default_factory=lambda: ["seed=1"])  # e.g. [data.split_half=2], [mask.source=own]
    a_path: str = ""  # or a train-stage run directory (or save_pretrained dir) given directly
    b_path: str = ""
    points: int = 26
    split: Split = Split.dev
    mask_policy: MaskPolicy = (
        MaskPolicy.union
    )  # masked endpoints: union | intersection of their masks along the path
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
class StoreConfig:
    """stage=store: which artifacts to list (filters: "" / -1 = any), and whether to delete them."""

    kind: str = ""  # model | mask | analysis | interpolation | data
    task: str = ""
    lang: str = ""
    seed: int = -1
    method: str = ""
    where: list[str] = field(default_factory=list)  # settings, e.g. [train.lr:5e-3]
    remove: bool = False  # delete what matches (prints the list first)
    yes: bool = False  # really delete (with remove=true)


@dataclass
class XsubConfig:
    stage: str = "train"
    seed: int = 0
    force: bool = False  # redo a stage whose artifact already exists
    precision: Precision = Precision.auto  # auto | fp32 | bf16: the dtype of the model's matmuls
    task: TaskConfig = MISSING
    lang: dict[str, LangConfig] = field(default_factory=dict)
    model: ModelConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pruning: PruningBase = MISSING  # one of PRUNING_SCHEMAS, chosen by the pruning group
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    analysis: AnalysisBase = MISSING  # one of ANALYSIS_SCHEMAS, chosen by the analysis group
    experiment_name: str = ""


def task_languages(source: str) -> list[str]:
    """Language codes a data source has (one table in xsub.languages; the synthetic ones are generated)."""
    if source == "synthetic":
        from xsub.languages import SYNTHETIC_LANGUAGES  # not xsub.data: that imports datasets

        return list(SYNTHETIC_LANGUAGES)
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
    cs = ConfigStore.instance()
    cs.store(name="xsub_schema", node=XsubConfig)
    for group, schemas in SCHEMAS.items():
        for option, schema in schemas.items():
            cs.store(group=group, name=f"{option}_schema", node=schema)
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


def field_names(schema: type) -> list[str]:
    return [f.name for f in fields(schema)]


def knob_error(group: str, key: str, option: str) -> str:
    """One line for `<group>.<key>` set while `<group>=<option>` is chosen and its schema lacks `key`."""
    owners = [name for name, schema in SCHEMAS[group].items() if key in field_names(schema)]
    if owners:
        choose = " or ".join(f"{group}={o}" for o in owners)
        return f"{key} is a {' / '.join(owners)} setting; choose {choose} or drop {group}.{key}"
    valid = " ".join(field_names(SCHEMAS[group][option]))
    return f"unknown key {group}.{key} for {group}={option}; valid keys: {valid}"


def chosen_option(node: Any, group: str) -> str:
    """The option of a pruning / analysis node: the one whose schema it was composed from (or, for an
    untyped copy, the one its method / name says)."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    for option, schema in SCHEMAS[group].items():
        if kind is schema:
            return option
    value = str(node.get("method" if group == "pruning" else "name"))
    if value not in SCHEMAS[group]:
        raise ConfigError(f"unknown {group} '{value}'; choose one of: {' '.join(SCHEMAS[group])}")
    return value


def _check_option(cfg: DictConfig, group: str) -> None:
    """The node is exactly its option's schema: method / name agree with it and no other option's key."""
    node = cfg[group]
    option = chosen_option(node, group)
    name_key = "method" if group == "pruning" else "name"
    value = str(node.get(name_key))
    if value != option:
        raise ConfigError(
            f"{group}.{name_key}={value} does not match {group}={option}; choose {group}={value} "
            f"instead of setting {group}.{name_key}"
        )
    allowed = field_names(SCHEMAS[group][option])
    for key in node:
        if key not in allowed:
            raise ConfigError(knob_error(group, str(key), option))


def _check_keys(node: Any, path: str) -> None:
    """Keys added with `+key=value` to a typed node are refused like a typo'd key."""
    if not isinstance(node, DictConfig):
        return
    kind = OmegaConf.get_type(node)
    if kind is not None and hasattr(kind, "__dataclass_fields__"):
        allowed = field_names(kind)
        for key in node:
            if key not in allowed:
                where = path or "the config"
                raise ConfigError(
                    f"unknown key {path + '.' if path else ''}{key}; valid keys of {where}: "
                    + " ".join(allowed)
                )
    for key in node:
        if path == "" and key in SCHEMAS:
            continue  # checked by _check_option, whose message names the option that has the key
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _check_keys(child, f"{path}.{key}" if path else str(key))


_ABSENT = object()

# (key, test, requirement): checked when the composed config has the key (an option may lack it)
RANGES: tuple[tuple[str, Any, str], ...] = (
    ("seed", lambda v: v >= 0, ">= 0"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.lr", lambda v: v > 0, "> 0"),
    ("train.batch_size", lambda v: v >= 1, ">= 1"),
    ("train.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("train.weight_decay", lambda v: v >= 0, ">= 0"),
    ("train.warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.grad_clip", lambda v: v >= 0, ">= 0 (0 = no clipping)"),
    ("train.patience", lambda v: v >= 0, ">= 0 (0 = no early stopping)"),
    ("train.max_steps", lambda v: v >= 0, ">= 0 (0 = no cap)"),
    ("train.save_steps", lambda v: all(s >= 1 for s in v), "a list of steps >= 1"),
    ("data.max_length", lambda v: v >= 2, ">= 2"),
    ("data.max_train_examples", lambda v: v >= 0, ">= 0 (0 = all)"),
    ("data.max_eval_examples", lambda v: v >= 0, ">= 0 (0 = all)"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.split_half", lambda v: v in (0, 1, 2), "0, 1 or 2"),
    ("data.mlm_probability", lambda v: 0 < v < 1, "in (0, 1)"),
    (
        "model.device_map",
        lambda v: v in DEVICE_MAPS,
        "auto, balanced, balanced_low_0 or sequential (empty: the whole model on train.device)",
    ),
    ("model.arch.hidden_size", lambda v: v >= 1, ">= 1"),
    ("model.arch.num_hidden_layers", lambda v: v >= 1, ">= 1"),
    ("model.arch.num_attention_heads", lambda v: v >= 1, ">= 1"),
    ("model.arch.intermediate_size", lambda v: v >= 1, ">= 1"),
    ("model.arch.max_position_embeddings", lambda v: v >= 2, ">= 2"),
    ("model.arch.hidden_dropout_prob", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.arch.attention_probs_dropout_prob", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.arch.num_key_value_heads", lambda v: v >= 0, ">= 0 (0 = one per query head)"),
    ("mask.seed", lambda v: v >= -1, ">= 0, or -1 for the run's seed"),
    ("pruning.model_seed", lambda v: v >= -1, ">= 0, or -1 for the run's seed"),
    ("pruning.n_examples", lambda v: v >= 1, ">= 1"),
    ("pruning.batch_size", lambda v: v >= 1, ">= 1"),
    ("pruning.threshold", lambda v: 0 <= v <= 1, "in [0, 1] (a share of the unpruned score; 0 = never stop)"),
    ("pruning.mlm_threshold", lambda v: v >= 1, ">= 1 (a multiple of the unpruned perplexity)"),
    ("pruning.heads_per_round", lambda v: 0 < v <= 1, "in (0, 1] (a fraction of all heads, e.g. 0.1)"),
    ("pruning.max_rounds", lambda v: v >= 0, ">= 0 (0 = until the threshold)"),
    ("pruning.mlp_per_round", lambda v: v >= 1, ">= 1 (MLP layers per round)"),
    (
        "pruning.weight_fraction_per_round",
        lambda v: 0 < v < 1,
        "in (0, 1) (a share of the remaining weights)",
    ),
    ("pruning.weight_rounds", lambda v: v >= 1, ">= 1"),
    ("pruning.imp_prune_every", lambda v: v >= 0, ">= 0 (0 = one full finetuning per segment)"),
    ("pruning.imp_epochs", lambda v: v >= 0, ">= 0 (0 = train.epochs)"),
    ("pruning.imp_final_sparsity", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("pruning.imp_rate", lambda v: 0 < v < 1, "in (0, 1) (a share of the original weights per event)"),
    ("pruning.sparsity", lambda v: 0 <= v < 1, "in [0, 1) (a share of each output row)"),
    ("pruning.n_tokens", lambda v: v >= 1, ">= 1"),
    ("pruning.n_texts", lambda v: v >= 2, ">= 2"),
    ("pruning.top_k", lambda v: v >= 1, ">= 1"),
    ("pruning.top_rate", lambda v: 0 < v <= 1, "in (0, 1] (a share of all neurons)"),
    ("pruning.filter_rate", lambda v: 0 < v <= 1, "in (0, 1] (a rank among all probabilities)"),
    ("pruning.activation_bar_ratio", lambda v: 0 < v <= 1, "in (0, 1] (a rank among all probabilities)"),
    ("analysis.seeds", lambda v: all(s >= 0 for s in v), "a list of seeds >= 0"),
    ("analysis.batch_size", lambda v: v >= 1, ">= 1"),
    ("analysis.n_sentences", lambda v: v >= 1, ">= 1"),
    ("analysis.memory_gb", lambda v: v >= 0, ">= 0 (0 = one pair of sides per pass)"),
    ("analysis.layers", lambda v: all(layer >= 0 for layer in v), "a list of layers >= 0 (0 = embeddings)"),
    ("analysis.epochs", lambda v: v >= 1, ">= 1"),
    ("analysis.lr", lambda v: v > 0, "> 0"),
    ("analysis.min_lr", lambda v: v >= 0, ">= 0"),
    ("analysis.ls_tokens", lambda v: v >= 1, ">= 1"),
    ("analysis.train_examples", lambda v: v >= 1, ">= 1"),
    ("analysis.perplexity", lambda v: v > 0, "> 0"),
    ("analysis.n_prompts", lambda v: v >= 1, ">= 1"),
    ("analysis.prompt_tokens", lambda v: v >= 1, ">= 1"),
    ("analysis.new_tokens", lambda v: v >= 1, ">= 1"),
    ("analysis.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("analysis.percentile", lambda v: 0 <= v <= 100, "in [0, 100]"),
    ("analysis.n_texts", lambda v: v >= 1, ">= 1"),
    ("analysis.examples", lambda v: v >= 0, ">= 0"),
    ("interpolate.points", lambda v: v >= 2, ">= 2 (both ends)"),
    ("interpolate.curve_epochs", lambda v: v >= 1, ">= 1"),
    ("interpolate.curve_lr", lambda v: v > 0, "> 0"),
    ("interpolate.train_examples", lambda v: v >= 1, ">= 1"),
    ("report.head_rows", lambda v: v >= 0, ">= 0"),
)


def _check_ranges(cfg: DictConfig) -> None:
    for key, test, requirement in RANGES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or value is None:
            continue
        if not test(value):
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"{key} must be {requirement}, got {shown}")
    an = cfg.analysis
    if "min_lr" in an and an.min_lr > an.lr:
        raise ConfigError(f"analysis.min_lr must be <= analysis.lr ({an.lr}), got {an.min_lr}")


def validate(cfg: DictConfig, stages: tuple[str, ...]) -> None:
    """Cross-field and range checks that must pass before any work starts (one line naming the fix)."""
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
    if cfg.data.streaming and (cfg.data.max_train_examples <= 0 or cfg.data.max_eval_examples <= 0):
        raise ConfigError("data.streaming needs data.max_train_examples and data.max_eval_examples > 0")
    if cfg.data.shuffle_buffer < 1:
        raise ConfigError(f"data.shuffle_buffer must be >= 1, got {cfg.data.shuffle_buffer}")
    for group in SCHEMAS:
        _check_option(cfg, group)
    _check_keys(cfg, "")
    _check_ranges(cfg)
    _check_same_mask(cfg)
    _check_neuron_languages(cfg)
    _check_placement(cfg)


def _check_placement(cfg: DictConfig) -> None:
    """What holds two models, or mixtures of their weights, on one device cannot take a device_map."""
    if not cfg.model.get("device_map"):
        if cfg.model.get("max_memory"):
            raise ConfigError("model.max_memory caps accelerate's placement; set model.device_map=auto too")
        return
    one_device = {"interpolate": "stage=interpolate", "analyze:stitch": "analysis=stitch"}
    what = one_device.get(str(cfg.stage)) or one_device.get(f"{cfg.stage}:{cfg.analysis.get('name', '')}")
    if what:
        raise ConfigError(f"{what} holds two models' weights on one device; drop model.device_map")


def _check_neuron_languages(cfg: DictConfig) -> None:
    """Language neurons are selected jointly across languages: a run needs two of them at least."""
    p = cfg.pruning
    if cfg.stage != "prune" or str(p.get("method")) not in NEURON_METHODS or p.get("neurons_file"):
        return
    if str(p.get("model_langs")) == "own":
        raise ConfigError(
            f"pruning={p.method} scores one model on every language; drop pruning.model_langs=own"
        )
    if p.get("languages"):
        outside = [c for c in cfg.lang if c != "all" and c not in p.languages]
        unknown = [c for c in p.languages if c not in cfg.task.languages]
        if unknown or outside or len(p.languages) < 2:
            raise ConfigError(
                f"pruning.languages must be two or more of task {cfg.task.name}'s languages, including "
                f"every lang= of the run; got {list(p.languages)} for lang={list(cfg.lang)}"
            )
    elif "all" not in cfg.lang and len(cfg.lang) < 2:
        raise ConfigError(
            f"pruning={p.method} selects neurons by comparing languages; pass two or more, e.g. lang=all "
            "or lang=[en,de,zh]"
        )


def _check_same_mask(cfg: DictConfig) -> None:
    """Magnitude pruning of ONE multilingual run ranks the same weights for every language: refuse a
    command that would make several languages' identical masks and present them as language masks."""
    p = cfg.pruning
    if cfg.stage != "prune" or str(p.get("method")) != "magnitude" or str(p.get("model_langs")) != "all":
        return
    if "all" in cfg.lang or len(cfg.lang) > 1:
        raise ConfigError(
            "pruning=magnitude of the multilingual run (pruning.model_langs=all) gives every language the "
            "same mask (global |w| never sees the language); prune each language's own run with "
            "pruning.model_langs=own, or use pruning=wanda for per-language masks of one model"
        )


def to_container(cfg: DictConfig) -> dict:
    """Plain Python values (enums as their names, which equal their values), e.g. for JSON or YAML."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
