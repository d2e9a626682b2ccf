"""What an analysis reads, found in the artifact store by (model, task, lang, pruning, seed).

Analyses never take paths: `Inputs` turns the run's config into masks, pruning histories, finetuned
models and data, and every missing artifact is one `ConfigError` line quoting the command that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import AutoTokenizer

from xsub import artifacts
from xsub.config import ConfigError, selected_languages, task_config
from xsub.data import load_split
from xsub.data.encode import encode
from xsub.data.parallel import load_parallel
from xsub.data.synthetic import ensure_synthetic
from xsub.mask import Mask
from xsub.metrics import TaskMetric, task_metric
from xsub.model import load_finetuned
from xsub.trainer import Collator, pick_device

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
        self.root = artifacts.root(cfg)
        self.model_name = cfg.model.name
        self.method = cfg.pruning.method
        self._tasks: dict[str, DictConfig] = {}
        self.tasks: list[str] = list(self.an.tasks) or [cfg.task.name]
        self.seeds: list[int] = list(self.an.seeds) or [int(cfg.seed)]
        self.langs = self._languages()
        self.device = pick_device(cfg.train.device)
        self.precision = cfg.precision

    # ---- identity of the run -------------------------------------------------------------------------

    @property
    def out(self) -> Path:
        """artifacts/analysis/<name>/<model>/<task[+task]>/<pruning>/seed<s>[+<s>]"""
        seeds = "seed" + "+".join(str(s) for s in self.seeds)
        return (
            artifacts.analysis_dir(self.root, self.an.name)
            / self.model_name
            / "+".join(self.tasks)
            / (self.method)
            / seeds
        )

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
        """The run's config with `task` replaced (data loaders read cfg.task)."""
        if name == self.cfg.task.name:
            return self.cfg
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=False))
        with open_dict(cfg):
            cfg.task = self.task(name)
        return cfg

    def metric(self, task: str) -> TaskMetric:
        return task_metric(self.task(task))

    # ---- masks and pruning histories --------------------------------------------------------------

    def mask_path(self, task: str, lang: str, seed: int) -> Path:
        return artifacts.mask_path(self.root, self.model_name, task, self.method, lang, seed)

    def prune_command(self, task: str, lang: str, seed: int) -> str:
        return (
            f"python -m xsub stage=prune task={task} model={self.model_name} lang={lang} "
            f"pruning={self.method} seed={seed}"
        )

    def mask(self, task: str, lang: str, seed: int) -> Mask:
        path = self.mask_path(task, lang, seed)
        fix = f"make it with: {self.prune_command(task, lang, seed)}"
        if not path.with_suffix(".json").is_file():
            raise ConfigError(f"no {self.method} mask for {task}/{lang} seed {seed} at {path}; {fix}")
        return Mask.load(path, fix=fix)

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
        path = self.mask_path(task, lang, seed)
        return path.with_name(path.name.replace(".safetensors", ".history.safetensors"))

    # ---- models and data -----------------------------------------------------------------------

    def finetuned_dir(self, task: str, seed: int) -> Path:
        path = artifacts.model_dir(self.root, self.model_name, task, seed)
        if not artifacts.is_done(path):
            raise ConfigError(
                f"no finetuned {self.model_name} for task {task} (seed {seed}) at {path}; make it with: "
                f"python -m xsub stage=train task={task} model={self.model_name} lang=all seed={seed}"
            )
        return path / "model"

    def tokenizer(self, task: str, seed: int) -> Any:
        return AutoTokenizer.from_pretrained(self.finetuned_dir(task, seed))

    def model(self, task: str, seed: int) -> tuple[Any, Any]:
        """A fresh instance of the finetuned (model, task, seed) and its tokenizer, on the run's device."""
        path = self.finetuned_dir(task, seed)
        model, tokenizer = load_finetuned(path, self.task(task).kind)
        return model.to(self.device).eval(), tokenizer

    def encoded(self, task: str, lang: str, role: str, tokenizer: Any, n: int = 0) -> datasets.Dataset:
        """Split `role` of (task, lang), tokenized; the first `n` of a fixed shuffle when n > 0."""
        cfg = self.task_cfg(task)
        ds = load_split(cfg, lang, role)
        if n and len(ds) > n:
            ds = ds.shuffle(seed=0).select(range(n))
        return encode(ds, tokenizer, cfg.task.kind, cfg.data.max_length)

    def batches(
        self, task: str, lang: str, role: str, tokenizer: Any, n: int = 0, batch_size: int = 0
    ) -> list[dict]:
        """Materialised batches (so every mask sees the same batches and, for MLM, the same masked tokens)."""
        enc = self.encoded(task, lang, role, tokenizer, n)
        collate = Collator(tokenizer, self.task(task).kind, self.cfg.data.mlm_probability, seed=0)
        size = batch_size or self.cfg.train.eval_batch_size
        return [
            collate([enc[i] for i in range(j, min(j + size, len(enc)))]) for j in range(0, len(enc), size)
        ]

    def parallel(self, langs: list[str], n: int = 0) -> datasets.Dataset:
        """Aligned sentences of `langs` (column per language) from `analysis.parallel_source`."""
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
