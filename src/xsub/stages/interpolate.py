"""stage=interpolate: is there a low-loss path between two finetuned models? (Qin et al. 2022)

`python -m xsub stage=interpolate task=synth-cls interpolate.a=[seed:0] interpolate.b=[seed:1]`
Each endpoint is a train-stage run, selected by overrides on top of this run's config (another seed,
`data.split_half=1|2`, `mask.source=...`, `lang=...`, `task=...`, and `step=k` for the model kept after
step k by `train.save_steps`) or by `interpolate.a_path`. Every point
θ(x) = (1−x)θ1 + xθ2, x in linspace(0, 1, points), is evaluated on each selected language's split, on
endpoint A's task (when the tasks differ, A's head is used: the heads are not interpolated). Masked
endpoints: a binary mask cannot be interpolated, so the union (or intersection) of their masks is
applied at every point. Also: L2 / cosine / RMS distance of the ends, per-example forgetting along the
path, and optionally a trained quadratic Bezier curve. Output: the store artifact
interpolate/<model>/<task>/<hash>/, keyed by the settings and both endpoints' identities.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from xsub import plots, store, subnetwork, tracking
from xsub.analysis.interpolate import (
    comparable,
    distances,
    forgetting,
    path,
    path_mask,
    predictions,
    train_bend,
)
from xsub.config import ConfigError, selected_languages
from xsub.data import load_split
from xsub.data.encode import encode
from xsub.mask import Mask
from xsub.metrics import task_metric
from xsub.model import load_finetuned
from xsub.tables import format_table
from xsub.trainer import Collator, pick_device, score_batches

log = logging.getLogger(__name__)


def endpoint_cfg(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The train-stage config this run's command line composes with `key=value` overrides on top
    (`task=`, `lang=`, `seed=` choose another run as they would on the command line).

    `key:value` is accepted too, because Hydra's grammar wants `=` inside a list quoted:
    `interpolate.b=[seed:1,data.split_half:2]` is `'interpolate.b=["seed=1","data.split_half=2"]'`."""
    fields: dict[str, Any] = {}
    rest: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, value = item.partition("=" if "=" in item else ":")
        if not sep:
            raise ConfigError(f"interpolate endpoint override '{item}' is not key=value (or key:value)")
        parsed = yaml.safe_load(value)
        if key == "step":  # not a config key: which kept step of the run (train.save_steps)
            continue
        if key in ("task", "lang", "seed"):
            fields[key] = [str(c) for c in parsed] if isinstance(parsed, list) else parsed
        else:
            rest.append((key, parsed))
    task = str(fields["task"]) if "task" in fields else None
    out = store.upstream(cfg, "train", task=task, lang=fields.get("lang"), seed=fields.get("seed"))
    for key, value in rest:
        if OmegaConf.select(out, key, default="__absent__") == "__absent__":
            raise ConfigError(f"interpolate endpoint override '{key}' is not a config key")
        OmegaConf.update(out, key, value)
    return out


def endpoint(cfg: DictConfig, which: str) -> tuple[Path, store.Key | str]:
    """An endpoint's saved run and its identity (a store key, or a given directory's digest)."""
    given = cfg.interpolate[f"{which}_path"]
    if given:
        run = Path(given).expanduser()
        run = run.parent if run.name == "model" else run
        weights = run / "model" / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"endpoint {which.upper()}: no saved model at {run / 'model'}")
        return run, f"{run}:{store.file_digest(weights)}"
    overrides = [o if "=" in o else o.replace(":", "=", 1) for o in cfg.interpolate[which]]
    steps = [o.partition("=")[2] for o in overrides if o.startswith("step=")]
    key = store.model_key(endpoint_cfg(cfg, overrides))
    run = store.path(cfg, key)
    if store.done(cfg, key) is None:
        raise store.Missing(
            f"endpoint {which.upper()} is not trained at {run}; make it with: {store.command(key)}"
        )
    if steps:
        run = run / "steps" / f"step{steps[-1]}"
        if not (run / "model" / "config.json").is_file():
            keep = store.command(key, force=True) + f" train.save_steps=[{steps[-1]}]"
            raise ConfigError(
                f"endpoint {which.upper()}: step {steps[-1]} was not kept at {run}; retrain: {keep}"
            )
    return run, key


def _mask(run: Path) -> Mask | None:
    return Mask.load(run / "mask.safetensors") if (run / "mask.json").is_file() else None


def run(cfg: DictConfig) -> dict[str, Any]:
    ic = cfg.interpolate
    (run_a, end_a), (run_b, end_b) = endpoint(cfg, "a"), endpoint(cfg, "b")
    settings = OmegaConf.to_container(ic, resolve=True, enum_to_str=True)
    steps = {w: [o for o in ic[w] if str(o).startswith("step")] for w in ("a", "b")}
    settings = {k: v for k, v in settings.items() if k not in ("a", "b", "a_path", "b_path")} | {
        "steps": steps
    }
    key = store.interpolation_key(cfg, [end_a, end_b], settings)
    with contextlib.ExitStack() as held:  # both ends stay readable (shared locks) while in use
        for which, end in (("A", end_a), ("B", end_b)):
            if isinstance(end, store.Key):
                held.enter_context(store.reading(cfg, end, f"endpoint {which} run"))
        with store.claim(cfg, key, force=cfg.force) as job:
            if job.done is not None:
                log.info("already interpolated: %s (force=true to redo)", job.path)
                done = job.done
            else:
                done = _interpolate(cfg, run_a, run_b, job)
    print(f"{done['summary']}\n\nfigures and tables: {job.path}\n")
    return done


