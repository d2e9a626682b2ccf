"""Training and evaluation loops shared by every stage (train, prune, crosseval, retrain).

`fit` finetunes with AdamW + linear schedule, evaluates on every dev language after each epoch,
keeps the best weights (early stopping on the mean dev metric) and checkpoints every epoch, so a
killed run restarted with the same config continues and ends with bitwise the same weights: data
order and MLM masks come from generators seeded by (seed, epoch), and the global RNG (dropout) is
saved with the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from xsub import precision as precision_rule
from xsub import store
from xsub.config import XsubError
from xsub.metrics import IGNORE, TaskMetric
from xsub.model.placement import place, require_resident
from xsub.precision import pick_device
from xsub.progress import progress

log = logging.getLogger(__name__)


class TrainingDiverged(XsubError):
    """Loss became NaN/inf."""


@contextlib.contextmanager
def hooked(model: torch.nn.Module, handles: list) -> Iterator[torch.nn.Module]:
    """`model` in eval mode with its forward `handles` registered; on exit (an error too) the hooks
    are removed and the train mode restored, so a statistics pass leaves the model as it found it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where `precision` resolves to bf16 on `device` (xsub.precision), else fp32."""
    return precision_rule.autocast(device, precision)


class Collator:
    """Dynamic padding (to the longest in the batch, never to a fixed length) and, for MLM, BERT
    masking (15%: 80% [MASK], 10% random, 10% kept) from its own seeded generator; for a causal LM
    (`clm`) the labels are the input ids with padding set to -100."""

    def __init__(self, tokenizer, kind: str, mlm_probability: float = 0.15, seed: int = 0) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.kind = kind
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.p = mlm_probability
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch: dict[str, torch.Tensor] = {}
        for key, pad in (("input_ids", self.pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in rows[0]:
                batch[key] = torch.tensor([list(r[key]) + [pad] * (width - len(r[key])) for r in rows])
        if self.kind == "mlm":
            batch["input_ids"], batch["labels"] = self._mask(batch["input_ids"])
        elif self.kind == "clm":  # next-token labels are the inputs (the model shifts); padding ignored
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
            batch["labels"] = batch["input_ids"].masked_fill(mask == 0, IGNORE)
        elif self.kind == "ner":
            batch["labels"] = torch.tensor(
                [list(r["labels"]) + [IGNORE] * (width - len(r["labels"])) for r in rows]
            )
        else:
            batch["labels"] = torch.tensor([int(r["labels"]) for r in rows])
        return batch

    def _mask(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator
        candidates = ~torch.isin(ids, self.special)
        chosen = (torch.rand(ids.shape, generator=g) < self.p) & candidates
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        roll = torch.rand(ids.shape, generator=g)
        random_ids = torch.randint(self.vocab_size, ids.shape, generator=g)
        ids = torch.where(chosen & (roll < 0.8), torch.full_like(ids, self.mask_id), ids)
        ids = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
        return ids, labels


def batches(ds, collate: Collator, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, collate_fn=collate)


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


@torch.no_grad()
def score_batches(
    model, loader, metric: TaskMetric, device: torch.device, precision: str = "auto"
) -> dict[str, float]:
    """Metric of `model` (with whatever gates or weight masks are applied) over ready batches."""
    was_training = model.training
    model.eval()
    metric.reset()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            logits = forward_logits(model, batch)
        metric.update(logits, batch["labels"])
    model.train(was_training)
    return metric.compute()


def evaluate(
    model,
    ds,
    collate: Collator,
    metric: TaskMetric,
    device: torch.device,
    batch_size: int = 64,
    precision: str = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """Metric of `model` on one dataset. MLM masks are drawn from a generator reseeded here, so every
    evaluation of the same data masks the same tokens."""
    collate.reseed(seed)
    return score_batches(model, batches(ds, collate, batch_size), metric, device, precision)


@dataclass
class FitState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_score: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(
    model,
    train_ds,
    dev_sets: dict[str, Any],
    collate: Collator,
    metric: TaskMetric,
    train_cfg: Any,
    checkpoint: store.Checkpoint,
    seed: int,
    precision: str = "auto",
    on_epoch_end: Callable[[FitState], None] | None = None,
    on_step_end: Callable[[FitState], None] | None = None,
) -> FitState:
    """Train with early stopping on the mean dev metric over `dev_sets` (language -> dataset).

    The best weights are loaded into `model` on return. `checkpoint` holds the per-epoch state (and
    its `best` child the best weights); a state of the same identity resumes after its last epoch.
    """
    require_resident(model, "training")
    device = place(model, pick_device(train_cfg.device))
    optimizer = torch.optim.AdamW(_param_groups(model, train_cfg.weight_decay), lr=train_cfg.lr)
    steps_per_epoch = math.ceil(len(train_ds) / train_cfg.batch_size)
    total = steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps:
        total = min(total, train_cfg.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(train_cfg.warmup_ratio * total), total)
    state = FitState()
    best = checkpoint.child("best")
    ckpt = checkpoint.load()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        state = FitState(**json.loads(ckpt["state"]))
        log.info("resuming from %s after epoch %d", checkpoint.file, state.epoch)
    else:
        torch.manual_seed(seed)

    model.train()
    done = _should_stop(state, train_cfg, total)
    while state.epoch < train_cfg.epochs and not done:
        epoch = state.epoch
        collate.reseed(seed * 100_003 + epoch)
        loader = batches(train_ds, collate, train_cfg.batch_size, shuffle=True, seed=seed * 100_003 + epoch)
        bar = progress(loader, desc=f"epoch {epoch + 1}/{train_cfg.epochs}", enabled=train_cfg.progress)
        running = 0.0
        for i, batch in enumerate(bar):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1} step {i}; lower train.lr "
                    f"(now {train_cfg.lr}) or check the data; finished epochs are kept in {checkpoint.file}"
                )
            loss.backward()
            if train_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if on_step_end is not None:
                on_step_end(state)
            running += loss.item()
            bar.set_postfix(loss=f"{running / (i + 1):.4f}")
            if train_cfg.max_steps and state.step >= total:
                break
        dev = {
            lang: evaluate(model, ds, collate, metric, device, train_cfg.eval_batch_size, precision)
            for lang, ds in dev_sets.items()
        }
        score = sum(m[metric.name] for m in dev.values()) / len(dev)
        state.epoch += 1
        state.history.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "train_loss": running / (i + 1),
                "dev": dev,
                "dev_mean": score,
            }
        )
        log.info("epoch %d: train loss %.4f, dev %s %.4f", state.epoch, running / (i + 1), metric.name, score)
        if state.best_score is None or metric.better(score, state.best_score):
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            best.save({"model": model.state_dict()})
        else:
            state.bad_epochs += 1
        checkpoint.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "state": json.dumps(asdict(state)),
            }
        )
        if on_epoch_end is not None:
            on_epoch_end(state)
        done = _should_stop(state, train_cfg, total)
    saved = best.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
    model.eval()
    return state


def _should_stop(state: FitState, train_cfg: Any, total_steps: int) -> bool:
    """Early stopping after `patience` epochs without dev improvement (0 = never), or the step cap."""
    patience_out = bool(train_cfg.patience) and state.bad_epochs >= train_cfg.patience
    return patience_out or bool(train_cfg.max_steps and state.step >= total_steps)
