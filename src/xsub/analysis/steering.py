"""Steering by language neurons (Kojima et al. NAACL 2024, "Finding and Controlling Language-Specific
Neurons"): language B's units held at their activation on B's texts while generating from prompts in A.

Per target B: the units B's mask switches off (its language neurons) are held at the `percentile`
(theirs: the median) of their per-text mean activation over `n_texts` of B's texts. Prompts are the first
`prompt_tokens` tokens of `n_prompts` texts of each language A; `new_tokens` are sampled at
`temperature` (seeded). Reported per (A, B): the share of generations identified as B (`xsub.langid`),
the same share without steering, the perplexity of the generated tokens under the unmodified model, and
examples. Causal LMs only.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.config import ConfigError
from xsub.langid import for_task
from xsub.neurons import collect
from xsub.subnetwork import units_fixed
from xsub.tables import format_table


def _prompts(inputs: Inputs, task: str, lang: str, tokenizer) -> torch.Tensor:
    """[n, prompt_tokens] ids: the opening tokens of A's texts (texts shorter than that are skipped)."""
    an = inputs.an
    enc = inputs.encoded(task, lang, an.split, tokenizer).with_format(None)
    ids = [row[: an.prompt_tokens] for row in enc["input_ids"] if len(row) >= an.prompt_tokens + 1]
    if not ids:
        raise ConfigError(
            f"no {lang} text of {an.split} has {an.prompt_tokens + 1} tokens; lower analysis.prompt_tokens"
        )
    return torch.tensor(ids[: an.n_prompts])


def _held_values(inputs: Inputs, task: str, lang: str, model, tokenizer) -> torch.Tensor:
    """[L, I]: the percentile of each unit's per-text mean over B's texts."""
    batches = inputs.batches(task, lang, inputs.an.split, tokenizer, n=inputs.an.n_texts)
    means = collect(model, batches, inputs.device, inputs.precision, per_text=True).text_means
    return torch.quantile(means.float(), inputs.an.percentile / 100, dim=0)


@torch.no_grad()
def _generate(inputs: Inputs, model, prompts: torch.Tensor, seed: int, pad_id: int) -> torch.Tensor:
    an = inputs.an
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=prompts.to(inputs.device),
        attention_mask=torch.ones_like(prompts).to(inputs.device),
        max_new_tokens=an.new_tokens,
        min_new_tokens=an.new_tokens,
        do_sample=an.temperature > 0,
        temperature=an.temperature if an.temperature > 0 else None,
        top_k=0 if an.temperature > 0 else None,
        pad_token_id=pad_id,
    )
    return out[:, prompts.shape[1] :].cpu()


@torch.no_grad()
def _perplexity(inputs: Inputs, model, prompts: torch.Tensor, new: torch.Tensor) -> float:
    """exp(mean NLL) of the generated tokens given their prompt, under the unmodified model."""
    ids = torch.cat([prompts, new], dim=1).to(inputs.device)
    logits = model(input_ids=ids).logits[:, prompts.shape[1] - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), new.to(inputs.device).reshape(-1)
    )
    return math.exp(float(nll))


def run(inputs: Inputs) -> Result:
    if any(inputs.task(t).kind != "clm" for t in inputs.tasks):
        raise ConfigError(
            "analysis=steering generates text: use a causal-LM task (synth-clm, wiki-clm, flores-clm)"
        )
    rows, examples = [], []
    for task in inputs.tasks:
        identify = for_task(inputs.task(task))
        for seed in inputs.seeds:
            masks = {lang: inputs.mask(task, lang, seed) for lang in inputs.langs}
            model, tokenizer = inputs.model(task, seed)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            prompts = {a: _prompts(inputs, task, a, tokenizer) for a in inputs.langs}
            targets = [("none", None, None)]
            for b, mask in masks.items():
                if mask.mlp is None or mask.mlp.ndim != 2:
                    raise ConfigError(
                        f"the {b} mask has no MLP units to hold; steer with pruning=lape or lang_ap"
                    )
                targets.append((b, ~mask.mlp, _held_values(inputs, task, b, model, tokenizer)))
            for b, units, values in targets:
                for a, p in prompts.items():
                    if units is None:
                        new = _generate(inputs, model, p, seed, pad)
                    else:
                        with units_fixed(model, units, values):
                            new = _generate(inputs, model, p, seed, pad)
                    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                    found = [identify(t) for t in texts]
                    ppl = _perplexity(inputs, model, p, new)
                    for lang in inputs.langs:
                        rows.append(
                            {
                                "task": task,
                                "seed": seed,
                                "prompt_lang": a,
                                "steer_lang": b,
                                "identified": lang,
                                "share": sum(f == lang for f in found) / len(found),
                                "perplexity": ppl,
                                "n": len(found),
                            }
                        )
                    prompt_texts = tokenizer.batch_decode(p, skip_special_tokens=True)
                    for pt, t in list(zip(prompt_texts, texts))[: inputs.an.examples]:
                        examples.append(
                            {
                                "task": task,
                                "seed": seed,
                                "prompt_lang": a,
                                "steer_lang": b,
                                "prompt": pt,
                                "generation": t,
                            }
                        )
    table = pd.DataFrame(rows)
    return Result(
        {"steering": table, "steering_examples": pd.DataFrame(examples)},
        {},
        _summary(inputs, table, examples),
    )


def shares(table: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Share of generations identified as the steered-to language: rows prompt A, columns target B
    ("none" = unsteered: the share identified as each column's language)."""
    t = table[table.task == task]
    steered = t[(t.steer_lang != "none") & (t.identified == t.steer_lang)]
    out = steered.groupby(["prompt_lang", "steer_lang"], sort=False).share.mean().unstack()
    base = t[t.steer_lang == "none"].groupby(["prompt_lang", "identified"], sort=False).share.mean().unstack()
    return out, base


def _summary(inputs: Inputs, table: pd.DataFrame, examples: list[dict]) -> str:
    out = []
    for task in inputs.tasks:
        steered, base = shares(table, task)
        t = table[table.task == task]
        ppl = t.groupby(["prompt_lang", "steer_lang"], sort=False).perplexity.mean().unstack()
        rows = []
        for a in steered.index:
            cells = [f"{steered.loc[a, b]:.2f} ({base.loc[a, b]:.2f})" for b in steered.columns]
            rows.append([a, *cells, f"{ppl.loc[a, 'none']:.1f}", f"{ppl.loc[a].drop('none').mean():.1f}"])
        headers = [f"{task}: prompt \\ steered to", *steered.columns, "ppl unsteered", "ppl steered (mean)"]
        note = (
            "share of generations identified as the target language (unsteered in brackets); "
            + inputs.note(inputs.an.split)
        )
        out.append(format_table(headers, rows, note))
        shown = [
            e for e in examples if e["task"] == task and e["steer_lang"] not in ("none", e["prompt_lang"])
        ]
        shown = shown[:6]
        out.append(
            "\n".join(
                f"  {e['prompt_lang']}→{e['steer_lang']}: {e['prompt']} | {e['generation']}" for e in shown
            )
        )
    return "\n\n".join(out)
