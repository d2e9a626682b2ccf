"""What an analysis reads, found in the artifact store from the run's own config.

Analyses never take paths: `Inputs` turns the run's config into store keys of masks, pruning
histories and finetuned models (the same command line with another task, language or seed), reads
them under their shared locks and records each as an upstream of the analysis; every missing
artifact is one `store.Missing` line quoting the command that makes it. `out` is the staging folder
the analysis writes its figures into (the stage moves it into place when everything is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from xsub import store
from xsub.config import NEURON_METHODS, ConfigError, selected_languages, task_config
from xsub.mask import Mask
from xsub.precision import pick_device
from xsub.store import Key as StoreKey

if TYPE_CHECKING:  # imported where used: a finished analysis is skipped without datasets/transformers
    import datasets
    import torch

    from xsub.metrics import TaskMetric

Key = tuple[str, str, int]  # (task, lang, seed)


@dataclass(frozen=True)
class Side:
    """One representation an analysis compares: a task's finetuned model, a language, a mask kind."""

    task: str
    lang: str
    mask: str = "own"  # own | full | random

    @property
    def label(self) -> str:
        return f"{self.task}/{self.lang}/{self.mask}"


class Inputs:
    """The run's view of the artifact store for one analysis."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.an = cfg.analysis
        self.root = store.root(cfg)
        self.model_name = cfg.model.name
        self.method = cfg.pruning.method
        self._tasks: dict[str, DictConfig] = {}
        self.tasks: list[str] = list(self.an.tasks) or [cfg.task.name]
        self.seeds: list[int] = list(self.an.seeds) or [int(cfg.seed)]
        self.langs = self._languages()
        self.device = pick_device(cfg.train.device)
        self.precision = store.precision_of(cfg)  # bf16 | fp32, as resolved for this run
        self.read: list[dict[str, Any]] = []  # provenance of every artifact read
        self.out: Path = self.root  # set by the stage to its staging folder
        self.partial: Path | None = None  # set by the stage: resumable state of the analysis
        self.identity = ""

    # ---- identity of the run -------------------------------------------------------------------------

    def key(self, upstream: list[StoreKey] | None = None) -> StoreKey:
        """The analysis's store key: its settings plus its inputs' identities (every mask by default)."""
        ups = upstream if upstream is not None else [self.mask_key(*k) for k in self.keys()]
        return store.analysis_key(self.cfg, self.tasks, self.langs, self.seeds, ups)

    def note(self, split: str = "", n: int | str = "", extra: str = "") -> str:
        """One line that says what a figure or table was made from: the model, tasks, pruning method
        and its data, seeds, and the split and number of examples (or sentences) it evaluates."""
        p = self.cfg.pruning
        method = str(self.method)
        if "n_examples" in p:
            method += f" on {p.n_examples} examples per language"
        for knob in ("threshold", "sparsity", "top_rate", "top_k"):  # what sets the mask's size
            if knob in p:
                method += f", {knob} {p[knob]:g}"
        seeds = ", ".join(map(str, self.seeds))
        parts = [
            f"{self.model_name} on {'+'.join(self.tasks)}",
            f"pruning {method}",
            f"seed{'s' if len(self.seeds) > 1 else ''} {seeds}",
        ]
        if split:
            parts.append(f"{split} split" + (f", n = {n} per language" if n != "" else ""))
        elif n != "":
            parts.append(f"n = {n}")
        if extra:
            parts.append(extra)
        return " · ".join(parts)

    def checkpoint(self, name: str) -> store.Checkpoint:
        """Resumable state of one training inside the analysis (e.g. a stitch), kept until it is done."""
        file = self.partial / f"{name}.pt" if self.partial is not None else None
        return store.Checkpoint(file, self.identity)

    def keys(self) -> list[Key]:
        return [(t, lang, s) for t in self.tasks for lang in self.langs for s in self.seeds]

    def _languages(self) -> list[str]:
        """The run's languages that every compared task has (lang=all: the tasks' common languages)."""
        chosen = selected_languages(self.cfg)
        missing = {
            t: [lang for lang in chosen if lang not in self.task(t).languages]
            for t in self.tasks
            if "all" not in self.cfg.lang
        }
        missing = {t: m for t, m in missing.items() if m}
        if missing:
            t, m = next(iter(missing.items()))
            raise ConfigError(f"task {t} has no language {' '.join(m)}; choose languages all tasks have")
        return [lang for lang in chosen if all(lang in self.task(t).languages for t in self.tasks)]

    def task(self, name: str) -> DictConfig:
        if name not in self._tasks:
            self._tasks[name] = self.cfg.task if name == self.cfg.task.name else task_config(name)
        return self._tasks[name]

    def task_cfg(self, name: str) -> DictConfig:
        """The run's config with another task (and that task's own defaults; data loaders read it)."""
        if name == self.cfg.task.name:
            return self.cfg
        return store.upstream(self.cfg, str(self.cfg.stage), task=name)

    def metric(self, task: str, tokenizer: Any = None) -> TaskMetric:
        """The task's metric; with the model's tokenizer a causal LM also reports bits per byte."""
        from xsub.metrics import task_metric

        return task_metric(self.task(task), tokenizer)

    # ---- masks and pruning histories --------------------------------------------------------------

    def config(
        self, stage: str, task: str, lang: str | None, seed: int, mask: str | None = None
    ) -> DictConfig:
        """The run's command line with another stage, task, language or seed."""
        return store.upstream(self.cfg, stage, task=task, lang=lang, seed=seed, mask=mask)

    def mask_key(self, task: str, lang: str, seed: int) -> StoreKey:
        return store.mask_key(self.config("prune", task, lang, seed), lang)

    def open(self, key: StoreKey, what: str) -> Any:
        """Read an artifact under its shared lock and record it as an input of the analysis."""
        if all(r["id"] != key.id for r in self.read):
            self.read.append(store.provenance(self.cfg, key))
        return store.reading(self.cfg, key, what)

    def mask_dir(self, task: str, lang: str, seed: int) -> Path:
        key = self.mask_key(task, lang, seed)
        with self.open(key, f"{self.method} mask") as directory:
            return directory

    def prune_command(self, task: str, lang: str, seed: int) -> str:
        return store.command(self.mask_key(task, lang, seed))

    def mask(self, task: str, lang: str, seed: int) -> Mask:
        key = self.mask_key(task, lang, seed)
        with self.open(key, f"{self.method} mask") as directory:
            return Mask.load(
                directory / "mask.safetensors", fix=f"redo it with: {store.command(key, force=True)}"
            )

    def masks(self) -> dict[Key, Mask]:
        """Every (task, lang, seed) mask of the run, all checked to be masks of one architecture."""
        masks = {
            (t, lang, s): self.mask(t, lang, s) for t in self.tasks for lang in self.langs for s in self.seeds
        }
        hashes = {m.meta.config_hash for m in masks.values() if m.meta.config_hash}
        if len(hashes) > 1:
            raise ConfigError(
                f"masks of different model architectures ({' '.join(sorted(hashes))}); re-prune"
            )
        return masks

    def model_seed(self, masks: list[Mask], seed: int) -> int:
        """Seed of the finetuned model these masks were pruned from (prune's `pruning.model_seed`)."""
        seeds = {int(m.meta.extra.get("model_seed", seed)) for m in masks}
        if len(seeds) > 1:
            raise ConfigError(
                f"masks of seed {seed} were pruned from different finetuned models (seeds {seeds})"
            )
        return seeds.pop() if seeds else seed

    def history_path(self, task: str, lang: str, seed: int) -> Path:
        return self.mask_dir(task, lang, seed) / "history.safetensors"

    # ---- models and data -----------------------------------------------------------------------

    def model_key(self, task: str, seed: int, lang: str = "all", mask: str = "none") -> StoreKey:
        """A train-stage run of this command line (default: the finetuned model masks are pruned from)."""
        return store.model_key(self.config("train", task, lang, seed, mask=mask))

    def finetuned_dir(self, task: str, seed: int) -> Path:
        key = self.model_key(task, seed)
        with self.open(key, f"finetuned {self.model_name} for task {task}") as directory:
            return directory / "model"

    def tokenizer(self, task: str, seed: int) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.finetuned_dir(task, seed))

    def model(self, task: str, seed: int) -> tuple[Any, Any]:
        """A fresh instance of the finetuned (model, task, seed) and its tokenizer, on the run's device;
        for language-neuron masks the model their neurons were scored on (`store.neuron_model_key`)."""
        from xsub.model import load_finetuned, load_model, placement

        key = self.model_key(task, seed)
        kind = self.task(task).kind
        what = f"finetuned {self.model_name} for task {task}"
        if str(self.method) in NEURON_METHODS:
            key = store.neuron_model_key(self.config("prune", task, None, seed))
            if key is None:  # the released weights
                cfg = self.task_cfg(task)
                model, tokenizer = load_model(cfg.model, kind, cfg.task.num_labels, self.root, seed=0)
                self.device = placement.place(model, self.device)
                return model.eval(), tokenizer
            kind, what = (
                key.settings_dict()["task"]["kind"],
                f"{self.model_name} trained on {key.field('task')}",
            )
            if kind != self.task(task).kind:
                raise ConfigError(
                    f"these neurons were scored on {self.model_name}'s {kind} pretraining, not task {task}; "
                    f"analyse them on its language-modelling task ({key.field('task')}) or prune with "
                    "pruning.model=trained"
                )
        placing = placement.load_kwargs(self.task_cfg(task).model, self.root)
        with self.open(key, what) as directory:
            model, tokenizer = load_finetuned(directory / "model", kind, placement=placing)
        self.device = placement.place(model, self.device)  # a placed model's inputs go to its first device
        return model.eval(), tokenizer

    def evaluation(self, task: str, seed: int, split: str) -> tuple[dict[str, Mask], Any, Any, dict]:
        """What a cross-language evaluation of one (task, seed) needs: every language's mask, the model
        they were pruned from (and its tokenizer), and each language's `split` batches, built once so
        every mask sees the same examples (`evaluated` records how many per language)."""
        masks = {lang: self.mask(task, lang, seed) for lang in self.langs}
        model, tokenizer = self.model(task, self.model_seed(list(masks.values()), seed))
        data = {lang: self.batches(task, lang, split, tokenizer) for lang in self.langs}
        self.evaluated = {lang: sum(len(b["input_ids"]) for b in bs) for lang, bs in data.items()}
        return masks, model, tokenizer, data

    def encoded(self, task: str, lang: str, role: str, tokenizer: Any, n: int = 0) -> datasets.Dataset:
        """Split `role` of (task, lang), tokenized; the first `n` of a fixed shuffle when n > 0."""
        from xsub.data import load_split
        from xsub.data.encode import encode

        cfg = self.task_cfg(task)
        ds = load_split(cfg, lang, role)
        if n and len(ds) > n:
            ds = ds.shuffle(seed=0).select(range(n))
        return encode(ds, tokenizer, cfg.task.kind, cfg.data.max_length)

    def batches(
        self, task: str, lang: str, role: str, tokenizer: Any, n: int = 0, batch_size: int = 0
    ) -> list[dict]:
        """Materialised batches (so every mask sees the same batches and, for MLM, the same masked tokens)."""
        from xsub.trainer import Collator

        enc = self.encoded(task, lang, role, tokenizer, n)
        collate = Collator(tokenizer, self.task(task).kind, self.cfg.data.mlm_probability, seed=0)
        size = batch_size or self.cfg.train.eval_batch_size
        return [
            collate([enc[i] for i in range(j, min(j + size, len(enc)))]) for j in range(0, len(enc), size)
        ]

    def parallel(self, langs: list[str], n: int = 0) -> datasets.Dataset:
        """Aligned sentences of `langs` (column per language) from `analysis.parallel_source`."""
        from xsub.data.parallel import load_parallel
        from xsub.data.synthetic import ensure_synthetic

        source = self.an.parallel_source
        path = self.an.parallel_path
        if source == "auto":
            kind = self.cfg.task.source
            if self.cfg.task.builtin:
                source = "synthetic"
            else:
                source = kind if kind in ("xnli", "paws-x") else "flores"
        if source == "synthetic" and not path:
            path = str(ensure_synthetic(self.root, seed=0) / "parallel")
        return load_parallel(source, langs, self.an.parallel_split, path, n or self.an.n_sentences)

    def tokenize(self, tokenizer: Any, sentences: list[str]) -> list[dict[str, torch.Tensor]]:
        """Batches of plain sentences (no labels) for representations, in order."""
        size = self.an.batch_size
        out = []
        for j in range(0, len(sentences), size):
            enc = tokenizer(
                sentences[j : j + size],
                padding=True,
                truncation=True,
                max_length=self.cfg.data.max_length,
                return_tensors="pt",
            )
            out.append(
                {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            )
        return out
