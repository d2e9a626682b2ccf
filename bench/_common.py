"""What bench/importance.py and bench/prune_end_to_end.py share: the models, the batches, the xsub side
of each measurement, and running children (xsub here, the original projects' stack in bench/reference/.venv).

Workloads. Both sides get the same examples in the same batches (composition and order); only how a
batch is padded differs (the reference pads to `pad_to`, xsub to the batch's longest row).
- xlmr: an xlm-roberta-base-shaped classifier (12 x 12 heads, d 768, 250k vocabulary, 3 labels) with
  seeded random weights, saved once as safetensors. Its examples are random token ids with XNLI-like
  lengths: premise+hypothesis pairs of log-normal length (median 42 subword tokens with the special
  tokens, σ = 0.45 in log space, clipped to [8, 128]: mean ≈ 46, 95th percentile ≈ 88, 0.7% at 128).
  A random encoder predicts one class for everything, so the classifier bias is centred on these
  examples and the labels are the model's own predictions: the unpruned accuracy is 1 and removing
  heads lowers it, which gives the pruning loop a real stopping point.
- embedded: the finetuned embedded default (`make demo` makes it) on its pruning data, exactly the
  batches stage=prune builds (length-sorted, `pruning.batch_size`), padded by the reference to
  min(data.max_length, the model's position limit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CACHE = Path(os.environ.get("XSUB_BENCH_CACHE", BENCH / ".cache"))
REFERENCE_PYTHON = BENCH / "reference" / ".venv" / "bin" / "python"
REFERENCE_SCRIPT = BENCH / "reference" / "original_style.py"
XLMR_SHAPE = dict(
    vocab_size=250002,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    num_labels=3,
)
# --shape tiny: the same architecture, small enough for the smoke tests in `make test`
SHAPES = {
    "base": XLMR_SHAPE,
    "tiny": {
        **XLMR_SHAPE,
        "vocab_size": 1000,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    },
}
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MIN, PAD_TO = 42, 0.45, 8, 128


def xnli_like_lengths(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    return (LENGTH_MEDIAN * torch.exp(LENGTH_SIGMA * z)).round().clamp(LENGTH_MIN, PAD_TO).long()


def batch_rows(rows: list[torch.Tensor], labels: torch.Tensor, batch_size: int) -> list[dict[str, Any]]:
    """Length-sorted batches (stage=prune's order), each a list of unpadded rows and their labels."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    return [
        {
            "input_ids": [rows[i] for i in order[j : j + batch_size]],
            "labels": labels[order[j : j + batch_size]],
        }
        for j in range(0, len(order), batch_size)
    ]


