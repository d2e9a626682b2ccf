"""stage=train: finetune a model on a task in one, several or all of its languages.

The run is a store artifact, models/<model>/<task>/<langs>/seed<s>/<hash>/, keyed by every setting that
shapes the weights (xsub.store.model_key): `model/` (save_pretrained + tokenizer; `mask.safetensors`
for a subnetwork), `metrics.json` (dev and test per language, history), `config.yaml`, DONE.json, and
with `train.save_steps=[k, ...]` `steps/step<k>/` taken after optimiser step k. A finished run is
reused; a killed one resumes from its last epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xsub import store, tracking
from xsub.config import selected_languages
from xsub.tables import format_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    key = store.model_key(cfg)
    with store.claim(cfg, key, force=cfg.force) as job:
        if job.done is not None:
            log.info("already trained: %s (force=true to redo)", job.path)
            metrics = json.loads((job.path / "metrics.json").read_text())
        else:
            metrics = _train(cfg, job)
    print(results_table(cfg, metrics, job.path))
    return metrics


def _pretrained(cfg: DictConfig, job: store.Claim) -> Path | None:
    """The embedded model's pretraining run this one starts from (read under its shared lock)."""
    key = store.pretrain_key(cfg)
    if key is None:
        return None
    with job.read(key, "pretrained model") as directory:
        return directory / "model"


def _train(cfg: DictConfig, job: store.Claim) -> dict[str, Any]:
    # imported here, not at the top: a finished run is skipped without loading torch, datasets or
    # transformers (the skip answers in about 2 s)
    import datasets

    from xsub import subnetwork
    from xsub.data import load_split, text_definition
    from xsub.data.encode import encode
    from xsub.mask_sources import resolve
    from xsub.metrics import task_metric
    from xsub.model import load_model, placement, reinit_weights
    from xsub.trainer import Collator, evaluate, fit, pick_device

    langs = selected_languages(cfg)
    task = cfg.task
    raw = {role: {lang: load_split(cfg, lang, role) for lang in langs} for role in ("train", "dev", "test")}
    model_cfg = cfg.model
    if model_cfg.pretrain_task == task.name:  # this run *is* the pretraining: start from scratch
        model_cfg = OmegaConf.merge(model_cfg, {"pretrain_task": ""})
    checkpoint = _pretrained(cfg, job)
    model, tokenizer = load_model(
        model_cfg, task.kind, task.num_labels, store.root(cfg), seed=cfg.seed, checkpoint=checkpoint
    )
    if cfg.train.weight_init == "rand":
        reinit_weights(model, cfg.seed)
    mask = resolve(cfg, job)
    length = cfg.data.max_length
    enc = {r: {lang: encode(ds, tokenizer, task.kind, length) for lang, ds in raw[r].items()} for r in raw}
    train_ds = datasets.concatenate_datasets(list(enc["train"].values()))
    collate = Collator(tokenizer, task.kind, cfg.data.mlm_probability, seed=cfg.seed)
    metric = task_metric(task, tokenizer)  # a causal LM also reports bits per byte
    partial = job.start()
    state_file = store.Checkpoint(partial / "fit.pt", job.key.id)
    log.info(
        "training %s on %s (%d examples, %s, %s) -> %s",
        cfg.model.name,
        task.name,
        len(train_ds),
        " ".join(langs),
        store.precision_of(cfg),
        job.path,
    )
    with (
        tracking.start(cfg, "train", name=f"train-{task.name}-{'+'.join(langs)}-s{cfg.seed}") as tracker,
        subnetwork.training(model, mask) as fixed,
    ):
        state = fit(
            model,
            train_ds,
            enc["dev"],
            collate,
            metric,
            cfg.train,
            state_file,
            cfg.seed,
            precision=store.precision_of(cfg),
            on_epoch_end=lambda s: tracker.log({"epoch": s.epoch, **s.history[-1]}, step=s.step),
            on_step_end=lambda s: _snapshot(s.step, cfg, model, tokenizer, mask, fixed, partial),
        )
        device = placement.place(model, pick_device(cfg.train.device))
        results: dict[str, Any] = {
            "metric": metric.name,
            "best_epoch": state.best_epoch,
            "history": state.history,
            "precision": store.precision_of(cfg),
        }
        for role in ("dev", "test"):
            results[role] = {
                lang: evaluate(
                    model, ds, collate, metric, device, cfg.train.eval_batch_size, store.precision_of(cfg)
                )
                for lang, ds in enc[role].items()
            }
        results["languages"] = langs
        results["n"] = {role: {lang: len(ds) for lang, ds in enc[role].items()} for role in ("dev", "test")}
        texts = {lang: text_definition(ds) for lang, ds in raw["test"].items() if text_definition(ds)}
        if texts:  # which input text the scores are of (e.g. MARC: title + body, or body only)
            results["text"] = texts
        if mask is not None:
            results["mask"] = mask.summary() | {"source": cfg.mask.source}
        with job.commit({"metrics": "metrics.json"}) as tmp:
            _save_model(tmp, model, tokenizer, mask, fixed)
            (tmp / "metrics.json").write_text(
                json.dumps(results, indent=2, sort_keys=True, default=str) + "\n"
            )
            if (partial / "steps").is_dir():
                shutil.copytree(partial / "steps", tmp / "steps")
        tracker.summary({"dev": results["dev"], "test": results["test"]})
    return results


def _save_model(directory: Path, model, tokenizer, mask, fixed) -> None:
    """`model/` (weights + tokenizer) and, for a subnetwork, its mask beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    if fixed is not None:
        fixed.apply()  # saved weights are exactly the subnetwork's
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    if mask is not None:  # the weights alone are not the subnetwork: keep the gates' mask with them
        mask.save(directory / "mask.safetensors")


def _snapshot(step: int, cfg: DictConfig, model, tokenizer, mask, fixed, partial: Path) -> None:
    """The model after optimiser step `step`, if asked for; kept in the run's partial state (a resumed
    run writes it again, identically) and moved into the run when it finishes."""
    if step not in cfg.train.save_steps:
        return
    with store.atomic_path(partial / "steps" / f"step{step}") as tmp:
        _save_model(tmp, model, tokenizer, mask, fixed)
    log.info("step %d: model kept", step)


def results_table(cfg: DictConfig, metrics: dict[str, Any], out: Path) -> str:
    name = metrics["metric"]
    n = metrics.get("n", {})  # examples evaluated per split and language (older runs lack it)
    count = {role: n.get(role, {}) for role in ("dev", "test")}
    rows = [
        [
            lang,
            metrics["dev"][lang][name],
            count["dev"].get(lang, ""),
            metrics["test"][lang][name],
            count["test"].get(lang, ""),
        ]
        for lang in metrics["languages"]
    ]
    precision = metrics.get("precision", "fp32")
    caps = [f"{k} {cfg.data[k]}" for k in ("max_train_examples", "max_eval_examples") if cfg.data[k]]
    title = (
        f"{cfg.task.name} / {cfg.model.name} / seed {cfg.seed}: {name} "
        f"(best epoch {metrics['best_epoch']}, {precision}{', data.' + ', data.'.join(caps) if caps else ''})"
    )
    headers = ["lang", f"dev {name}", "dev n", f"test {name}", "test n"]
    return format_table(headers, rows, title) + f"\nsaved: {out}\n"
