"""stage=train: finetune a model on a task in one, several or all of its languages.

Output: artifacts/models/<model>/<task>/seed<s>/ (lang=all) or .../lang-<a+b>/seed<s>/ with
`model/` (save_pretrained + tokenizer), `metrics.json` (dev and test per language, history),
`config.yaml` and DONE.json, and with `train.save_steps=[k, ...]` `steps/step<k>/` (model + mask) taken
after optimiser step k (interpolation endpoints at different training steps). A finished run is
skipped; a killed one resumes from its last epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import datasets
from omegaconf import DictConfig, OmegaConf

from xsub import artifacts, tracking
from xsub.config import selected_languages
from xsub.data import load_split
from xsub.data.encode import encode
from xsub.mask_sources import fix_for_training, resolve, source_label
from xsub.metrics import task_metric
from xsub.model import load_model
from xsub.pruning.magnitude import reinit_weights
from xsub.tables import format_table
from xsub.trainer import Collator, config_fingerprint, evaluate, fit, pick_device

log = logging.getLogger(__name__)


def output_dir(cfg: DictConfig) -> Path:
    """Where (model, task, languages, data half, mask, init, seed) is stored; lang=all on the whole train
    split from pretrained weights without a mask is the default, unsuffixed model."""
    parts = [
        "" if "all" in cfg.lang else "lang-" + "+".join(selected_languages(cfg)),
        f"half{cfg.data.split_half}" if cfg.data.split_half else "",
        source_label(cfg),
        "init-rand" if cfg.train.weight_init == "rand" else "",
    ]
    variant = "/".join(p for p in parts if p)
    return artifacts.model_dir(artifacts.root(cfg), cfg.model.name, cfg.task.name, cfg.seed, variant)


def command_for(cfg: DictConfig) -> str:
    """The command line that makes this stage's artifact (quoted in other stages' errors)."""
    return f"python -m xsub stage=train task={cfg.task.name} model={cfg.model.name} seed={cfg.seed}"


def run(cfg: DictConfig) -> dict[str, Any]:
    out = output_dir(cfg)
    with artifacts.lock(out):
        if artifacts.is_done(out) and not cfg.force:
            log.info("already trained: %s (force=true to redo)", out)
            metrics = json.loads((out / "metrics.json").read_text())
        else:
            metrics = _train(cfg, out)
    print(results_table(cfg, metrics, out))
    return metrics


def _train(cfg: DictConfig, out: Path) -> dict[str, Any]:
    root = artifacts.root(cfg)
    langs = selected_languages(cfg)
    task = cfg.task
    raw = {role: {lang: load_split(cfg, lang, role) for lang in langs} for role in ("train", "dev", "test")}
    model_cfg = cfg.model
    if model_cfg.pretrain_task == task.name:  # this run *is* the pretraining: start from scratch
        model_cfg = OmegaConf.merge(model_cfg, {"pretrain_task": ""})
    model, tokenizer = load_model(model_cfg, task.kind, task.num_labels, root, seed=cfg.seed)
    if cfg.train.weight_init == "rand":
        reinit_weights(model, cfg.seed)
    mask = resolve(cfg)
    masker = fix_for_training(model, mask) if mask is not None else None
    length = cfg.data.max_length
    enc = {r: {lang: encode(ds, tokenizer, task.kind, length) for lang, ds in raw[r].items()} for r in raw}
    train_ds = datasets.concatenate_datasets(list(enc["train"].values()))
    collate = Collator(tokenizer, task.kind, cfg.data.mlm_probability, seed=cfg.seed)
    metric = task_metric(task)
    settings = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "lang", "model", "data", "mask")
    }
    # which steps are kept does not change training: a resumed run may ask for other ones
    settings["train"] = {
        k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items() if k != "save_steps"
    }
    fingerprint = config_fingerprint(settings | {"seed": cfg.seed})
    ckpt = out.with_name(out.name + ".checkpoint")
    if cfg.force and ckpt.exists():
        shutil.rmtree(ckpt)
    tracker = tracking.start(cfg, "train", name=f"train-{task.name}-{'+'.join(langs)}-s{cfg.seed}")
    log.info(
        "training %s on %s (%d examples, %s) -> %s",
        cfg.model.name,
        task.name,
        len(train_ds),
        " ".join(langs),
        out,
    )
    state = fit(
        model,
        train_ds,
        enc["dev"],
        collate,
        metric,
        cfg.train,
        ckpt,
        cfg.seed,
        fingerprint,
        on_epoch_end=lambda s: tracker.log({"epoch": s.epoch, **s.history[-1]}, step=s.step),
        on_step_end=lambda s: _snapshot(s.step, cfg, model, tokenizer, mask, masker, ckpt),
        precision=cfg.precision,
    )
    device = pick_device(cfg.train.device)
    results: dict[str, Any] = {
        "metric": metric.name,
        "best_epoch": state.best_epoch,
        "history": state.history,
    }
    for role in ("dev", "test"):
        results[role] = {
            lang: evaluate(model, ds, collate, metric, device, cfg.train.eval_batch_size, cfg.precision)
            for lang, ds in enc[role].items()
        }
    results["languages"] = langs
    if mask is not None:
        results["mask"] = mask.summary() | {"source": cfg.mask.source}
    with artifacts.atomic_path(out) as tmp:
        _save_model(tmp, model, tokenizer, mask, masker)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        artifacts.write_json(tmp / "metrics.json", results)
        if (ckpt / "steps").is_dir():
            shutil.copytree(ckpt / "steps", tmp / "steps")
        artifacts.write_json(tmp / artifacts.DONE, {"fingerprint": fingerprint, "metrics": "metrics.json"})
    shutil.rmtree(ckpt, ignore_errors=True)
    if masker is not None:
        masker.remove()
    tracker.summary({"dev": results["dev"], "test": results["test"]})
    tracker.finish()
    return results


def _save_model(directory: Path, model, tokenizer, mask, masker) -> None:
    """`model/` (weights + tokenizer) and, for a subnetwork, its mask beside them."""
    directory.mkdir(parents=True)
    if masker is not None:
        masker.apply()  # saved weights are exactly the subnetwork's
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    if mask is not None:  # the weights alone are not the subnetwork: keep the gates' mask with them
        mask.save(directory / "mask.safetensors")


def step_dir(run: Path, step: int) -> Path:
    return run / "steps" / f"step{step}"


def _snapshot(step: int, cfg: DictConfig, model, tokenizer, mask, masker, ckpt: Path) -> None:
    """The model after optimiser step `step`, if asked for; kept beside the resumable checkpoint
    (a resumed run writes it again, identically) and moved into the run when it finishes."""
    if step not in cfg.train.save_steps:
        return
    with artifacts.atomic_path(step_dir(ckpt, step)) as tmp:
        _save_model(tmp, model, tokenizer, mask, masker)
    log.info("step %d: model kept at %s", step, step_dir(ckpt, step))


def results_table(cfg: DictConfig, metrics: dict[str, Any], out: Path) -> str:
    name = metrics["metric"]
    rows = [[lang, metrics["dev"][lang][name], metrics["test"][lang][name]] for lang in metrics["languages"]]
    title = (
        f"{cfg.task.name} / {cfg.model.name} / seed {cfg.seed}: {name} (best epoch {metrics['best_epoch']})"
    )
    return format_table(["lang", f"dev {name}", f"test {name}"], rows, title) + f"\nsaved: {out}\n"
