"""Tokenizer loading with one-line errors that name the fix.

Checkpoints that ship only a SentencePiece model (mT5's `spiece.model`, XGLM's `sentencepiece.bpe.model`,
no `tokenizer.json`) are converted to a fast tokenizer when loaded, which needs the `sentencepiece` and
`protobuf` packages. Without them transformers 5 tries its tiktoken reader next and fails with an
unrelated "`tiktoken` is required" message; `load_tokenizer` names the real fix instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from xsub.config import ConfigError

SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")
CONVERSION_PACKAGES = ("sentencepiece", "google.protobuf")
PIP_NAMES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}


def _missing_packages() -> list[str]:
    missing = []
    for module in CONVERSION_PACKAGES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
            found = False
        if not found:
            missing.append(PIP_NAMES[module])
    return missing


def _sentencepiece_only(directory: Path) -> str:
    """The SentencePiece file of a local checkpoint without tokenizer.json, else ""."""
    if not directory.is_dir() or (directory / "tokenizer.json").is_file():
        return ""
    return next((f for f in SENTENCEPIECE_FILES if (directory / f).is_file()), "")


def tokenizer_error(source: str | Path, error: BaseException, where: str = "") -> ConfigError:
    """One ConfigError line for a failed `AutoTokenizer.from_pretrained(source)`, naming the fix."""
    where = where or f"tokenizer {source}"
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    missing = _missing_packages()
    spm_file = _sentencepiece_only(Path(str(source)).expanduser())
    conversion = any(k in str(error) for k in ("sentencepiece", "tiktoken", "protobuf", "SentencePiece"))
    if missing and (spm_file or conversion):
        shipped = f" ships only {spm_file}" if spm_file else " needs a SentencePiece conversion"
        return ConfigError(
            f"{where}{shipped}, which needs {' and '.join(missing)}: pip install {' '.join(missing)} "
            f"(both are dependencies of xsub; reinstall with pip install -e .)"
        )
    if isinstance(error, OSError):
        return ConfigError(
            f"{where}: cannot load the tokenizer of '{source}' ({type(error).__name__}: {text}); if it is a "
            f"hub id and you are offline, download it once with: hf download {source}"
        )
    return ConfigError(f"{where}: cannot load the tokenizer of '{source}' ({type(error).__name__}: {text})")


def load_tokenizer(source: str | Path, where: str = "", **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained(source)`; any failure becomes one ConfigError line naming the fix."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), **kwargs)
    except Exception as e:  # every tokenizer failure gets the one-line treatment
        raise tokenizer_error(source, e, where) from e
