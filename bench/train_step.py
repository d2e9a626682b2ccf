"""Training step time, fp32 vs bf16 autocast, as `xsub.trainer.fit` runs a step (precision=fp32 | bf16).

One optimiser step = forward under `xsub.trainer.autocast` + loss + backward + gradient clipping +
AdamW step, dropout on, on random weights and random token batches (step time does not depend on the
weights). The two precisions alternate step by step on two copies of the same model, so both see the
same machine load; the table gives the median step time of each and their ratio. Shapes:

- embedded: the embedded default (conf/model/synth-bert.yaml: 4 layers x 4 heads, d 64, 64
  positions), batch 32 of length 32 (the synthetic task's sentences are shorter than that);
- base: xlm-roberta-base shape (12 x 12, d 768, 250k vocabulary), batch 32 of the XNLI-like median
  length 42 (see _common.py); --quick: 8 steps instead of 20.

    python bench/train_step.py                # both shapes
    python bench/train_step.py --shape embedded

The dev metric of each precision comes from real training runs (`precision=fp32` / `precision=bf16`
on the train stage), reported in bench/README.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import XLMR_SHAPE, fmt, table

SHAPES = {
    "embedded": dict(
        kind="bert",
        config=dict(
            vocab_size=600,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            num_labels=3,
        ),
        batch=32,
        length=32,
    ),
    "base": dict(kind="xlmr", config=XLMR_SHAPE, batch=32, length=42),
}


def build(shape: dict) -> torch.nn.Module:
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        XLMRobertaConfig,
    )

    config = (BertConfig if shape["kind"] == "bert" else XLMRobertaConfig)(**shape["config"])
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def batch(shape: dict, step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    vocab = shape["config"]["vocab_size"]
    ids = torch.randint(3, vocab - 1, (shape["batch"], shape["length"]), generator=g)
    labels = torch.randint(0, shape["config"]["num_labels"], (shape["batch"],), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def measure(name: str, steps: int) -> dict[str, float]:
    from xsub.trainer import autocast

    shape = SHAPES[name]
    device = torch.device("cpu")
    base = build(shape).train()
    models = {p: copy.deepcopy(base) for p in ("fp32", "bf16")}
    optims = {p: torch.optim.AdamW(m.parameters(), lr=1e-5) for p, m in models.items()}
    times: dict[str, list[float]] = {p: [] for p in models}
    losses: dict[str, float] = {}
    for step in range(steps + 1):  # step 0: warm-up, untimed
        b = batch(shape, step)
        for p, model in models.items():
            start = time.perf_counter()
            with autocast(device, p):
                loss = model(**b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optims[p].step()
            optims[p].zero_grad(set_to_none=True)
            if step:
                times[p].append(time.perf_counter() - start)
            losses[p] = float(loss.detach())
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    tokens = shape["batch"] * shape["length"]
    return {
        "fp32_s": fp32,
        "bf16_s": bf16,
        "speedup": fp32 / bf16,
        "fp32_tok_s": tokens / fp32,
        "bf16_tok_s": tokens / bf16,
        "loss_fp32": losses["fp32"],
        "loss_bf16": losses["bf16"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="8 steps")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from xsub.precision import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        print("note: this CPU has no native bf16 (precision=auto trains in fp32 here); bf16 is emulated")
    steps = 8 if args.quick else args.steps
    rows = []
    for name in args.shape:
        r = measure(name, steps)
        s = SHAPES[name]
        rows.append(
            [
                f"{name} ({s['batch']}x{s['length']})",
                fmt(r["fp32_s"] * 1000, 1),
                fmt(r["bf16_s"] * 1000, 1),
                fmt(r["fp32_tok_s"], 0),
                fmt(r["bf16_tok_s"], 0),
                f"{r['speedup']:.2f}",
                f"{r['loss_fp32']:.4f} / {r['loss_bf16']:.4f}",
            ]
        )
        print(
            f"{name}: {steps} steps each, alternating: fp32 {rows[-1][1]} ms, bf16 {rows[-1][2]} ms "
            f"per step, bf16 {rows[-1][5]}x",
            flush=True,
        )
    headers = [
        "shape",
        "fp32 ms/step",
        "bf16 ms/step",
        "fp32 tok/s",
        "bf16 tok/s",
        "× bf16",
        "last loss fp32/bf16",
    ]
    print(table(headers, rows, f"train step, fp32 vs bf16 autocast ({args.threads} threads, median)"))


if __name__ == "__main__":
    main()
