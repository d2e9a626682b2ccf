"""Head importance, xsub vs the original projects' stack, same weights and batches: speed, memory, agreement.

The reference (bench/reference/seed_style.py, run in bench/reference/.venv with transformers 4.57)
computes importance the original projects' way: `head_mask`, eager attention, fp32, gradients for every
parameter, every batch padded to 128, and a separate evaluation pass for the round's score. xsub's pass
(`xsub.pruning.importance.importance`) is measured as a ladder, one change at a time:

1. gates-only gradients (forward hooks on transformers 5, parameters frozen), eager, padded to 128;
2. + SDPA attention;
3. + length-sorted dynamic padding (batches padded to their longest row): xsub's default;
4. + bf16 autocast (CUDA only).

xsub's pass also yields the round's score (one pass per round); the reference needs its extra
evaluation pass, so "round" columns compare importance+evaluation against xsub's single pass.
Both sides run in child processes (one each, a clean peak-memory window after loading), on
--threads threads, one warm-up batch untimed. Agreement: Spearman over all heads of the normalised
importances, and whether the first pruning round (10% of heads) would mask the same heads.

    make bench-reference                       # once: the transformers 4.x environment
    python bench/importance.py --quick         # under 10 minutes on 2 CPU cores
    python bench/importance.py                 # larger n
    python bench/importance.py --device cuda   # on a GPU machine (adds the bf16 step)

The last line reads `importance speedup vs reference: N.NNx (spearman S.SSSS)`: examples/s of xsub's
default pass over the reference's importance pass, on the xlm-roberta-base shape (see _common.py for
the models and the XNLI-like length distribution).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    child_cmd,
    first_pruned,
    fmt,
    load_xsub_model,
    pad,
    parse,
    parser,
    reference_cmd,
    run_child,
    save,
    spearman,
    table,
    workloads,
)

# (label, attention, pad to the fixed length?, precision)
LADDER = [
    ("gates-only grads, eager, pad to fixed", "eager", True, "fp32"),
    ("+ SDPA", "sdpa", True, "fp32"),
    ("+ dynamic padding (xsub default)", "sdpa", False, "fp32"),
]
BF16 = ("+ bf16 autocast", "sdpa", False, "bf16")
DEFAULT = LADDER[2][0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, n=512, quick_n=64, models=["xlmr", "embedded"], json_name="importance.json")
    p.add_argument("--ladder", action=argparse.BooleanOptionalAction, default=True, help="every xsub step")
    p.add_argument("--attn", default="sdpa", help=argparse.SUPPRESS)
    p.add_argument("--pad-fixed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    return parse(p, argv)


def xsub_child(args: argparse.Namespace) -> dict[str, Any]:
    """One xsub importance pass in this process: the measurement a child reports."""
    from _probe import Window, load_workload, setup

    from xsub.metrics import TaskMetric
    from xsub.model import attach_gates
    from xsub.pruning.importance import importance

    device = setup(args.threads, args.device)
    model = load_xsub_model(Path(args.model_dir), args.attn, device)
    work = load_workload(args.workload)
    batches = pad(work, work["pad_to"] if args.pad_fixed else None, device)
    gates = attach_gates(model)
    metric = TaskMetric("classification", model.config.num_labels)
    importance(model, gates, batches[:1], metric, device, precision=args.precision)  # warm-up
    with Window(device) as w:
        r = importance(model, gates, batches, metric, device, precision=args.precision)
    return {
        "importance": r.head.tolist(),
        "tokens": r.tokens,
        "padded_tokens": sum(b["input_ids"].numel() for b in batches),
        "examples": sum(len(b["labels"]) for b in batches),
        "score": r.score,
        **w.to_dict(),
    }


def measure(model_dir: Path, workload: Path, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Reference then each xsub step on one workload; rows with ratios against the reference."""
    out = tmp / "reference.json"
    ref = run_child(reference_cmd("importance", model_dir, workload, out, args), out)
    ref["variant"] = "reference (transformers 4.x, original style)"
    ref["round_seconds"] = ref["seconds"] + ref["eval_seconds"]
    steps = list(LADDER) if args.ladder else [LADDER[2]]
    if args.device.startswith("cuda"):
        steps.append(BF16)
    rows = [ref]
    for i, (label, attn, fixed, precision) in enumerate(steps):
        out = tmp / f"xsub{i}.json"
        extra = ["--attn", attn, "--precision", precision] + (["--pad-fixed"] if fixed else [])
        cmd = child_cmd(__file__, model_dir, workload, out, args, *extra)
        row = run_child(cmd, out)
        row["variant"], row["round_seconds"] = label, row["seconds"]
        rows.append(row)
    for row in rows:
        row["examples_per_s"] = row["examples"] / row["seconds"]
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        row["speedup"] = ref["seconds"] / row["seconds"]
        row["round_speedup"] = ref["round_seconds"] / row["round_seconds"]
        row["memory_ratio"] = (
            row["peak_extra_mib"] / ref["peak_extra_mib"] if ref["peak_extra_mib"] else float("nan")
        )
        row["spearman"] = spearman(row["importance"], ref["importance"])
        row["same_first_pruned"] = first_pruned(row["importance"]) == first_pruned(ref["importance"])
    return rows


def report(name: str, description: str, rows: list[dict[str, Any]]) -> str:
    headers = [
        "variant",
        "ex/s",
        "tok/s",
        "pass s",
        "round s",
        "peak+ MiB",
        "× pass",
        "× round",
        "mem ×",
        "spearman",
        "same 1st",
    ]
    body = [
        [
            r["variant"],
            fmt(r["examples_per_s"]),
            fmt(r["tokens_per_s"], 0),
            fmt(r["seconds"], 2),
            fmt(r["round_seconds"], 2),
            fmt(r["peak_extra_mib"], 0),
            f"{r['speedup']:.2f}",
            f"{r['round_speedup']:.2f}",
            f"{r['memory_ratio']:.2f}",
            f"{r['spearman']:.4f}",
            "yes" if r["same_first_pruned"] else "NO",
        ]
        for r in rows
    ]
    ref = rows[0]
    padding = ref["padded_tokens"] / ref["tokens"]
    return table(headers, body, f"importance pass: {name} — {description}") + (
        f"\n{ref['examples']} examples, {ref['tokens']} real tokens "
        f"({padding:.2f}x that when padded to the fixed length); "
        f"unpruned accuracy reference {ref['score']:.4f}, xsub {rows[-1]['score']:.4f}\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(xsub_child(args)))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_dir, workload, description in workloads(args):
            results[name] = measure(model_dir, workload, args, Path(tmp))
            print(report(name, description, results[name]), flush=True)
    save(args, results)
    head = results.get("xlmr") or results[args.models[0]]
    best = next(r for r in head if r["variant"] == DEFAULT)
    print(f"importance speedup vs reference: {best['speedup']:.2f}x (spearman {best['spearman']:.4f})")


if __name__ == "__main__":
    main()
