"""The language table, the per-task lists, and the generated conf/lang/*.yaml files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from xsub.languages import (
    LANGUAGES,
    MARC,
    PAWSX,
    TASK_LANGUAGES,
    WIKIANN,
    WIKIPEDIA,
    WIKIPEDIA_SEED,
    XNLI,
    Language,
    synthetic_languages,
    write_lang_configs,
)

CONF = Path(__file__).resolve().parents[1] / "conf"

# ISO 15924 codes a Wikipedia edition can plausibly be written in (registry subset).
ISO_15924 = frozenset({
    "Adlm", "Arab", "Armn", "Bali", "Beng", "Bopo", "Brai", "Bugi", "Cans", "Cher", "Copt", "Cyrl", "Deva",
    "Ethi", "Geor", "Goth", "Grek", "Gujr", "Guru", "Hang", "Hani", "Hans", "Hant", "Hebr", "Hira", "Java",
    "Jpan", "Kana", "Khmr", "Knda", "Kore", "Laoo", "Latn", "Mlym", "Mong", "Mtei", "Mymr", "Nkoo", "Olck",
    "Orya", "Runr", "Sinh", "Sund", "Syrc", "Taml", "Telu", "Tfng", "Tglg", "Thaa", "Thai", "Tibt", "Vaii",
    "Yiii", "Zyyy",
})  # fmt: skip


def test_committed_lang_files_match_generator(tmp_path: Path) -> None:
    synthetic = synthetic_languages()
    n = write_lang_configs(tmp_path, extra=synthetic)
    generated = sorted((tmp_path / "lang").glob("*.yaml"))
    assert n == len(generated) == len(LANGUAGES) + len(synthetic) + 1
    stale = [p.name for p in generated if not (CONF / "lang" / p.name).is_file()]
    assert not stale, f"missing in conf/lang (run `python -m xsub.languages`): {stale}"
    differ = [
        p.name for p in generated if (CONF / "lang" / p.name).read_text("utf-8") != p.read_text("utf-8")
    ]
    assert not differ, f"out of date in conf/lang (run `python -m xsub.languages`): {differ}"


def test_every_lang_file_is_well_formed() -> None:
    """Generated or hand-added: the package header names the file, and code/name/script are strings."""
    for path in sorted((CONF / "lang").glob("*.yaml")):
        header = path.read_text("utf-8").splitlines()[0]
        assert header == f"# @package lang.{path.stem}", path.name
        node = OmegaConf.load(path)
        assert set(node) == {"code", "name", "script"}, path.name
        assert all(isinstance(node[k], str) for k in node), path.name  # e.g. `no` must stay a string
        assert node.code == path.stem, path.name


def test_task_list_sizes() -> None:
    assert len(WIKIANN) == len(set(WIKIANN)) == 176
    assert len(XNLI) == 15
    assert len(PAWSX) == 7
    assert len(MARC) == 6
    assert set(MARC) < set(PAWSX)
    assert {"bat-smg", "be-x-old", "cbk-zam", "fiu-vro", "zh-min-nan", "zh-yue", "simple"} <= set(WIKIANN)


def test_every_task_language_has_an_entry() -> None:
    for task, codes in TASK_LANGUAGES.items():
        missing = [c for c in codes if c not in LANGUAGES]
        assert not missing, f"{task}: {missing}"
    assert set(WIKIPEDIA) >= set(WIKIANN) | set(XNLI) | set(PAWSX) | set(MARC) | set(WIKIPEDIA_SEED)


def test_table_entries() -> None:
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert re.fullmatch(r"[a-z]{2,3}(-[a-z]+)*|simple", code), code
        assert lang.name and lang.name != code, code
        assert re.fullmatch(r"[A-Z][a-z]{3}", lang.script) and lang.script in ISO_15924, (code, lang.script)


def test_every_code_is_a_plain_string_override() -> None:
    parser = OverridesParser.create()
    for code in LANGUAGES:
        value = parser.parse_override(f"lang={code}").value()
        assert isinstance(value, str) and value == code, (code, value)
    sweep = parser.parse_override("lang=en,bat-smg,zh-min-nan")
    assert [str(v) for v in sweep.sweep_string_iterator()] == ["en", "bat-smg", "zh-min-nan"]


@pytest.fixture
def scratch_conf(tmp_path: Path) -> Path:
    shutil.copytree(CONF / "lang", tmp_path / "lang")
    (tmp_path / "config.yaml").write_text("defaults:\n  - lang: en\n  - _self_\n")
    return tmp_path


@pytest.mark.parametrize(
    ("override", "keys"),
    [
        ("lang=zh-min-nan", ["zh-min-nan"]),
        ("lang=no", ["no"]),
        ("lang=[en,bat-smg]", ["en", "bat-smg"]),
        ("lang=[be-x-old,cbk-zam,fiu-vro,zh-yue]", ["be-x-old", "cbk-zam", "fiu-vro", "zh-yue"]),
        ("lang=all", ["all"]),
    ],
)
def test_hydra_selects_languages(scratch_conf: Path, override: str, keys: list[str]) -> None:
    with initialize_config_dir(config_dir=str(scratch_conf), version_base="1.3"):
        cfg = compose("config", overrides=[override, "+first=${lang." + keys[0] + ".code}"])
    assert list(cfg.lang) == keys
    assert [cfg.lang[k].code for k in keys] == keys
    assert cfg.first == keys[0]


def test_extra_languages_are_written(tmp_path: Path) -> None:
    extra = {"syn-a": Language("syn-a", "Synthetic A", "Latn")}
    assert write_lang_configs(tmp_path, extra=extra) == len(LANGUAGES) + 2
    text = (tmp_path / "lang" / "syn-a.yaml").read_text("utf-8")
    assert text == "# @package lang.syn-a\ncode: syn-a\nname: Synthetic A\nscript: Latn\n"
    with pytest.raises(ValueError, match="differs"):
        write_lang_configs(tmp_path, extra={"x": Language("y", "Y", "Latn")})


def test_file_format() -> None:
    assert (CONF / "lang" / "en.yaml").read_text("utf-8") == (
        "# @package lang.en\ncode: en\nname: English\nscript: Latn\n"
    )
    assert (CONF / "lang" / "all.yaml").read_text("utf-8") == (
        "# @package lang.all\ncode: all\nname: all languages of the task\nscript: ''\n"
    )
