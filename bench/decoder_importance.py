"""Decoder head importance (Michel et al. 2019 on the causal-LM loss): xsub's pass vs the older style.

Workload: a Llama-shaped causal LM with random weights (GQA: 8 query heads sharing 2 key/value heads,
d 256, 4 layers, 688 intermediate, a 32k vocabulary), sized to run on CPU, on random token sentences of
Wikipedia-sentence-like lengths (log-normal, median 40 tokens, σ 0.5 in log space, clipped to [8, 256]).
Both sides see the same sentences in the same batches (length-sorted groups: Σ_batches |∂L/∂g| depends on
how examples are grouped) and the same head gates (`xsub.model.Gates`); only the padding differs.

- reference, the older projects' style: every parameter's gradient computed (requires_grad on, zeroed
  per batch), every batch padded to the maximum length (256), eager attention, and a separate
  evaluation pass per round for the perplexity;
- xsub (`xsub.pruning.importance`): gradients to the gates only, SDPA, each batch padded to its longest
  row, the perplexity from the same pass.

One "round" = what a pruning round costs (reference: importance + evaluation; xsub: one pass). The
two sides alternate repeat by repeat. Prints examples/s, peak memory of the pass (tracemalloc of the
Python heap is useless for torch, so the RSS high-water mark of a child process per side) and the
Spearman correlation of the two importance vectors, then
`decoder importance speedup vs reference: N.NNx (spearman S.SSSS)`.

    python bench/decoder_importance.py            # 256 sentences
    python bench/decoder_importance.py --quick    # 64
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MAX_LEN = 256


def build(attn: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LEN,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(config, attn_implementation=attn).eval()


def sentences(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.exp(torch.log(torch.tensor(40.0)) + 0.5 * torch.randn(n, generator=g)).round()
    lengths = lengths.clamp(8, MAX_LEN).long().tolist()
    return [torch.randint(3, 32000, (k,), generator=g) for k in lengths]


def batches(rows: list[torch.Tensor], size: int, pad_to: int | None) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of the same rows on both sides (|∂L/∂g| is summed per batch, so the batches'
    composition is part of the result): length-sorted, padded to `pad_to` or to each batch's longest."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = []
    for j in range(0, len(order), size):
        group = [rows[i] for i in order[j : j + size]]
        width = pad_to or max(len(r) for r in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, r in enumerate(group):
            ids[k, : len(r)], mask[k, : len(r)] = r, 1
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def reference_round(model, gates, data) -> tuple[torch.Tensor, float]:
    """Older style: all parameter gradients, then a separate evaluation pass for the perplexity."""
    for p in model.parameters():
        p.requires_grad_(True)
    gates.requires_grad_(True, which=("head",))
    imp = torch.zeros_like(gates.head)
    for b in data:
        model.zero_grad()
        gates.zero_grad()
        model(**b).loss.backward()
        imp += gates.head.grad.abs()
    gates.requires_grad_(False)
    nll, count = 0.0, 0
    with torch.no_grad():
        for b in data:
            n = int((b["labels"][:, 1:] != -100).sum())
            nll += float(model(**b).loss) * n
            count += n
    return imp, float(torch.exp(torch.tensor(nll / count)))


def xsub_round(model, gates, data) -> tuple[torch.Tensor, float]:
    from omegaconf import OmegaConf

    from xsub.metrics import task_metric
    from xsub.pruning.importance import importance

    metric = task_metric(OmegaConf.create({"kind": "clm", "num_labels": 0, "label_names": []}))
    result = importance(
        model,
        gates,
        data,
        metric,
        "cpu",
        normalize_tokens=False,
        normalize_layers=False,
        normalize_global=False,
    )
    return result.head, result.score


def side(name: str, n: int, repeats: int, threads: int) -> dict:
    """One side in this process: its timings, importance and peak RSS."""
    from xsub.model import attach_gates

    torch.set_num_threads(threads)
    ref = name == "reference"
    model = build("eager" if ref else "sdpa")
    gates = attach_gates(model)
    data = batches(sentences(n), 16, MAX_LEN if ref else None)
    fn = reference_round if ref else xsub_round
    fn(model, gates, data[:1])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        imp, ppl = fn(model, gates, data)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    return {
        "seconds": statistics.median(times),
        "importance": imp.flatten().tolist(),
        "ppl": ppl,
        "peak_mib": peak,
    }


def spearman(a: list[float], b: list[float]) -> float:
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", choices=["reference", "xsub"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = 64 if args.quick else args.n
    if args.side:  # a child: one side, its own process (its own peak memory)
        print(json.dumps(side(args.side, n, args.repeats, args.threads)))
        return
    results = {}
    for name in ("reference", "xsub"):
        cmd = [sys.executable, __file__, "--side", name, "--n", str(n), "--repeats", str(args.repeats)]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    ref, ours = results["reference"], results["xsub"]
    rho = spearman(ref["importance"], ours["importance"])
    print(f"decoder workload: random Llama (GQA 8/2 heads, d 256, 4 layers, 32k vocab), {n} sentences")
    for name, r in results.items():
        print(
            f"  {name:9s} round {r['seconds']:7.2f} s  {n / r['seconds']:7.1f} ex/s  "
            f"peak RSS {r['peak_mib']:,.0f} MiB  perplexity {r['ppl']:.1f}"
        )
    speedup = ref["seconds"] / ours["seconds"]
    print(f"decoder importance speedup vs reference: {speedup:.2f}x (spearman {rho:.4f})")


if __name__ == "__main__":
    main()
