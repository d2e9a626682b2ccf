"""stage=prune: the subnetwork of a finetuned model for each language of the run.

`python -m xsub stage=prune task=marc lang=zh` loads the finetuned (model, task, seed) from the
artifact store, samples `pruning.n_examples` training examples of that one language (by seed), and
prunes by `pruning.method`. Output: artifacts/masks/<model>/<task>/<method>/<lang>/seed<s>.safetensors
(+ .json sidecar, + .history.* with every round's importance, mask and score). Each round is
checkpointed, so a killed job resumes at its last round and ends with the identical mask.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from xsub import artifacts, tracking
from xsub.config import ConfigError, selected_languages
from xsub.data import load_split
from xsub.data.encode import encode
from xsub.mask import Mask, MaskMeta
from xsub.metrics import task_metric
from xsub.model import config_hash, load_finetuned, load_model
from xsub.pruning.head_importance import PruneResult, prune_heads
from xsub.pruning.magnitude import Segment, imp_num_events, imp_prune, magnitude_prune
from xsub.tables import format_table
from xsub.trainer import Collator, config_fingerprint, fit, pick_device, score_batches

log = logging.getLogger(__name__)


def model_seed(cfg: DictConfig) -> int:
    return cfg.pruning.model_seed if cfg.pruning.model_seed >= 0 else cfg.seed


def finetuned_dir(cfg: DictConfig) -> Path:
    """The finetuned model this stage prunes; one line with the command that makes it if missing."""
    seed = model_seed(cfg)
    path = artifacts.model_dir(artifacts.root(cfg), cfg.model.name, cfg.task.name, seed)
    if not artifacts.is_done(path):
        raise ConfigError(
            f"no finetuned {cfg.model.name} for task {cfg.task.name} (seed {seed}) at {path}; make it with: "
            f"python -m xsub stage=train task={cfg.task.name} model={cfg.model.name} lang=all seed={seed}"
        )
    return path


def mask_path(cfg: DictConfig, lang: str, method: str | None = None) -> Path:
    root = artifacts.root(cfg)
    return artifacts.mask_path(
        root, cfg.model.name, cfg.task.name, method or cfg.pruning.method, lang, cfg.seed
    )


def pruning_batches(cfg: DictConfig, lang: str, tokenizer) -> list[dict[str, torch.Tensor]]:
    """`n_examples` training examples of one language, sampled by seed, batched once in length order.

    Materialised once so every round sees the same batches (and, for MLM, the same masked tokens);
    sorting by length keeps padding (work on pad tokens) to a minimum.
    """
    ds = load_split(cfg, lang, "train")
    ds = ds.shuffle(seed=cfg.seed).select(range(min(cfg.pruning.n_examples, len(ds))))
    enc = encode(ds, tokenizer, cfg.task.kind, cfg.data.max_length)
    collate = Collator(tokenizer, cfg.task.kind, cfg.data.mlm_probability, seed=cfg.seed)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]["input_ids"]))
    size = cfg.pruning.batch_size
    return [collate([enc[i] for i in order[j : j + size]]) for j in range(0, len(order), size)]


def run(cfg: DictConfig) -> dict[str, Any]:
    results = {lang: _prune_language(cfg, lang) for lang in selected_languages(cfg)}
    print(results_table(cfg, results))
    return results


def _prune_language(cfg: DictConfig, lang: str) -> dict[str, Any]:
    path = mask_path(cfg, lang)
    with artifacts.lock(_state(path)):  # Mask.save takes the mask file's own lock
        if path.with_suffix(".json").is_file() and not cfg.force:
            log.info("already pruned: %s (force=true to redo)", path)
            return _summary(Mask.load(path), seconds=0.0)
        start = time.perf_counter()
        if cfg.force:
            _clear_state(path)
        meta = MaskMeta(
            model_id=cfg.model.name,
            task=cfg.task.name,
            lang=lang,
            seed=cfg.seed,
            method=cfg.pruning.method,
            extra={"model_seed": model_seed(cfg), "n_examples": cfg.pruning.n_examples},
        )
        tracker = tracking.start(cfg, "prune", name=f"prune-{cfg.task.name}-{lang}-s{cfg.seed}")
        masks = METHODS[cfg.pruning.method](cfg, lang, meta, path, tracker)
        for mask in masks:
            saved = mask.save(mask_path(cfg, lang, mask.meta.method))
            tracker.artifact(
                f"mask-{cfg.model.name}-{cfg.task.name}-{mask.meta.method}-{lang}-s{cfg.seed}",
                "mask",
                [saved, saved.with_suffix(".json")],
                mask.summary(),
            )
        _clear_state(path)  # the masks are saved: the per-round state has done its job
        summary = _summary(masks[0], seconds=time.perf_counter() - start)
        tracker.summary(summary)
        tracker.finish()
        return summary


def _state(path: Path) -> Path:
    """Loop state of a running prune, so a killed job resumes at its last round."""
    return path.with_name(path.name.replace(".safetensors", ".state"))


def _clear_state(path: Path) -> None:
    _state(path).unlink(missing_ok=True)
    shutil.rmtree(_segments(path), ignore_errors=True)


def _segments(path: Path) -> Path:
    """IMP: checkpoints of the training segments between pruning events."""
    return _state(path).with_suffix(".segments")


def _finetuned(cfg: DictConfig, meta: MaskMeta) -> tuple[Any, Any, torch.device]:
    """The finetuned model to prune (structured and magnitude pruning), on the run's device."""
    source = finetuned_dir(cfg) / "model"
    model, tokenizer = load_finetuned(source, cfg.task.kind)
    meta.config_hash = config_hash(model)
    meta.extra["finetuned"] = str(source)
    device = pick_device(cfg.train.device)
    return model.to(device), tokenizer, device