def _interpolate(cfg: DictConfig, run_a: Path, run_b: Path, job: store.Claim) -> dict[str, Any]:
    ic = cfg.interpolate
    device = pick_device(cfg.train.device)
    model, tokenizer = load_finetuned(run_a / "model", cfg.task.kind)
    model.to(device)
    sd_a = load_file(str(run_a / "model" / "model.safetensors"))
    sd_b = load_file(str(run_b / "model" / "model.safetensors"))
    names = comparable(sd_a, sd_b)
    dist = distances(sd_a, sd_b, names)
    mask = path_mask(_mask(run_a), _mask(run_b), ic.mask_policy)
    metric = task_metric(cfg.task)
    collate = Collator(tokenizer, cfg.task.kind, cfg.data.mlm_probability, seed=0)
    langs = selected_languages(cfg)
    data = {}
    for lang in langs:
        enc = encode(
            load_split(cfg, lang, "dev" if ic.split == "dev" else "test"),
            tokenizer,
            cfg.task.kind,
            cfg.data.max_length,
        )
        size = cfg.train.eval_batch_size
        data[lang] = [
            collate([enc[i] for i in range(j, min(j + size, len(enc)))]) for j in range(0, len(enc), size)
        ]
    correct: list = []

    def evaluate(m) -> dict[str, float]:
        scores = {
            lang: score_batches(m, b, metric, device, store.precision_of(cfg))[metric.name]
            for lang, b in data.items()
        }
        correct.append(torch.cat([predictions(m, b, device, store.precision_of(cfg)) for b in data.values()]))
        return {**scores, "mean": sum(scores.values()) / len(scores)}

    with (
        tracking.start(cfg, "interpolate", name=f"interpolate-{job.key.hash}") as tracker,
        job.commit() as out,
        subnetwork.masked(model, mask),
    ):
        records = [{"path": "line", **r} for r in path(model, sd_a, sd_b, names, ic.points, evaluate)]
        line_correct = list(correct)
        if ic.curve:
            train = {}
            for lang in langs:
                enc = encode(load_split(cfg, lang, "train"), tokenizer, cfg.task.kind, cfg.data.max_length)
                enc = enc.select(range(min(ic.train_examples, len(enc))))
                bs = cfg.train.batch_size
                train[lang] = [
                    collate([enc[i] for i in range(j, min(j + bs, len(enc)))]) for j in range(0, len(enc), bs)
                ]
            bend, _ = train_bend(
                model,
                sd_a,
                sd_b,
                names,
                [b for v in train.values() for b in v],
                device,
                ic.curve_epochs,
                ic.curve_lr,
                cfg.seed,
                store.precision_of(cfg),
                checkpoint=store.Checkpoint(job.start() / "bend.pt", job.key.id),
            )
            records += [
                {"path": "curve", **r} for r in path(model, sd_a, sd_b, names, ic.points, evaluate, bend)
            ]
        table = pd.DataFrame(records)
        forgot = forgetting(torch.stack(line_correct))
        forgot.insert(
            0, "lang", [lang for lang, b in data.items() for batch in b for _ in range(len(batch["labels"]))]
        )
        table.to_csv(out / "path.csv", index=False)
        forgot.to_csv(out / "forgetting.csv", index=False)
        series = {
            f"{p} {lang}": g[lang].tolist() for p, g in table.groupby("path", sort=False) for lang in langs
        }
        figure = plots.lines(
            series,
            out / "interpolate.png",
            x=[round(x, 3) for x in table[table.path == "line"].x],
            title=f"{metric.name} along θ(x) = (1−x)·A + x·B (L2 {dist['l2']:.2f}, cos {dist['cosine']:.4f})",
            xlabel="x (0 = A, 1 = B)",
            ylabel=metric.name,
            note=f"{cfg.model.name} on {cfg.task.name} · {ic.split} split, n = "
            + ", ".join(f"{lang} {sum(len(b['labels']) for b in data[lang])}" for lang in langs)
            + f" · {ic.points} points",
        )
        tracker.table("path", table)
        tracker.table("forgetting", forgot)
        tracker.image("interpolate", figure)
        line = table[table.path == "line"]
        rows = [[f"{r.x:.2f}", *(getattr(r, lang) for lang in langs), r.mean] for r in line.itertuples()]
        summary = (
            format_table(["x", *langs, "mean"], rows, f"A = {run_a}\nB = {run_b}")
            + f"\ndistance: L2 {dist['l2']:.4f}, cosine {dist['cosine']:.6f}, RMS {dist['rms']:.3e} over "
            f"{int(dist['n_params'])} parameters; forgotten along the path: {int(forgot.forgotten.sum())} of "
            f"{int(forgot.correct_at_start.sum())} examples right at A ({len(forgot)} in all)"
        )
        job.record.update(
            {
                "summary": summary,
                "distances": dist,
                "a": str(run_a),
                "b": str(run_b),
                "figures": [figure.name],
                "tables": ["path.csv", "forgetting.csv"],
            }
        )
        tracker.summary(dist)
    return job.done or {}
