"""Checkpoints that ship only a SentencePiece model (mT5, XGLM layouts): a tiny model trained here in
well under a second loads through the project's tokenizer path, and a failure is one line naming the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xsub.config import ConfigError
from xsub.data.tokenizer import load_tokenizer

spm = pytest.importorskip("sentencepiece")

SENTENCES = [f"word{i % 37} token{i % 11} the quick brown fox {i}" for i in range(300)] + [
    "Die Katze schläft.",
    "Le chat dort.",
] * 20


def _train(prefix: Path, model_type: str, **ids: int) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_prefix=str(prefix),
        vocab_size=64,
        model_type=model_type,
        minloglevel=2,
        **ids,
    )
    Path(f"{prefix}.vocab").unlink()  # hub checkpoints ship the .model only


def _json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


def mt5_layout(d: Path) -> Path:
    """google/mt5-*: config.json, spiece.model, special_tokens_map.json, tokenizer_config.json."""
    d.mkdir(parents=True, exist_ok=True)
    _train(d / "spiece", "unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    _json(d / "config.json", {"model_type": "mt5", "vocab_size": 64, "d_model": 8, "num_heads": 2})
    _json(d / "special_tokens_map.json", {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    _json(d / "tokenizer_config.json", {"tokenizer_class": "T5Tokenizer", "extra_ids": 0})
    return d


def xglm_layout(d: Path) -> Path:
    """facebook/xglm-*: config.json, sentencepiece.bpe.model, tokenizer_config.json."""
    d.mkdir(parents=True, exist_ok=True)
    _train(d / "sentencepiece.bpe", "bpe")
    _json(d / "config.json", {"model_type": "xglm", "vocab_size": 64})
    _json(d / "tokenizer_config.json", {"tokenizer_class": "XGLMTokenizer"})
    return d


@pytest.mark.parametrize("layout", [mt5_layout, xglm_layout], ids=["mt5", "xglm"])
def test_sentencepiece_only_checkpoint_loads(tmp_path: Path, layout) -> None:
    d = layout(tmp_path / "ckpt")
    assert not (d / "tokenizer.json").exists()
    tok = load_tokenizer(d)
    assert tok.is_fast  # converted from the SentencePiece model
    ids = tok("the quick brown fox")["input_ids"]
    assert len(ids) > 2 and tok.pad_token_id is not None and tok.eos_token_id in ids


def test_missing_sentencepiece_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = mt5_layout(tmp_path / "ckpt")
    for name in [m for m in sys.modules if m == "sentencepiece" or m.startswith("sentencepiece.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        load_tokenizer(d, where="model mt5-base")
    msg = str(err.value)
    assert "\n" not in msg
    assert "ships only spiece.model" in msg and "pip install sentencepiece" in msg


def test_unloadable_tokenizer_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_tokenizer(tmp_path)
    assert "\n" not in str(err.value) and "cannot load the tokenizer" in str(err.value)