def pad(workload: dict[str, Any], pad_to: int | None, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """xsub's batches: rows padded by xsub's collate (to the longest row, or to `pad_to` if given)."""
    from xsub.data.encode import pad_collate

    tokenizer = SimpleNamespace(pad_token_id=workload["pad_id"], padding_side="right")
    collate = pad_collate(tokenizer, pad_to_multiple_of=pad_to)
    out = []
    for b in workload["batches"]:
        rows = [{"input_ids": r, "attention_mask": torch.ones_like(r)} for r in b["input_ids"]]
        batch = collate(rows)
        batch["labels"] = b["labels"]
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def _random_rows(n: int, seed: int, vocab_size: int) -> list[torch.Tensor]:
    """n random-token examples <s> … </s> with XNLI-like lengths."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length in xnli_like_lengths(n, seed + 1).tolist():
        ids = torch.randint(3, vocab_size - 1, (length,), generator=g)
        ids[0], ids[-1] = XLMR_SHAPE["bos_token_id"], XLMR_SHAPE["eos_token_id"]
        rows.append(ids)
    return rows


@torch.no_grad()
def _logits(model: torch.nn.Module, work: dict[str, Any]) -> torch.Tensor:
    out = []
    for b in pad(work, None, torch.device("cpu")):
        b.pop("labels")
        out.append(model(**b).logits)
    return torch.cat(out)


def xlmr_model(seed: int = 0, shape: str = "base") -> Path:
    """The xlm-roberta-base-shaped model, made once: seeded random weights, classifier bias centred on
    256 calibration examples so that its predictions spread over the 3 classes."""
    from transformers import AutoModelForSequenceClassification, XLMRobertaConfig

    model_dir = CACHE / f"xlmr-{shape}-random-s{seed}"
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(XLMRobertaConfig(**SHAPES[shape])).eval()
    rows = _random_rows(256, seed + 1000, SHAPES[shape]["vocab_size"])
    calibration = {"batches": batch_rows(rows, torch.zeros(len(rows), dtype=torch.long), 32), "pad_id": 1}
    with torch.no_grad():
        model.classifier.out_proj.bias -= _logits(model, calibration).mean(0)
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def xlmr_workload(n: int, batch_size: int, seed: int = 0, shape: str = "base") -> tuple[Path, Path]:
    """(model dir, workload file) for the xlm-roberta-base shape; labels = the model's predictions."""
    from transformers import AutoModelForSequenceClassification

    model_dir = xlmr_model(seed, shape)
    workload = CACHE / f"xlmr-{shape}-n{n}-b{batch_size}-s{seed}.pt"
    if workload.is_file():
        return model_dir, workload
    rows = _random_rows(n, seed, SHAPES[shape]["vocab_size"])
    work = {
        "batches": batch_rows(rows, torch.zeros(n, dtype=torch.long), batch_size),
        "pad_id": XLMR_SHAPE["pad_token_id"],
        "pad_to": PAD_TO,
        "description": f"xlm-roberta-{shape} shape, random weights (seed {seed}), {n} XNLI-like lengths",
    }
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    preds = _logits(model, work).argmax(-1)
    start = 0
    for b in work["batches"]:
        b["labels"] = preds[start : start + len(b["input_ids"])].clone()
        start += len(b["input_ids"])
    torch.save(work, workload)
    return model_dir, workload


def embedded_workload(
    artifacts: str, lang: str, n: int, seed: int = 0, overrides: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """(finetuned model dir, workload file) of the embedded default: stage=prune's batches for `lang`;
    the model is the store's run that `stage=prune <overrides>` reads (e.g. debug=tiny for tests)."""
    from hydra import compose, initialize_config_dir

    from xsub import store
    from xsub.__main__ import STAGES
    from xsub.config import register_configs
    from xsub.model import load_finetuned
    from xsub.stages.prune import pruning_batches

    register_configs(tuple(STAGES))
    overrides = [
        "stage=prune",
        "task=synth-cls",
        f"lang={lang}",
        f"seed={seed}",
        f"paths.artifacts={Path(artifacts).resolve()}",
        f"pruning.n_examples={n}",
        *overrides,
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    key = store.pruned_model_key(cfg)
    model_dir = store.path(cfg, key) / "model"
    if store.done(cfg, key) is None:
        sys.exit(f"no finetuned embedded model at {model_dir.parent}; make it with: {store.command(key)}")
    workload = CACHE / f"embedded-{lang}-n{n}-s{seed}-{key.hash}.pt"
    if workload.is_file() and workload.stat().st_mtime > (model_dir / "config.json").stat().st_mtime:
        return model_dir, workload
    model, tokenizer = load_finetuned(model_dir, "classification")
    pad_to = min(int(cfg.data.max_length), int(model.config.max_position_embeddings))
    batches = []
    for b in pruning_batches(cfg, lang, tokenizer):
        rows = [ids[att.bool()] for ids, att in zip(b["input_ids"], b["attention_mask"])]
        batches.append({"input_ids": rows, "labels": b["labels"]})
    work = {
        "batches": batches,
        "pad_id": int(tokenizer.pad_token_id),
        "pad_to": pad_to,
        "description": f"embedded default synth-cls/{lang}, {n} pruning examples",
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(work, workload)
    return model_dir, workload


def load_xsub_model(model_dir: Path, attn: str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation=attn)
    return model.to(device).eval()


def run_child(cmd: list[str], out: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement in its own process (a clean peak-memory window); its JSON result."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark child failed ({' '.join(cmd[:4])} ...):\n{tail}")
    return json.loads(out.read_text())


def reference_cmd(what: str, model_dir: Path, workload: Path, out: Path, args: Any, *extra: str) -> list[str]:
    if not REFERENCE_PYTHON.is_file():
        raise SystemExit(
            f"no reference environment at {REFERENCE_PYTHON.parent.parent}; make it: make bench-reference"
        )
    return [
        str(REFERENCE_PYTHON),
        str(REFERENCE_SCRIPT),
        what,
        "--model",
        str(model_dir),
        "--workload",
        str(workload),
        "--out",
        str(out),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        *extra,
    ]


def spearman(a: Any, b: Any) -> float:
    from torchmetrics.functional import spearman_corrcoef

    a, b = (
        torch.as_tensor(a, dtype=torch.float64).flatten(),
        torch.as_tensor(b, dtype=torch.float64).flatten(),
    )
    return float(spearman_corrcoef(a, b))


def first_pruned(importance: Any, fraction: float = 0.1) -> set[int]:
    """The heads the first pruning round would mask (xsub's selection rule)."""
    from xsub.pruning.structured import select_lowest

    imp = torch.as_tensor(importance, dtype=torch.float64)
    k = max(1, int(fraction * imp.numel()))
    return set(select_lowest(imp, torch.ones_like(imp, dtype=torch.bool), k).tolist())


def versions(reference: str = "") -> str:
    """Software and machine; `reference` = the transformers version the reference child reported."""
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    ref = f" / {reference} (reference)" if reference else ""
    return (
        f"torch {torch.__version__}, transformers {transformers.__version__} (xsub){ref}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu})"
    )


# --------------------------------------------------------------------------------------------------
# What importance.py and prune_end_to_end.py share around their measurements


def parser(doc: str, *, n: int, quick_n: int, models: list[str], json_name: str) -> argparse.ArgumentParser:
    """Options every comparison takes (workloads, device, output), and those of its xsub child."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=["xlmr", "embedded"], default=models)
    p.add_argument("--n", type=int, default=n, help="xlmr: examples")
    p.add_argument("--batch-size", type=int, default=8, help="xlmr: examples per batch")
    p.add_argument("--shape", choices=list(SHAPES), default="base", help="xlmr: base, or tiny (smoke tests)")
    p.add_argument("--embedded-n", type=int, default=1000, help="embedded: pruning examples (demo: 1000)")
    p.add_argument("--lang", default="xsvo", help="embedded: language of the pruning data")
    p.add_argument("--artifacts", default="artifacts", help="store holding the finetuned embedded model")
    p.add_argument(
        "--embedded-overrides", nargs="*", default=[], help="embedded: config overrides naming its run"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help=f"xlmr n = {quick_n}")
    p.add_argument("--json", default=str(CACHE / json_name), help="all results as JSON")
    p.set_defaults(quick_n=quick_n)
    for hidden in ("--model-dir", "--workload", "--out"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.quick:
        args.n = args.quick_n
    return args


def workloads(args: argparse.Namespace) -> Iterator[tuple[str, Path, Path, str]]:
    """(name, model dir, workload file, description) for each of --models, made on first use."""
    for name in args.models:
        if name == "xlmr":
            model_dir, workload = xlmr_workload(args.n, args.batch_size, shape=args.shape)
        else:
            model_dir, workload = embedded_workload(
                args.artifacts, args.lang, args.embedded_n, overrides=tuple(args.embedded_overrides)
            )
        yield name, model_dir, workload, torch.load(workload, weights_only=True)["description"]


def child_cmd(script: str, model_dir: Path, workload: Path, out: Path, args: Any, *extra: str) -> list[str]:
    """The command re-running `script` as the xsub child of one measurement."""
    return [
        sys.executable,
        script,
        "--child",
        "--model-dir",
        str(model_dir),
        "--workload",
        str(workload),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--out",
        str(out),
        *extra,
    ]


def save(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    """All rows as JSON (--json) with the setting, and the versions line."""
    reference = next((rows[0]["versions"]["transformers"] for rows in results.values()), "")
    blob = {"versions": versions(reference), "device": args.device, "threads": args.threads, **results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(blob, indent=1))
    print(blob["versions"])


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def table(headers: list[str], rows: list[list[Any]], title: str) -> str:
    from xsub.tables import format_table

    return format_table(headers, [[str(c) for c in r] for r in rows], title)
