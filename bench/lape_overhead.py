"""LAPE's statistics pass (`xsub.neurons.collect`) against a bare forward pass over the same tokens.

LAPE's activation.py counts, per neuron, the tokens where act(gate_proj x) > 0 while the model runs its
forward pass; xsub does the same with forward hooks. The hooks add a comparison and a sum per layer on
tensors the pass computes anyway, so the pass should cost at most 1.15x a bare forward. Both run in
one process on the same model and batches, alternating repeat by repeat (both see the same machine
load); the figure is the ratio of their medians. Model: a random Llama-architecture decoder (gated
SiLU MLP, GQA), by default Llama-3.2-1B's layer shape (d 2048, 8192 intermediate, 32 heads, 8 key/value
heads) with 4 layers and a 32k vocabulary; `--quick` a quarter of that width.

    python bench/lape_overhead.py            # prints: lape statistics overhead: N.NNx of a bare forward
    python bench/lape_overhead.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xsub.neurons import collect


def build(quick: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    scale = 4 if quick else 1
    config = LlamaConfig(
        vocab_size=32000 // scale,
        hidden_size=2048 // scale,
        intermediate_size=8192 // scale,
        num_hidden_layers=4,
        num_attention_heads=32 // scale,
        num_key_value_heads=8 // scale,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.length, args.repeats = 128, 3
    model = build(args.quick)
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    batches = [
        {"input_ids": torch.randint(3, vocab, (args.batch, args.length), generator=g)}
        for _ in range(args.batches)
    ]
    cpu = torch.device("cpu")

    @torch.no_grad()
    def bare() -> None:
        for b in batches:
            model(**b)

    def hooked() -> None:
        collect(model, batches, cpu, "fp32")

    bare(), hooked()  # warm-up
    times: dict[str, list[float]] = {"bare forward": [], "lape statistics": []}
    for _ in range(args.repeats):
        for name, fn in (("bare forward", bare), ("lape statistics", hooked)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    tokens = args.batch * args.length * args.batches
    c = model.config
    print(
        f"random Llama layer shape d={c.hidden_size}, intermediate={c.intermediate_size}, "
        f"{c.num_hidden_layers} layers; {tokens} tokens per pass, fp32, {torch.get_num_threads()} threads"
    )
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"  {name:16s} median {median:.3f} s  ({tokens / median:,.0f} tokens/s)")
    ratio = statistics.median(times["lape statistics"]) / statistics.median(times["bare forward"])
    print(f"lape statistics overhead: {ratio:.2f}x of a bare forward")


if __name__ == "__main__":
    main()
