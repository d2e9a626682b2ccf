"""`precision=auto|fp32|bf16`: the rule (xsub.precision), its use by autocast, and bf16 agreeing with fp32
on the embedded default (importance ranking, the pruning loop's final mask)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_cfg
from xsub import precision, store
from xsub.config import ConfigError
from xsub.metrics import task_metric
from xsub.model import attach_gates, load_finetuned
from xsub.pruning.importance import importance
from xsub.pruning.structured import prune_heads
from xsub.stages import prune as prune_stage
from xsub.trainer import autocast

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve("auto", CPU) == ("bf16" if native else "fp32")
    assert precision.resolve("auto", "cpu") == precision.describe("auto", CPU)
    assert precision.dtype("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    assert precision.resolve("auto", CUDA) == "bf16"  # GPU: bf16 as before, whatever the CPU
    for forced in ("fp32", "bf16"):
        assert precision.resolve(forced, CPU) == forced
        assert precision.resolve(forced, CUDA) == forced
    with autocast(CPU, "auto"):
        assert torch.is_autocast_enabled("cpu") is native
    with autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_the_probe_reads_torchs_cpu_capabilities(monkeypatch):
    caps = torch.cpu.get_capabilities()
    expected = any(caps.get(k, False) for k in precision.NATIVE_BF16_FEATURES)
    assert precision.cpu_has_native_bf16() is (expected and torch.backends.mkldnn.is_available())
    precision.cpu_has_native_bf16.cache_clear()
    try:
        # an AVX512 CPU without the bf16 instructions (oneDNN would emulate bf16): fp32
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bw": True})
        assert precision.cpu_has_native_bf16() is False
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
        assert precision.cpu_has_native_bf16() is torch.backends.mkldnn.is_available()
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_precision_is_one_top_level_key_validated_in_one_line():
    assert make_cfg("stage=train", "task=synth-cls", "lang=xsvo").precision == "auto"
    assert make_cfg("stage=train", "task=synth-cls", "lang=xsvo", "precision=fp32").precision == "fp32"
    from xsub.__main__ import compose_runs

    with pytest.raises(
        ConfigError, match=r"precision=fp16: Invalid value 'fp16', expected one of \[auto, fp32, bf16\]"
    ):
        compose_runs(["stage=train", "task=synth-cls", "lang=xsvo", "precision=fp16"], multirun=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp16", CPU)


@pytest.mark.skipif(not precision.cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_agrees_with_fp32_on_the_embedded_default(finetuned_root):
    """The importance ranking (Spearman >= 0.99) and the final mask (the same, or one round apart)."""
    from torchmetrics.functional import spearman_corrcoef

    cfg = make_cfg(
        "stage=prune",
        "task=synth-cls",
        "debug=tiny",
        "lang=xsvo",
        "pruning.n_examples=48",
        "pruning.batch_size=16",
        "pruning.max_rounds=3",
        f"paths.artifacts={finetuned_root}",
    )
    model, tokenizer = load_finetuned(
        store.path(cfg, store.pruned_model_key(cfg)) / "model", "classification"
    )
    batches = prune_stage.pruning_batches(cfg, "xsvo", tokenizer)
    metric = task_metric(cfg.task)
    gates = attach_gates(model)
    imp = {p: importance(model, gates, batches, metric, CPU, precision=p).head for p in ("fp32", "bf16")}
    assert imp["bf16"].dtype == torch.float32
    rho = float(spearman_corrcoef(imp["fp32"].flatten().double(), imp["bf16"].flatten().double()))
    assert rho >= 0.99, (rho, imp)

    runs = {p: prune_heads(model, batches, metric, CPU, cfg.pruning, precision=p) for p in ("fp32", "bf16")}
    final = {p: r.mask.heads.bool() for p, r in runs.items()}
    if not torch.equal(final["fp32"], final["bf16"]):  # then it is the fp32 loop's mask one round off
        accepted = runs["fp32"].mask.meta.extra["accepted_round"]
        near = [r.mask["head"] for r in runs["fp32"].history if abs(r.round - accepted) == 1]
        assert any(torch.equal(m.bool(), final["bf16"]) for m in near), (final, near)


def test_a_pruning_state_is_resumed_only_at_the_precision_that_wrote_it(monkeypatch, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from data_fixtures import padded_batches
    from xsub.config import PruningConfig
    from xsub.metrics import TaskMetric

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertForSequenceClassification(config).eval()
    batches = [
        b | {"labels": torch.zeros(len(b["input_ids"]), dtype=torch.long)}
        for b in padded_batches(40, 1, 4, 8, 0)
    ]
    cfg = PruningConfig(threshold=0.0, max_rounds=1)
    state = store.Checkpoint(tmp_path / "state.pt", "mask:test")
    rounds: list[int] = []

    def prune(**kw) -> None:
        metric = TaskMetric("classification", 2)
        prune_heads(
            model,
            batches,
            metric,
            CPU,
            cfg,
            checkpoint=state,
            on_round=lambda r: rounds.append(r.round),
            **kw,
        )

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # auto = fp32: written
    prune()
    assert rounds == [0, 1]
    prune(precision="fp32")  # the same precision: resumed, nothing measured again
    assert rounds == [0, 1]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # auto = bf16 now: a fresh start
    prune()
    assert rounds == [0, 1, 0, 1]


def test_auto_keeps_tiny_models_in_fp32(monkeypatch):
    """A tiny model is per-op overhead on a CPU: bf16 autocast would slow it down."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve("auto", CPU, hidden_size=64) == "fp32"
    assert precision.resolve("auto", CPU, hidden_size=768) == "bf16"
    assert precision.resolve("auto", CPU) == "bf16"  # a pretrained checkpoint
    assert precision.resolve("bf16", CPU, hidden_size=64) == "bf16"  # forced
    assert precision.for_run(make_cfg("task=synth-cls")) == "fp32"  # the embedded default
    assert precision.for_run(make_cfg("task=synth-cls", "precision=bf16")) == "bf16"