def _structured(cfg, lang, meta, path, tracker) -> list[Mask]:
    model, tokenizer, device = _finetuned(cfg, meta)
    loader = pruning_batches(cfg, lang, tokenizer)
    result = prune_heads(
        model,
        loader,
        task_metric(cfg.task),
        device,
        cfg.pruning,
        state_path=_state(path),
        mlm=cfg.task.kind == "mlm",
        precision=cfg.precision,
        on_round=lambda r: tracker.log(
            {"round": r.round, "score": r.score, "kept": r.kept(), "accepted": r.accepted}
        ),
    )
    _save_history(path, result)
    mask = result.mask
    mask.meta = _merged_meta(meta, mask.meta, tokens_per_s=result.tokens_per_s)
    return [mask]


def _magnitude(cfg, lang, meta, path, tracker) -> list[Mask]:
    model, tokenizer, device = _finetuned(cfg, meta)
    loader = pruning_batches(cfg, lang, tokenizer)
    metric = task_metric(cfg.task)
    result = magnitude_prune(
        model,
        lambda m: score_batches(m, loader, metric, device, cfg.precision)[metric.name],
        cfg.pruning,
        state_path=_state(path),
        seed=cfg.seed,
        higher_is_better=metric.higher_is_better,
        meta=meta,
        on_round=lambda h: tracker.log(h),
    )
    _write_json(path, "history", result.history)
    return [result.mask, result.random, result.bad]


