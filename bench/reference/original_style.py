"""The original projects' head importance and pruning loop, written in their style, for transformers 4.x.

This is the reference xsub's benchmarks measure against (bench/importance.py, bench/prune_end_to_end.py).
What makes it the way apostolikas/Language-Specific-Subnetworks and MaxBelitsky/cross-lingual-subnetworks
compute importance (the transformers bertology example; docs/methods.md, section 5):

- the mask enters as the model's `head_mask` argument (transformers 4.x; 5.x removed it), with eager
  attention in fp32;
- nothing is frozen: `model.eval()` turns dropout off but every parameter still requires grad, so each
  backward also computes (and accumulates) gradients for all weights;
- every batch is padded to a fixed length (`pad_to`, 128 as run_glue's pad_to_max_length);
- a pruning round is an importance pass plus a separate no-grad evaluation pass for the score.

What it shares with xsub so that results are comparable: the same batches (composition and order), the
gate gradient zeroed per batch (the originals' cumulative bug fixed, xsub's default), the originals'
normalisations (/ tokens, per-layer L2, global min-max), and the selection rule (lowest importance
among heads still on, ties by lower index; stop when a part would be emptied).

Runs in bench/reference/.venv (`make bench-reference`), never imports xsub:

    python bench/reference/original_style.py importance --model DIR --workload W.pt --out R.json
    python bench/reference/original_style.py prune --model DIR --workload W.pt --out R.json --threshold 0.9
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _probe import Window, load_workload, setup


def padded(workload: dict, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every batch right-padded to the workload's fixed length, as the original data pipelines did."""
    out = []
    for b in workload["batches"]:
        n, width = len(b["input_ids"]), workload["pad_to"]
        ids = torch.full((n, width), workload["pad_id"], dtype=torch.long)
        att = torch.zeros((n, width), dtype=torch.long)
        for i, row in enumerate(b["input_ids"]):
            ids[i, : len(row)] = row
            att[i, : len(row)] = 1
        out.append(
            {"input_ids": ids.to(device), "attention_mask": att.to(device), "labels": b["labels"].to(device)}
        )
    return out


def compute_heads_importance(model, batches, head_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Σ_batches |∂L/∂head_mask|, normalised; the model's parameters all get gradients too."""
    head_mask = head_mask.clone().requires_grad_(True)
    importance = torch.zeros_like(head_mask)
    tokens = 0
    for batch in batches:
        outputs = model(**batch, head_mask=head_mask)
        outputs.loss.backward()
        importance += head_mask.grad.abs().detach()
        head_mask.grad = None  # the originals never zeroed it (cumulative sums); fixed as in xsub
        tokens += int(batch["attention_mask"].float().sum())
    importance /= tokens
    norm_by_layer = torch.pow(torch.pow(importance, 2).sum(-1), 1 / 2)
    importance /= norm_by_layer.unsqueeze(-1) + 1e-20
    importance = (importance - importance.min()) / (importance.max() - importance.min())
    return importance, tokens


@torch.no_grad()
def evaluate(model, batches, head_mask: torch.Tensor) -> float:
    """The round's score: accuracy in a separate no-grad pass under the mask."""
    right = total = 0
    for batch in batches:
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], head_mask=head_mask
        ).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return right / total


def lowest_on(importance: torch.Tensor, head_mask: torch.Tensor, k: int) -> torch.Tensor | None:
    """Flat indices of the k least important heads still on; None if that would leave none on."""
    on = head_mask.view(-1) > 0
    if int(on.sum()) <= k:
        return None
    scores = importance.view(-1).double().masked_fill(~on, float("inf"))
    return torch.sort(scores, stable=True).indices[:k]


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, list[dict], torch.device]:
    device = setup(args.threads, args.device)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, attn_implementation="eager")
    model.to(device).eval()
    workload = load_workload(args.workload)
    return model, padded(workload, device), device


def warm_up(model, batches, head_mask: torch.Tensor) -> None:
    """One batch forward and backward outside the timed window (first-call allocations)."""
    compute_heads_importance(model, batches[:1], head_mask)
    model.zero_grad(set_to_none=True)


def run_importance(args: argparse.Namespace) -> dict:
    model, batches, device = load(args)
    cfg = model.config
    head_mask = torch.ones(cfg.num_hidden_layers, cfg.num_attention_heads, device=device)
    warm_up(model, batches, head_mask)
    with Window(device) as w:
        importance, tokens = compute_heads_importance(model, batches, head_mask)
    with Window(device) as e:
        score = evaluate(model, batches, head_mask)
    return {
        "importance": importance.cpu().tolist(),
        "tokens": tokens,
        "padded_tokens": sum(b["input_ids"].numel() for b in batches),
        "examples": sum(len(b["labels"]) for b in batches),
        "score": score,
        **w.to_dict(),
        **e.to_dict("eval_"),
    }


def run_prune(args: argparse.Namespace) -> dict:
    """bertology's mask_heads loop: importance + evaluation per round until the score drops."""
    model, batches, device = load(args)
    cfg = model.config
    head_mask = torch.ones(cfg.num_hidden_layers, cfg.num_attention_heads, device=device)
    k = max(1, int(args.heads_per_round * head_mask.numel()))
    warm_up(model, batches, head_mask)
    rounds = []
    start = time.perf_counter()
    importance, _ = compute_heads_importance(model, batches, head_mask)
    score0 = evaluate(model, batches, head_mask)
    rounds.append({"round": 0, "score": score0, "kept": int(head_mask.sum())})
    while not args.max_rounds or len(rounds) <= args.max_rounds:
        chosen = lowest_on(importance.cpu(), head_mask.cpu(), k)
        if chosen is None:
            break
        new_mask = head_mask.clone().view(-1)
        new_mask[chosen.to(device)] = 0.0
        new_mask = new_mask.view_as(head_mask)
        importance, _ = compute_heads_importance(model, batches, new_mask)
        score = evaluate(model, batches, new_mask)
        rounds.append({"round": len(rounds), "score": score, "kept": int(new_mask.sum())})
        if score < args.threshold * score0:
            break
        head_mask = new_mask
    seconds = time.perf_counter() - start
    return {
        "mask": head_mask.bool().cpu().tolist(),
        "rounds": rounds,
        "seconds": seconds,
        "passes": 2 * len(rounds),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["importance", "prune"])
    p.add_argument("--model", required=True, help="save_pretrained directory (safetensors)")
    p.add_argument("--workload", required=True, help="batches written by bench/_common.py")
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--heads-per-round", type=float, default=0.1)
    p.add_argument("--max-rounds", type=int, default=0)
    args = p.parse_args(argv)
    result = run_importance(args) if args.what == "importance" else run_prune(args)
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
