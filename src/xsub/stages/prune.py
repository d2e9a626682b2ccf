"""stage=prune: the subnetwork of a finetuned model for each language of the run.

`python -m xsub stage=prune task=marc lang=zh` finds the finetuned (model, task) run its own config
names (`stage=prune train.lr=5e-3` reads the run trained with lr=5e-3; `pruning.model_langs=own` the
run trained on zh alone, `all` the multilingual one), samples `pruning.n_examples`
training examples of that one language (by seed), and prunes by `pruning.method`. Each language's
mask is a store artifact, masks/<model>/<task>/<method>/<lang>/seed<s>/<hash>/, whose identity
contains the model run's: `mask.safetensors` (+ `.json` sidecar), `history.*` (every round's
importance, mask and score), for magnitude pruning also `random.*` and `bad.*` baselines. IMP
records its ticket's quality (the final mask retrained from the rewind point, beside the dense model
trained the same way) in the mask's metadata, history.json and DONE.json. Every round
is checkpointed, so a killed job resumes at its last round and ends with the identical mask.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from xsub import store, tracking
from xsub.config import selected_languages
from xsub.tables import format_table

if TYPE_CHECKING:
    import datasets
    import torch

    from xsub.mask import Mask, MaskMeta

# The data, model, metric and pruning modules (datasets, transformers, torchmetrics) and torch itself
# (through the Mask type) are imported where they are used, so a finished prune is skipped in about 2 s:
# its results row comes from DONE.json.

log = logging.getLogger(__name__)

METRIC_NAMES = {"classification": "accuracy", "ner": "f1", "mlm": "perplexity"}  # xsub.metrics' names
MASK = "mask.safetensors"  # the subnetwork; magnitude pruning adds random.safetensors and bad.safetensors


def pruning_batches(cfg: DictConfig, lang: str, tokenizer) -> list[dict[str, Any]]:
    """`n_examples` training examples of one language, sampled by seed, batched once in length order.

    Materialised once so every round sees the same batches (and, for MLM, the same masked tokens);
    sorting by length keeps padding (work on pad tokens) to a minimum.
    """
    from xsub.data import load_split
    from xsub.data.encode import encode
    from xsub.trainer import Collator

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
    lcfg = store.upstream(cfg, "prune", lang=lang)
    key = store.mask_key(lcfg, lang)
    with store.claim(cfg, key, force=cfg.force) as job:
        if job.done is not None:
            log.info("already pruned: %s (force=true to redo)", job.path)
            if "result" in job.done:  # the row of the results table, recorded when it was made
                return {**job.done["result"], "seconds": 0.0, "path": str(job.path)}
            from xsub.mask import Mask

            return _summary(Mask.load(job.path / MASK), job.path, seconds=0.0)
        from xsub.mask import Mask, MaskMeta

        start = time.perf_counter()
        partial = job.start()
        meta = MaskMeta(
            model_id=cfg.model.name,
            task=cfg.task.name,
            lang=lang,
            seed=cfg.seed,
            method=str(cfg.pruning.method),
            extra={
                "model_seed": store.model_seed(cfg),
                "n_examples": cfg.pruning.get("n_examples"),  # IMP trains on the whole split
                "store_id": key.id,
                "precision": store.precision_of(cfg),
            },
        )
        with tracking.start(cfg, "prune", name=f"prune-{cfg.task.name}-{lang}-s{cfg.seed}") as tracker:
            checkpoint = store.Checkpoint(partial / "rounds.pt", key.id)
            files = METHODS[cfg.pruning.method](lcfg, lang, meta, job, checkpoint, tracker)
            mask = files[MASK]
            result = _summary(mask, job.path, seconds=time.perf_counter() - start)
            record: dict[str, Any] = {"mask": MASK, "summary": mask.summary(), "result": result}
            if mask.meta.method == "imp":
                record["ticket"] = _ticket_record(mask)
            with job.commit(record) as tmp:
                for name, obj in files.items():
                    if isinstance(obj, Mask):
                        obj.save(tmp / name)
                    elif isinstance(obj, dict) and name.endswith(".safetensors"):
                        from safetensors.torch import save_file

                        save_file(obj, str(tmp / name))
                    else:
                        (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            saved = job.path / MASK
            tracker.artifact(
                f"mask-{cfg.model.name}-{cfg.task.name}-{cfg.pruning.method}-{lang}-s{cfg.seed}",
                "mask",
                [saved, saved.with_suffix(".json")],
                mask.summary(),
            )
            summary = _summary(mask, job.path, seconds=time.perf_counter() - start)
            tracker.summary(summary)
        return summary


def _finetuned(cfg: DictConfig, lang: str, meta: MaskMeta, job: store.Claim) -> tuple[Any, Any, torch.device]:
    """The finetuned model to prune (structured, magnitude, Wanda), on the run's device: the run
    trained on `lang` alone (`pruning.model_langs=own`) or on all languages (`all`)."""
    from xsub.model import config_hash, load_finetuned, placement
    from xsub.trainer import pick_device

    key = store.pruned_model_key(cfg, lang)
    on = key.field("langs")
    placing = placement.load_kwargs(cfg.model, store.root(cfg))
    try:
        with job.read(key, f"finetuned {cfg.model.name} for task {cfg.task.name} on {on}") as directory:
            model, tokenizer = load_finetuned(directory / "model", cfg.task.kind, placement=placing)
    except store.Missing as err:
        if cfg.pruning.model_seed >= 0 or cfg.seed == 0:
            raise
        raise store.Missing(
            f"{err}; or prune a model of another seed with this pruning seed: pruning.model_seed=0"
        ) from err
    meta.config_hash = config_hash(model)
    meta.extra["finetuned"] = key.id
    meta.extra["model_langs"] = store.model_langs(cfg)
    return model, tokenizer, placement.place(model, pick_device(cfg.train.device))


def _chance_guard(cfg: DictConfig, lang: str, loader) -> Any:
    """A check of the unpruned score: refuses, in one line, a classifier within noise of chance."""
    from xsub import sanity

    chance = sanity.chance_of(loader) if METRIC_NAMES.get(cfg.task.kind) == "accuracy" else None
    what = f"the finetuned {cfg.model.name} on {cfg.task.name} {lang} (pruning data)"
    return lambda score: sanity.refuse_if_chance(score, chance, what, cfg.pruning.allow_chance)


def _structured(cfg, lang, meta, job, checkpoint, tracker) -> dict[str, Any]:
    from xsub.metrics import task_metric
    from xsub.pruning.structured import prune_heads

    model, tokenizer, device = _finetuned(cfg, lang, meta, job)
    loader = pruning_batches(cfg, lang, tokenizer)
    guard = _chance_guard(cfg, lang, loader)

    def on_round(r) -> None:
        if r.round == 0:
            guard(r.score)
        tracker.log({"round": r.round, "score": r.score, "kept": r.kept(), "accepted": r.accepted})

    result = prune_heads(
        model,
        loader,
        task_metric(cfg.task),
        device,
        cfg.pruning,
        checkpoint=checkpoint,
        mlm=cfg.task.kind == "mlm",
        precision=store.precision_of(cfg),
        on_round=on_round,
    )
    guard(result.history[0].score)  # a run resumed past round 0 is checked here
    mask = result.mask
    mask.meta = _merged_meta(meta, mask.meta, tokens_per_s=result.tokens_per_s)
    return {MASK: mask, **_history(result)}


def _magnitude(cfg, lang, meta, job, checkpoint, tracker) -> dict[str, Any]:
    from xsub.metrics import task_metric
    from xsub.pruning.magnitude import magnitude_prune
    from xsub.trainer import score_batches

    model, tokenizer, device = _finetuned(cfg, lang, meta, job)
    loader = pruning_batches(cfg, lang, tokenizer)
    metric = task_metric(cfg.task)
    guard, scored = _chance_guard(cfg, lang, loader), []

    def evaluate(m) -> float:
        score = score_batches(m, loader, metric, device, store.precision_of(cfg))[metric.name]
        if not scored:  # the first evaluation is the unpruned model's
            guard(score)
        scored.append(score)
        return score

    result = magnitude_prune(
        model,
        evaluate,
        cfg.pruning,
        checkpoint=checkpoint,
        seed=cfg.seed,
        higher_is_better=metric.higher_is_better,
        meta=meta,
        on_round=lambda h: tracker.log(h),
    )
    if result.mask.meta.score_before is not None:
        guard(result.mask.meta.score_before)  # a run resumed past its unpruned score is checked here
    return {
        MASK: result.mask,
        "random.safetensors": result.random,
        "bad.safetensors": result.bad,
        "history.json": result.history,
    }


def _wanda(cfg, lang, meta, job, checkpoint, tracker) -> dict[str, Any]:
    """Sun et al. 2024: per-row |W|·‖X‖₂ on this language's calibration tokens (no retraining)."""
    from xsub.metrics import task_metric
    from xsub.pruning.wanda import wanda_prune
    from xsub.subnetwork import masked
    from xsub.trainer import score_batches

    model, tokenizer, device = _finetuned(cfg, lang, meta, job)
    loader = pruning_batches(cfg, lang, tokenizer)
    metric = task_metric(cfg.task)
    precision = store.precision_of(cfg)
    before = score_batches(model, loader, metric, device, precision)[metric.name]
    mask, history = wanda_prune(model, loader, cfg.pruning, device, precision=precision, meta=meta)

    with masked(model, mask):
        after = score_batches(model, loader, metric, device, precision)[metric.name]
    mask.meta.score_before, mask.meta.score_after = before, after
    tracker.log({"sparsity": mask.meta.extra["sparsity"], "score": after})
    return {MASK: mask, "history.json": history}


