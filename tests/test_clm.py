"""Causal-LM task kind (`clm`): blocks, labels, perplexity over predicted tokens, bits per byte, the
embedded decoder synth-gpt, kind checks, configs (synth-clm, synth-gpt, demo-llm, presets, head_unit)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path

import datasets
import pytest
import torch
from torch import nn

from xsub.__main__ import compose_runs
from xsub.config import ArchConfig, ConfigError, ModelConfig
from xsub.data.encode import encode
from xsub.data.synthetic import word_level_tokenizer
from xsub.metrics import IGNORE, TaskMetric, token_bytes
from xsub.model import attach_gates, gate_shape, is_decoder, load_model, num_kv_heads
from xsub.trainer import Collator

WORDS = [f"w{i}" for i in range(40)]
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(d)
    return d


def test_clm_blocks_start_with_bos_and_separate_documents(tokenizer) -> None:
    ds = datasets.Dataset.from_dict({"text": ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9 w10"]})
    enc = encode(ds, tokenizer, "clm", max_length=5)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = [list(map(int, r["input_ids"])) for r in enc]
    assert all(len(r) == 5 and r[0] == cls for r in rows)
    body = [t for r in rows for t in r[1:]]
    ids = tokenizer("w1 w2 w3", add_special_tokens=False)["input_ids"]
    assert body[:4] == [*ids, sep]  # each document ends with the end-of-text token
    assert len(rows) == (3 + 1 + 2 + 1 + 5 + 1) // 4


def test_collator_labels_are_inputs_with_padding_ignored(tokenizer) -> None:
    collate = Collator(tokenizer, "clm")
    batch = collate(
        [
            {"input_ids": [2, 5, 6, 7], "attention_mask": [1, 1, 1, 1]},
            {"input_ids": [2, 8], "attention_mask": [1, 1]},
        ]
    )
    assert batch["labels"].tolist() == [[2, 5, 6, 7], [2, 8, IGNORE, IGNORE]]


def test_perplexity_counts_predicted_tokens_only_and_bits_per_byte() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen)
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    labels[1, 3:] = IGNORE
    tb = torch.arange(11, dtype=torch.float64) % 3 + 1
    metric = TaskMetric("clm", token_bytes=tb)
    metric.update(logits[:1], labels[:1])
    metric.update(logits[1:], labels[1:])
    out = metric.compute()
    pred, target = logits[:, :-1], labels[:, 1:]
    keep = target != IGNORE
    nll = nn.functional.cross_entropy(pred[keep], target[keep], reduction="sum")
    assert out["perplexity"] == pytest.approx(math.exp(float(nll) / int(keep.sum())), rel=1e-6)
    n_bytes = float(tb[target[keep]].sum())
    assert out["bits_per_byte"] == pytest.approx(float(nll) / (math.log(2) * n_bytes), rel=1e-6)
    assert not metric.better(out["perplexity"], out["perplexity"] - 1)  # lower is better


def test_token_bytes_of_common_vocabularies(tokenizer) -> None:
    tb = token_bytes(tokenizer)
    assert tb[tokenizer.pad_token_id] == 0 and tb[tokenizer.cls_token_id] == 0
    assert tb[tokenizer.convert_tokens_to_ids("w12")] == len("w12") + 1  # word-level: word + its space


def tiny_gpt(kv: int = 2) -> ModelConfig:
    arch = ArchConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv,
        intermediate_size=48,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ModelConfig(name="tiny-gpt", source="embedded", family="llama", arch=arch)


def test_embedded_decoder_is_a_gqa_llama(tok_dir: Path) -> None:
    model, tok = load_model(tiny_gpt(), "clm", 0, Path("/nonexistent"), seed=0, tokenizer_dir=tok_dir)
    assert model.config.model_type == "llama" and is_decoder(model)
    assert num_kv_heads(model) == 2 and tuple(gate_shape(model)) == (2, 4, 8, 48)
    assert model.config.bos_token_id == tok.cls_token_id and model.config.eos_token_id == tok.sep_token_id
    enc = encode(datasets.Dataset.from_dict({"text": [" ".join(WORDS)]}), tok, "clm", 16)
    batch = Collator(tok, "clm")([enc[i] for i in range(len(enc))])
    loss = model(**batch).loss
    assert math.isfinite(float(loss))
    with attach_gates(model) as gates, torch.no_grad():  # a head removed changes the loss
        gates.head[0, :2] = 0
        assert float(model(**batch).loss) != pytest.approx(float(loss), abs=1e-6)
    again, _ = load_model(tiny_gpt(), "clm", 0, Path("/nonexistent"), seed=0, tokenizer_dir=tok_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_kind_checks(tok_dir: Path) -> None:
    with pytest.raises(ConfigError, match="split into"):
        load_model(tiny_gpt(kv=3), "clm", 0, Path("/x"), tokenizer_dir=tok_dir)
    bert = ModelConfig(name="b", source="embedded", arch=ArchConfig(hidden_size=32, num_hidden_layers=1))
    model, _ = load_model(bert, "mlm", 0, Path("/x"), tokenizer_dir=tok_dir)
    from xsub.model.load import _check_kind

    with pytest.raises(ConfigError, match="needs a decoder"):
        _check_kind(model.config, "clm", "model b")
    gpt, _ = load_model(tiny_gpt(), "clm", 0, Path("/x"), tokenizer_dir=tok_dir)
    with pytest.raises(ConfigError, match="causal LM"):
        _check_kind(gpt.config, "mlm", "model g")


def compose(*overrides: str):
    (cfg,) = compose_runs(list(overrides), multirun=False)
    return cfg


def test_configs_compose() -> None:
    cfg = compose("task=synth-clm", "model=synth-gpt", "lang=all")
    assert cfg.task.kind == "clm" and cfg.model.arch.num_key_value_heads == 2
    assert (
        compose("task=synth-clm", "model=synth-gpt", "pruning.head_unit=kv_group").pruning.head_unit
        == "kv_group"
    )
    demo = compose("experiment=demo-llm")
    assert [s[0] for s in demo.pipeline.steps] == [
        "stage=train",
        "stage=prune",
        "stage=analyze",
        "stage=analyze",
        "stage=prune",  # LAPE
        "stage=analyze",  # ablation
        "stage=prune",  # average precision
        "stage=analyze",  # steering
    ]
    for step in demo.pipeline.steps:
        compose(*step)


def test_kv_group_pruning_masks_whole_groups(tok_dir: Path) -> None:
    from xsub.config import HeadUnit, PruningConfig
    from xsub.pruning.structured import prune_heads

    model, tok = load_model(tiny_gpt(), "clm", 0, Path("/x"), seed=0, tokenizer_dir=tok_dir)
    enc = encode(datasets.Dataset.from_dict({"text": [" ".join(WORDS)] * 4}), tok, "clm", 16)
    batches = [Collator(tok, "clm")([enc[i] for i in range(len(enc))])]
    cfg = PruningConfig(head_unit=HeadUnit.kv_group, heads_per_round=0.25, max_rounds=2, mlm_threshold=100.0)
    result = prune_heads(model, batches, TaskMetric("clm"), "cpu", cfg)
    heads = result.mask.heads
    assert tuple(heads.shape) == (2, 4) and int(heads.sum()) == 8 - 2 * 2  # two groups of two heads off
    assert torch.equal(heads[:, 0], heads[:, 1]) and torch.equal(heads[:, 2], heads[:, 3])
    assert result.mask.meta.extra["head_unit"] == "kv_group"
    assert "kv_group" in result.history[-1].importance


def test_flores_clm_reads_a_local_copy(tmp_path: Path) -> None:
    import types

    import pyarrow as pa
    import pyarrow.parquet as pq

    from xsub.config import task_config
    from xsub.data.clm import load_flores

    for split in ("dev", "devtest"):
        (tmp_path / "deu_Latn" / split).mkdir(parents=True)
        rows = {"id": [1, 2], "sentence": [f"Ein Satz {split}.", "Noch einer."]}
        pq.write_table(pa.table(rows), tmp_path / "deu_Latn" / split / "part.parquet")
    task = task_config("flores-clm")
    assert (task.kind, task.train_split, task.dev_split) == ("clm", "dev", "devtest")
    ds = load_flores(task, "de", "devtest", types.SimpleNamespace(path=str(tmp_path)))
    assert ds.column_names == ["text"] and ds["text"] == ["Ein Satz devtest.", "Noch einer."]