def _imp(cfg, lang, meta, path, tracker) -> list[Mask]:
    """Seed 002: IMP with rewinding while finetuning the *pretrained* model on this language."""
    root = artifacts.root(cfg)
    model, tokenizer = load_model(cfg.model, cfg.task.kind, cfg.task.num_labels, root, seed=cfg.seed)
    train = encode(load_split(cfg, lang, "train"), tokenizer, cfg.task.kind, cfg.data.max_length)
    dev = {lang: encode(load_split(cfg, lang, "dev"), tokenizer, cfg.task.kind, cfg.data.max_length)}
    collate = Collator(tokenizer, cfg.task.kind, cfg.data.mlm_probability, seed=cfg.seed)
    metric = task_metric(cfg.task)
    steps_per_epoch = -(-len(train) // cfg.train.batch_size)
    events = imp_num_events(cfg.pruning, epochs=cfg.train.epochs, steps_per_epoch=steps_per_epoch)
    ckpt = _segments(path)

    def train_fn(m, seg: Segment) -> float | None:
        seg_cfg = OmegaConf.merge(cfg.train, {"epochs": 1, "patience": 0, "max_steps": seg.steps or 0})
        fp = config_fingerprint({"segment": seg.index, "lang": lang, "seed": cfg.seed})
        state = fit(
            m,
            train,
            dev,
            collate,
            metric,
            seg_cfg,
            ckpt / f"seg{seg.index}",
            cfg.seed * 1000 + seg.index,
            fp,
            on_step_end=lambda _s: seg.after_step(),
            precision=cfg.precision,
        )
        return state.best_score

    result = imp_prune(
        model,
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        train_fn,
        cfg.pruning,
        num_events=events,
        weight_init=cfg.pruning.imp_weight_init,
        seed=cfg.seed,
        state_path=_state(path),
        meta=MaskMeta.from_dict({**meta.to_dict(), "config_hash": config_hash(model)}),
        on_event=lambda h: tracker.log(h),
    )
    _write_json(path, "history", result.history)
    return [result.mask]


METHODS = {"heads": _structured, "heads_mlp": _structured, "magnitude": _magnitude, "imp": _imp}


def _merged_meta(base: MaskMeta, found: MaskMeta, **extra: Any) -> MaskMeta:
    merged = base.to_dict() | {k: v for k, v in found.to_dict().items() if v not in (None, "", {})}
    merged["extra"] = {**base.extra, **found.extra, **extra}
    return MaskMeta.from_dict(merged)


def _write_json(path: Path, what: str, obj: Any) -> None:
    artifacts.write_json(path.with_name(path.name.replace(".safetensors", f".{what}.json")), obj)


def _save_history(path: Path, result: PruneResult) -> None:
    """Every round's importance and mask (safetensors) and scores (JSON): curves, t-SNE, seed stability."""
    tensors = {}
    for r in result.history:
        for kind in ("mask", "importance"):
            for part, t in getattr(r, kind).items():
                tensors[f"round{r.round}/{kind}/{part}"] = t.detach().float().cpu().contiguous()
    target = path.with_name(path.name.replace(".safetensors", ".history.safetensors"))
    with artifacts.atomic_path(target) as tmp:
        save_file(tensors, str(tmp))
    rounds = [
        {
            "round": r.round,
            "phase": r.phase,
            "score": r.score,
            "accepted": r.accepted,
            "kept": r.kept(),
            "tokens": r.tokens,
            "seconds": r.seconds,
        }
        for r in result.history
    ]
    _write_json(path, "history", rounds)


def _summary(mask: Mask, seconds: float) -> dict[str, Any]:
    m = mask.meta
    return {
        "heads_kept": mask.num_heads_kept,
        "heads_total": mask.heads.numel(),
        "mlp_kept": mask.num_kept("mlp") if mask.mlp is not None else None,
        "mlp_total": mask.mlp.numel() if mask.mlp is not None else None,
        "weights_kept": mask.fraction("weights") if mask.weights else None,
        "score_before": m.score_before,
        "score_after": m.score_after,
        "rounds": m.rounds,
        "seconds": seconds,
        "method": m.method,
    }


def results_table(cfg: DictConfig, results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for lang, r in results.items():
        mlp = f"{r['mlp_kept']}/{r['mlp_total']}" if r["mlp_kept"] is not None else "-"
        kept = f"{r['heads_kept']}/{r['heads_total']}"
        if r["weights_kept"] is not None:
            kept += f" ({100 * r['weights_kept']:.0f}% w)"
        before, after = r["score_before"], r["score_after"]
        score = f"{before:.4f} -> {after:.4f}" if before is not None and after is not None else "-"
        rows.append([lang, kept, mlp, score, r["rounds"], f"{r['seconds']:.1f}"])
    title = f"prune {cfg.task.name} / {cfg.model.name} / {cfg.pruning.method} / seed {cfg.seed}"
    headers = [
        "lang",
        "heads kept",
        "MLPs kept",
        f"{task_metric(cfg.task).name} unpruned -> pruned",
        "rounds",
        "s",
    ]
    return format_table(headers, rows, title) + f"\nmasks: {mask_path(cfg, '<lang>').parent.parent}\n"
