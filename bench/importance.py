"""Head importance, xsub vs the original projects' stack, same weights and batches: speed, memory, agreement.

The reference (bench/reference/original_style.py, run in bench/reference/.venv with transformers 4.57)
computes importance the original projects' way: `head_mask`, eager attention, fp32, gradients for every
parameter, every batch padded to 128, and a separate evaluation pass for the round's score. xsub's pass
(`xsub.pruning.importance.importance`) is measured as a ladder, one change at a time:

1. gates-only gradients (forward hooks on transformers 5, parameters frozen), eager, padded to 128;
2. + SDPA attention;
3. + length-sorted dynamic padding (batches padded to their longest row): xsub's fp32 pass;
4. + bf16 autocast (CPU): on a CPU with native bf16 (AVX512-BF16, AMX; `xsub.precision`), skipped
   elsewhere; + bf16 (CUDA) with --device cuda, skipped without a GPU. Where bf16 is native, it is
   what `precision=auto` (xsub's default) runs.

xsub's pass also yields the round's score (one pass per round); the reference needs its extra
evaluation pass, so "round" columns compare importance+evaluation against xsub's single pass.
Both sides run in child processes (one each, a clean peak-memory window after loading), on
--threads threads, one warm-up batch untimed; --repeats R runs the whole sequence R times, the variants
interleaved (reference, each xsub step, reference, ...), and reports each one's median time, so that
the ratios are measured under the same machine load. Agreement: Spearman over all heads of the
normalised importances, and whether the first pruning round (10% of heads) would mask the same heads,
against the reference and against xsub's own fp32 pass (step 3).

    make bench-reference                       # once: the transformers 4.x environment
    python bench/importance.py --quick         # under 10 minutes on 2 CPU cores
    python bench/importance.py                 # larger n
    python bench/importance.py --device cuda   # on a GPU machine (the bf16 step on CUDA)

The last line reads `importance speedup vs reference: N.NNx (spearman S.SSSS, bf16)`: examples/s of
xsub's default pass (precision=auto on this device: the bf16 step where bf16 is native, else step 3)
over the reference's importance pass, its Spearman against the reference's (fp32) importances and its
precision, on the xlm-roberta-base shape (see _common.py for the models and the XNLI-like length
distribution).
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    ("+ dynamic padding", "sdpa", False, "fp32"),
]
FP32 = LADDER[2][0]  # xsub's fp32 pass: what the bf16 steps are compared with
BF16_CPU = ("+ bf16 autocast (CPU)", "sdpa", False, "bf16")
BF16_CUDA = ("+ bf16 (CUDA)", "sdpa", False, "bf16")
DEFAULT_MARK = " (xsub default)"


def bf16_steps(device: str) -> tuple[list[tuple[str, str, bool, str]], list[str]]:
    """The bf16 steps this device runs, and a line for each one skipped."""
    from xsub.precision import cpu_has_native_bf16

    steps, skipped = [], []
    if device.startswith("cuda"):
        steps.append(BF16_CUDA)
        skipped.append(f"{BF16_CPU[0]}: skipped (--device {device})")
    else:
        if cpu_has_native_bf16():
            steps.append(BF16_CPU)
        else:
            skipped.append(f"{BF16_CPU[0]}: skipped (this CPU has no native bf16; precision=auto is fp32)")
        skipped.append(f"{BF16_CUDA[0]}: skipped (no CUDA device; run with --device cuda on a GPU)")
    return steps, skipped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, n=512, quick_n=64, models=["xlmr", "embedded"], json_name="importance.json")
    p.add_argument(
        "--ladder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="every xsub step (else fp32 + bf16)",
    )
    p.add_argument("--repeats", type=int, default=1, help="run the variants interleaved R times; median")
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


def default_variant(device: str) -> str:
    """The step xsub's default (precision=auto) runs on this device."""
    from xsub.precision import describe

    if describe("auto", device) == "fp32":
        return FP32
    return BF16_CUDA[0] if device.startswith("cuda") else BF16_CPU[0]


def measure(model_dir: Path, workload: Path, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Reference then each xsub step on one workload (interleaved, --repeats times); rows with ratios
    against the reference, and agreement with the reference and with xsub's fp32 pass."""
    steps = (list(LADDER) if args.ladder else [LADDER[2]]) + bf16_steps(args.device)[0]
    runs: list[list[dict[str, Any]]] = [[] for _ in range(len(steps) + 1)]
    for rep in range(max(1, args.repeats)):
        out = tmp / f"reference{rep}.json"
        runs[0].append(run_child(reference_cmd("importance", model_dir, workload, out, args), out))
        for i, (_, attn, fixed, precision) in enumerate(steps):
            out = tmp / f"xsub{i}-{rep}.json"
            extra = ["--attn", attn, "--precision", precision] + (["--pad-fixed"] if fixed else [])
            runs[i + 1].append(run_child(child_cmd(__file__, model_dir, workload, out, args, *extra), out))
    rows = [_median(r) for r in runs]
    ref = rows[0]
    ref["variant"], ref["precision"] = "reference (transformers 4.x, original style)", "fp32"
    ref["round_seconds"] = ref["seconds"] + ref["eval_seconds"]
    default = default_variant(args.device)
    for row, (label, _, _, precision) in zip(rows[1:], steps):
        row["variant"], row["precision"], row["round_seconds"] = label, precision, row["seconds"]
        row["default"] = label == default
    fp32 = next(r for r in rows if r["variant"] == FP32)
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
        row["spearman_fp32"] = spearman(row["importance"], fp32["importance"])
        row["same_first_fp32"] = first_pruned(row["importance"]) == first_pruned(fp32["importance"])
    return rows


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's runs as one row: the first run's results, the median of each timing."""
    row = dict(runs[0])
    for key in ("seconds", "eval_seconds", "peak_extra_mib"):
        if key in row:
            row[key] = statistics.median(r[key] for r in runs)
    row["runs_seconds"] = [r["seconds"] for r in runs]
    return row


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
        "ρ ref",
        "1st ref",
        "ρ fp32",
        "1st fp32",
    ]
    body = [
        [
            r["variant"] + (DEFAULT_MARK if r.get("default") else ""),
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
            f"{r['spearman_fp32']:.4f}",
            "yes" if r["same_first_fp32"] else "NO",
        ]
        for r in rows
    ]
    ref = rows[0]
    padding = ref["padded_tokens"] / ref["tokens"]
    default = next((r for r in rows if r.get("default")), rows[-1])
    return table(headers, body, f"importance pass: {name} — {description}") + (
        f"\n{ref['examples']} examples, {ref['tokens']} real tokens "
        f"({padding:.2f}x that when padded to the fixed length); "
        f"unpruned accuracy reference {ref['score']:.4f}, xsub {default['score']:.4f} "
        f"({default['precision']}); ρ / 1st: Spearman of the importances and the same first-pruned "
        f"heads, against the reference (ref) and xsub's fp32 pass (fp32); times: median of "
        f"{len(ref['runs_seconds'])} interleaved run(s)\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(xsub_child(args)))
        return
    results: dict[str, Any] = {}
    for line in bf16_steps(args.device)[1]:
        print(line)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_dir, workload, description in workloads(args):
            results[name] = measure(model_dir, workload, args, Path(tmp))
            print(report(name, description, results[name]), flush=True)
    save(args, results)
    head = results.get("xlmr") or results[args.models[0]]
    best = next(r for r in head if r.get("default"))
    print(
        f"importance speedup vs reference: {best['speedup']:.2f}x "
        f"(spearman {best['spearman']:.4f}, {best['precision']})"
    )


if __name__ == "__main__":
    main()
