"""A full per-language head-pruning loop, xsub vs the original projects' loop, to the same final mask.

Reference: bench/reference/original_style.py `prune` (bertology's mask_heads as the originals ran it, on
transformers 4.57: head_mask, eager, all-parameter gradients, pad to fixed length, importance pass +
separate evaluation pass per round). xsub: `xsub.pruning.structured.prune_heads` exactly as
stage=prune calls it (gate-only gradients, SDPA, dynamic padding, the score from the importance pass),
once in fp32 and, where bf16 is native (CUDA; CPUs with AVX512-BF16/AMX: `xsub.precision`), once
under bf16 autocast, what precision=auto runs there. The bf16 loop's final mask is compared with the
fp32 loop's: equal, or their Jaccard and both masks' scores. Both prune 10% of heads per round and
stop below --threshold × the unpruned accuracy; both start from the same weights and see the same
batches (see _common.py). Wall time covers the loop only (model and data loaded before the clock
starts, one warm-up batch untimed).

The embedded default is a real finetuned model, pruned to its threshold exactly as `make demo` does.
The xlm-roberta-base-shaped model has random weights: its accuracy against its own predictions
collapses as soon as 14 heads go, so there the loop runs a fixed --xlmr-rounds rounds with the
threshold off (the same per-round work, and still one final mask both loops must agree on).

    make bench-reference                            # once
    python bench/prune_end_to_end.py --quick        # xlmr n = 32, embedded 1000 examples
    python bench/prune_end_to_end.py                # xlmr n = 128

The reference and the xsub loops run one after another (a loop is long): on a shared machine, rerun
to see the spread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    child_cmd,
    fmt,
    load_xsub_model,
    pad,
    parse,
    parser,
    reference_cmd,
    run_child,
    save,
    table,
    workloads,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, n=128, quick_n=32, models=["embedded", "xlmr"], json_name="prune_end_to_end.json")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--heads-per-round", type=float, default=0.1)
    p.add_argument("--max-rounds", type=int, default=0, help="embedded: 0 = until the threshold")
    p.add_argument("--xlmr-rounds", type=int, default=5, help="xlmr: rounds, threshold off")
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    return parse(p, argv)


def xsub_child(args: argparse.Namespace) -> dict[str, Any]:
    from _probe import load_workload, setup

    from xsub.config import PruningConfig
    from xsub.metrics import TaskMetric
    from xsub.model import attach_gates
    from xsub.pruning.importance import importance
    from xsub.pruning.structured import prune_heads

    device = setup(args.threads, args.device)
    model = load_xsub_model(Path(args.model_dir), "sdpa", device)
    batches = pad(load_workload(args.workload), None, device)
    metric = TaskMetric("classification", model.config.num_labels)
    precision = args.precision
    importance(model, attach_gates(model), batches[:1], metric, device, precision=precision)  # warm-up
    cfg = PruningConfig(
        threshold=args.threshold, heads_per_round=args.heads_per_round, max_rounds=args.max_rounds
    )
    start = time.perf_counter()
    result = prune_heads(model, batches, metric, device, cfg, precision=precision)
    seconds = time.perf_counter() - start
    return {
        "mask": result.mask.heads.bool().tolist(),
        "rounds": [{"round": r.round, "score": r.score, "kept": r.kept()["head"]} for r in result.history],
        "seconds": seconds,
        "passes": len(result.history),
        "precision": precision,
        "score": result.mask.meta.score_after,
    }


def compare(
    model_dir: Path, workload: Path, args: argparse.Namespace, tmp: Path, threshold: float, max_rounds: int
) -> list[dict[str, Any]]:
    extra = [
        "--threshold",
        str(threshold),
        "--heads-per-round",
        str(args.heads_per_round),
        "--max-rounds",
        str(max_rounds),
    ]
    out = tmp / "reference.json"
    ref = run_child(reference_cmd("prune", model_dir, workload, out, args, *extra), out)
    ref["variant"], ref["precision"] = "reference (transformers 4.x, original loop)", "fp32"
    rows = [ref]
    for precision in precisions(args.device):
        out = tmp / f"xsub-{precision}.json"
        cmd = child_cmd(__file__, model_dir, workload, out, args, *extra, "--precision", precision)
        ours = run_child(cmd, out)
        ours["variant"] = f"xsub prune_heads, {precision}"
        rows.append(ours)
    for r in rows:
        r["kept"] = sum(map(sum, r["mask"]))
        r["speedup"] = ref["seconds"] / r["seconds"]
        r["same_mask"] = r["mask"] == ref["mask"]
    return rows


def precisions(device: str) -> list[str]:
    """fp32, and bf16 where precision=auto runs it (xsub's default there)."""
    from xsub.precision import describe

    return ["fp32"] + (["bf16"] if describe("auto", device) == "bf16" else [])


def mask_agreement(a: dict[str, Any], b: dict[str, Any]) -> str:
    """`equal`, or the Jaccard of the kept heads and each mask's heads kept and score."""
    if a["mask"] == b["mask"]:
        return "equal"
    ka = {i for i, on in enumerate(x for row in a["mask"] for x in row) if on}
    kb = {i for i, on in enumerate(x for row in b["mask"] for x in row) if on}
    jaccard = len(ka & kb) / len(ka | kb) if ka | kb else 1.0
    return (
        f"Jaccard {jaccard:.3f}; {a['precision']} {len(ka)} heads, score {a['score']:.4f}; "
        f"{b['precision']} {len(kb)} heads, score {b['score']:.4f}"
    )


def report(name: str, description: str, rows: list[dict[str, Any]]) -> str:
    headers = ["loop", "wall s", "rounds", "passes", "heads kept", "score unpruned -> kept", "×", "same mask"]
    body = []
    for r in rows:
        rounds = r["rounds"]
        kept_round = max((x for x in rounds if x["kept"] == r["kept"]), key=lambda x: x["round"])
        body.append(
            [
                r["variant"],
                fmt(r["seconds"], 1),
                len(rounds) - 1,
                r["passes"],
                f"{r['kept']}/{sum(map(len, r['mask']))}",
                f"{rounds[0]['score']:.4f} -> {kept_round['score']:.4f}",
                f"{r['speedup']:.2f}",
                "yes" if r["same_mask"] else "NO",
            ]
        )
    return table(headers, body, f"full prune: {name} — {description}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(xsub_child(args)))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model_dir, workload, description in workloads(args):
            # a random-weight model has no meaningful threshold: fixed rounds (module docstring)
            threshold, max_rounds = (
                (0.0, args.xlmr_rounds) if name == "xlmr" else (args.threshold, args.max_rounds)
            )
            results[name] = compare(model_dir, workload, args, Path(tmp), threshold, max_rounds)
            print(report(name, description, results[name]), flush=True)
    save(args, results)
    for name in args.models:
        fp32, *bf16 = results[name][1:]
        for ours in (fp32, *bf16):
            same = "same final mask" if ours["same_mask"] else "DIFFERENT final mask"
            speedup = f"{ours['speedup']:.2f}x ({same}, {ours['precision']})"
            print(f"{name}: full prune speedup vs reference: {speedup}")
        for ours in bf16:
            print(f"{name}: final mask bf16 vs fp32: {mask_agreement(fp32, ours)}")


if __name__ == "__main__":
    main()