def _imp_train_data(cfg: DictConfig, lang: str, tokenizer) -> datasets.Dataset:
    """IMP's training data: the language's train split (`model_langs=own`, Foroutan et al. 2022), or
    every language of the task together (`all`, as `stage=train lang=all` trains)."""
    import datasets

    from xsub.data import load_split
    from xsub.data.encode import encode

    langs = [lang] if store.model_langs(cfg) == "own" else list(cfg.task.languages)
    kind, length = cfg.task.kind, cfg.data.max_length
    parts = [encode(load_split(cfg, code, "train"), tokenizer, kind, length) for code in langs]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _imp(cfg, lang, meta, job, checkpoint, tracker) -> dict[str, Any]:
    """IMP with rewinding while finetuning the *pretrained* model on this language (Foroutan et al.)."""
    from xsub.data import load_split
    from xsub.data.encode import encode
    from xsub.mask import MaskMeta
    from xsub.metrics import task_metric
    from xsub.model import config_hash, load_model
    from xsub.pruning.imp import Segment, imp_num_events, imp_prune
    from xsub.trainer import Collator, fit

    pretrained = None
    pre_key = store.pretrain_key(store.upstream(cfg, "train", lang=lang, mask="none"))
    if pre_key is not None:
        with job.read(pre_key, "pretrained model") as directory:
            pretrained = directory / "model"
    model, tokenizer = load_model(
        cfg.model, cfg.task.kind, cfg.task.num_labels, store.root(cfg), seed=cfg.seed, checkpoint=pretrained
    )
    train = _imp_train_data(cfg, lang, tokenizer)
    dev = {lang: encode(load_split(cfg, lang, "dev"), tokenizer, cfg.task.kind, cfg.data.max_length)}
    collate = Collator(tokenizer, cfg.task.kind, cfg.data.mlm_probability, seed=cfg.seed)
    metric = task_metric(cfg.task)
    steps_per_epoch = -(-len(train) // cfg.train.batch_size)
    events = imp_num_events(cfg.pruning)

    def train_fn(m, seg: Segment) -> float | None:
        # one full finetuning per segment (pruning.imp_epochs or train.epochs; Foroutan et al.: 3 epochs),
        # or seg.steps steps
        full = int(cfg.pruning.imp_epochs) or cfg.train.epochs
        epochs = -(-seg.steps // steps_per_epoch) if seg.steps else full
        seg_cfg = OmegaConf.merge(cfg.train, {"epochs": epochs, "patience": 0, "max_steps": seg.steps or 0})
        name = "ticket" if seg.index == events else f"seg{seg.index}"
        state = fit(
            m,
            train,
            dev,
            collate,
            metric,
            seg_cfg,
            checkpoint.child(name),
            cfg.seed * 1000 + seg.index,
            precision=store.precision_of(cfg),
            on_step_end=lambda _s: seg.after_step(),
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
        retrain=bool(cfg.pruning.imp_retrain),
        checkpoint=checkpoint,
        meta=MaskMeta.from_dict({**meta.to_dict(), "config_hash": config_hash(model)}),
        on_event=lambda h: tracker.log(h),
    )
    mask = result.mask
    mask.meta.score_before, mask.meta.score_after = result.full, result.ticket
    history = {"events": result.history, "full": result.full, "ticket": result.ticket}
    tracker.summary({"imp_full_dev": result.full, "imp_ticket_dev": result.ticket})
    return {MASK: mask, "history.json": history}


def _neuron_model(cfg: DictConfig, meta: MaskMeta, job: store.Claim) -> tuple[Any, Any, torch.device]:
    """The language model whose neurons are scored (`pruning.model`, `store.neuron_model_key`)."""
    from xsub.model import config_hash, load_finetuned, load_model, placement
    from xsub.trainer import pick_device

    key = store.neuron_model_key(cfg)
    if key is None:  # the released weights, as the hub (or a local folder) holds them
        model, tokenizer = load_model(cfg.model, cfg.task.kind, cfg.task.num_labels, store.root(cfg), seed=0)
        meta.extra["scored_model"] = f"released {cfg.model.get('path') or cfg.model.name}"
    else:
        kind = key.settings_dict()["task"]["kind"]
        placing = placement.load_kwargs(cfg.model, store.root(cfg))
        with job.read(key, f"{cfg.model.name} trained on {key.field('task')} (all languages)") as directory:
            model, tokenizer = load_finetuned(directory / "model", kind, placement=placing)
        meta.extra["scored_model"] = key.id
    meta.config_hash = config_hash(model)
    return model, tokenizer, placement.place(model, pick_device(cfg.train.device))


def _corpus(cfg: DictConfig, lang: str, tokenizer) -> list[dict[str, Any]]:
    """LAPE: the language's train text in order up to `n_tokens` tokens; AP: `n_texts` texts by seed
    (on a causal-LM task a text is one `data.max_length` block of joined documents, as it is encoded).
    Batched in length order without any MLM masking (the statistics read the text as it is)."""
    from xsub.data import load_split
    from xsub.data.encode import encode, pad_collate

    p = cfg.pruning
    ds = load_split(cfg, lang, "train")
    if p.method == "lang_ap":
        ds = ds.shuffle(seed=cfg.seed).select(range(min(int(p.n_texts), len(ds))))
    keep = ("input_ids", "attention_mask", "token_type_ids")
    enc = encode(ds, tokenizer, cfg.task.kind, cfg.data.max_length).with_format(None)
    columns = {k: enc[k] for k in keep if k in enc.column_names}  # plain lists: no per-row conversion
    lengths = [len(ids) for ids in columns["input_ids"]]
    if p.method == "lape":
        total, n = 0, 0
        while n < len(lengths) and total < p.n_tokens:
            total, n = total + lengths[n], n + 1
        lengths = lengths[:n]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    collate, size = pad_collate(tokenizer), int(p.batch_size)
    rows = [{k: v[i] for k, v in columns.items()} for i in order]
    return [collate(rows[j : j + size]) for j in range(0, len(rows), size)]


def _statistics(cfg: DictConfig, lang: str, scored: tuple, job: store.Claim):
    """One language's neuron statistics, from the store or one forward pass (then stored)."""
    from safetensors.torch import load_file, save_file

    from xsub.neurons import Statistics, collect

    key = store.activations_key(cfg, lang)
    with store.claim(cfg, key) as stats_job:
        if stats_job.done is None:
            model, tokenizer, device = scored
            start = time.perf_counter()
            batches = _corpus(cfg, lang, tokenizer)
            stats = collect(
                model, batches, device, store.precision_of(cfg), per_text=cfg.pruning.method == "lang_ap"
            )
            seconds = time.perf_counter() - start
            log.info(
                "%s statistics of %s: %d tokens in %.1f s", cfg.pruning.method, lang, stats.tokens, seconds
            )
            record = {"tokens": stats.tokens, "seconds": seconds}
            with stats_job.commit(record) as tmp:
                save_file(stats.tensors(), str(tmp / "statistics.safetensors"))
    with job.read(key, f"{lang} neuron statistics") as directory:
        return Statistics.from_tensors(load_file(str(directory / "statistics.safetensors")))


def _neurons(cfg, lang, meta, job, checkpoint, tracker) -> dict[str, Any]:
    """Language neurons (LAPE, Tang et al. 2024; AP, Kojima et al. 2024): every language's statistics
    (each stored once, so another language list re-selects without a pass), then the joint selection."""
    from xsub.model import gate_shape
    from xsub.pruning import lang_ap, lape
    from xsub.pruning.neuron_masks import neuron_mask

    p = cfg.pruning
    if p.method == "lape" and p.neurons_file:
        return _imported_neurons(cfg, lang, meta, job)
    langs = store.neuron_languages(cfg)
    scored = _neuron_model(cfg, meta, job)
    shape = gate_shape(scored[0])
    stats = {k: _statistics(cfg, k, scored, job) for k in langs}
    tokens = {k: s.tokens for k, s in stats.items()}
    if p.method == "lape":
        probs = lape.probabilities({k: s.over_zero for k, s in stats.items()}, tokens, langs)
        member = lape.select(probs, p.top_rate, p.filter_rate, p.activation_bar_ratio)
        if not member.any():
            from xsub.config import ConfigError

            tau = lape.rank_value(probs.flatten(), p.filter_rate)
            raise ConfigError(
                f"LAPE selected no neuron: the activation probability at rank {p.filter_rate} is {tau:.4f} "
                "and none of the lowest-entropy neurons is above it and the bar (saturated neurons); lower "
                "pruning.filter_rate and pruning.activation_bar_ratio, e.g. 0.9"
            )
        neurons, scores = member[langs.index(lang)], {"probability": probs.float()}
        history = {
            "selected": int(member.any(0).sum()),
            "per_language": dict(zip(langs, member.sum((1, 2)).tolist())),
        }
    else:
        ap = lang_ap.average_precision({k: s.text_means for k, s in stats.items()}, lang)
        neurons, scores = lang_ap.select(ap, int(p.top_k)), {"average_precision": ap.float()}
        history = {
            "ap_top": float(ap.max()),
            "ap_bottom": float(ap.min()),
            "texts": {k: len(s.text_means) for k, s in stats.items()},
        }
    history |= {"tokens": tokens, "languages": langs}
    mask = neuron_mask(neurons, shape.num_heads, meta, languages=langs, tokens=tokens)
    tracker.log({"language_neurons": mask.meta.extra["language_neurons"]})
    return {
        MASK: mask,
        "scores.safetensors": {k: v.contiguous() for k, v in scores.items()},
        "history.json": history,
    }


def _imported_neurons(cfg: DictConfig, lang: str, meta: MaskMeta, job: store.Claim) -> dict[str, Any]:
    """LAPE's released neuron file as this language's mask (the file's content is the identity); the
    model it is for gives the shapes the file is checked against."""
    from xsub.config import ConfigError
    from xsub.mask_import import import_lape_neurons
    from xsub.model import gate_shape

    p = cfg.pruning
    model = _neuron_model(cfg, meta, job)[0]
    shape = gate_shape(model)
    masks = import_lape_neurons(
        p.neurons_file,
        num_heads=shape.num_heads,
        intermediate_size=shape.intermediate_size,
        num_layers=shape.num_layers,
        langs=list(p.file_langs) or None,
        **{k: v for k, v in meta.to_dict().items() if k in ("model_id", "task", "seed", "extra")},
    )
    if lang not in masks:
        raise ConfigError(
            f"{p.neurons_file} has no neurons of {lang}; its languages (pruning.file_langs): {list(masks)}"
        )
    mask = masks[lang]
    mask.meta.config_hash = meta.config_hash
    return {MASK: mask, "history.json": {"imported_from": mask.meta.extra["imported_from"]}}


def _ticket_record(mask: Mask) -> dict[str, Any]:
    """IMP's lottery-ticket check for DONE.json: the final mask retrained from the rewind point."""
    full, ticket = mask.meta.extra.get("full"), mask.meta.extra.get("ticket")
    return {
        "sparsity": mask.meta.extra.get("sparsity"),
        "split": "dev",
        "full_model": full,  # the dense model finetuned from the rewind point the same way (segment 1)
        "ticket": ticket,
        "ratio": ticket / full if isinstance(full, float) and isinstance(ticket, float) and full else None,
    }


METHODS = {
    "heads": _structured,
    "heads_mlp": _structured,
    "magnitude": _magnitude,
    "imp": _imp,
    "wanda": _wanda,
    "lape": _neurons,
    "lang_ap": _neurons,
}


def _merged_meta(base: MaskMeta, found: MaskMeta, **extra: Any) -> MaskMeta:
    from xsub.mask import MaskMeta

    merged = base.to_dict() | {k: v for k, v in found.to_dict().items() if v not in (None, "", {})}
    merged["extra"] = {**base.extra, **found.extra, **extra}
    return MaskMeta.from_dict(merged)


def _history(result: Any) -> dict[str, Any]:  # a pruning.structured.PruneResult
    """Every round's importance and mask (safetensors) and scores (JSON): curves, t-SNE, seed stability."""
    tensors = {}
    for r in result.history:
        for kind in ("mask", "importance"):
            for part, t in getattr(r, kind).items():
                tensors[f"round{r.round}/{kind}/{part}"] = t.detach().float().cpu().contiguous()
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
    return {"history.safetensors": tensors, "history.json": rounds}


def _summary(mask: Mask, where: Path, seconds: float) -> dict[str, Any]:
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
        "precision": m.extra.get("precision", ""),
        "path": str(where),
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
    precision = next(
        (r["precision"] for r in results.values() if r.get("precision")), store.precision_of(cfg)
    )
    data = (
        f"; scored on {cfg.pruning.n_examples} train examples per language, the pruning data"
        if "n_examples" in cfg.pruning
        else ""
    )
    title = f"prune {cfg.task.name} / {cfg.model.name} / {cfg.pruning.method} / seed {cfg.seed}"
    title += f" ({precision}{data})"
    headers = [
        "lang",
        "heads kept",
        "MLPs kept",
        f"{METRIC_NAMES.get(cfg.task.kind, 'score')} unpruned -> pruned",
        "rounds",
        "s",
    ]
    where = "".join(f"\n  {lang}: {r['path']}" for lang, r in results.items())
    note = ""
    if str(cfg.pruning.method) == "imp":
        note = (
            "\nIMP: dev score of the full model (finetuned from the rewind point) -> the ticket (the final "
            "mask retrained from the rewind point the same way), as the lottery-ticket protocol measures"
        )
    elif str(cfg.pruning.method) == "wanda":
        note = "\nWanda: score on the calibration examples, full model -> with the mask (no retraining)"
    return format_table(headers, rows, title) + note + f"\nmasks:{where}\n"
