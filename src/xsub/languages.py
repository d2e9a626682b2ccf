"""Language table: every language any task knows, and the per-task language lists.

`LANGUAGES` maps a code, spelled exactly as the hub spells the dataset subset (WikiANN config,
Wikipedia wiki code: `bat-smg`, `zh-min-nan`, `simple`, `no`, ...), to its English name and ISO 15924
script. `conf/lang/<code>.yaml` is generated from it (`python -m xsub.languages`); each file puts its
node at `lang.<code>` (explicit `# @package`), which is what lets `lang=[en,de]` select several
languages and `lang=all` stand for all languages of the task. Hyphenated codes need no mangling:
`lang=zh-min-nan`, `lang=[en,bat-smg]`, `-m lang=en,bat-smg` and `${lang.zh-min-nan.code}` all work
in Hydra 1.3 / OmegaConf 2.3. Values are YAML-quoted where needed (`code: 'no'`: bare `no` is a
boolean to OmegaConf).

Wikipedia: `wikimedia/wikipedia` has a `YYYYMMDD.<code>` subset (e.g. `20231101.en`) for ~300 wikis;
`WIKIPEDIA` lists the ones the project has names and scripts for. For any other wiki, add an entry
(or a hand-written `conf/lang/<code>.yaml` in the same format) and put the code in the task's
`languages`.

`SYNTHETIC_LANGUAGES` is the table of the embedded default's generated languages (`xsub.data.synthetic`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Language:
    """One language: hub code, English name, ISO 15924 script."""

    code: str
    name: str
    script: str


# code: (English name, ISO 15924 script). Codes are the hub's subset names. Wikipedia editions that
# are written in a script other than the language's usual one carry the wiki's script (cdo, hak,
# zh-min-nan: Latin romanisations; arc: Syriac).
_TABLE: dict[str, tuple[str, str]] = {
    "ace": ("Achinese", "Latn"),
    "af": ("Afrikaans", "Latn"),
    "als": ("Alemannic", "Latn"),  # als.wikipedia is Alemannic German, not ISO 639-3 `als` (Tosk)
    "am": ("Amharic", "Ethi"),
    "an": ("Aragonese", "Latn"),
    "ang": ("Old English", "Latn"),
    "ar": ("Arabic", "Arab"),
    "arc": ("Aramaic", "Syrc"),
    "arz": ("Egyptian Arabic", "Arab"),
    "as": ("Assamese", "Beng"),
    "ast": ("Asturian", "Latn"),
    "ay": ("Aymara", "Latn"),
    "az": ("Azerbaijani", "Latn"),
    "ba": ("Bashkir", "Cyrl"),
    "bar": ("Bavarian", "Latn"),
    "bat-smg": ("Samogitian", "Latn"),
    "be": ("Belarusian", "Cyrl"),
    "be-x-old": ("Belarusian (Taraškievica)", "Cyrl"),
    "bg": ("Bulgarian", "Cyrl"),
    "bh": ("Bhojpuri", "Deva"),  # the `bh` (Bihari) wiki is written in Bhojpuri
    "bn": ("Bengali", "Beng"),
    "bo": ("Tibetan", "Tibt"),
    "br": ("Breton", "Latn"),
    "bs": ("Bosnian", "Latn"),
    "ca": ("Catalan", "Latn"),
    "cbk-zam": ("Chavacano", "Latn"),
    "cdo": ("Min Dong Chinese", "Latn"),
    "ce": ("Chechen", "Cyrl"),
    "ceb": ("Cebuano", "Latn"),
    "ckb": ("Central Kurdish", "Arab"),
    "co": ("Corsican", "Latn"),
    "crh": ("Crimean Tatar", "Latn"),
    "cs": ("Czech", "Latn"),
    "csb": ("Kashubian", "Latn"),
    "cv": ("Chuvash", "Cyrl"),
    "cy": ("Welsh", "Latn"),
    "da": ("Danish", "Latn"),
    "de": ("German", "Latn"),
    "diq": ("Zazaki", "Latn"),
    "dv": ("Dhivehi", "Thaa"),
    "el": ("Greek", "Grek"),
    "eml": ("Emilian-Romagnol", "Latn"),
    "en": ("English", "Latn"),
    "eo": ("Esperanto", "Latn"),
    "es": ("Spanish", "Latn"),
    "et": ("Estonian", "Latn"),
    "eu": ("Basque", "Latn"),
    "ext": ("Extremaduran", "Latn"),
    "fa": ("Persian", "Arab"),
    "fi": ("Finnish", "Latn"),
    "fiu-vro": ("Võro", "Latn"),
    "fo": ("Faroese", "Latn"),
    "fr": ("French", "Latn"),
    "frr": ("North Frisian", "Latn"),
    "fur": ("Friulian", "Latn"),
    "fy": ("West Frisian", "Latn"),
    "ga": ("Irish", "Latn"),
    "gan": ("Gan Chinese", "Hani"),
    "gd": ("Scottish Gaelic", "Latn"),
    "gl": ("Galician", "Latn"),
    "gn": ("Guarani", "Latn"),
    "gu": ("Gujarati", "Gujr"),
    "ha": ("Hausa", "Latn"),
    "hak": ("Hakka Chinese", "Latn"),
    "he": ("Hebrew", "Hebr"),
    "hi": ("Hindi", "Deva"),
    "hr": ("Croatian", "Latn"),
    "hsb": ("Upper Sorbian", "Latn"),
    "hu": ("Hungarian", "Latn"),
    "hy": ("Armenian", "Armn"),
    "ia": ("Interlingua", "Latn"),
    "id": ("Indonesian", "Latn"),
    "ig": ("Igbo", "Latn"),
    "ilo": ("Ilocano", "Latn"),
    "io": ("Ido", "Latn"),
    "is": ("Icelandic", "Latn"),
    "it": ("Italian", "Latn"),
    "ja": ("Japanese", "Jpan"),
    "jbo": ("Lojban", "Latn"),
    "jv": ("Javanese", "Latn"),
    "ka": ("Georgian", "Geor"),
    "kk": ("Kazakh", "Cyrl"),
    "km": ("Khmer", "Khmr"),
    "kn": ("Kannada", "Knda"),
    "ko": ("Korean", "Kore"),
    "ksh": ("Colognian", "Latn"),
    "ku": ("Kurdish (Kurmanji)", "Latn"),
    "ky": ("Kyrgyz", "Cyrl"),
    "la": ("Latin", "Latn"),
    "lb": ("Luxembourgish", "Latn"),
    "li": ("Limburgish", "Latn"),
    "lij": ("Ligurian", "Latn"),
    "lmo": ("Lombard", "Latn"),
    "ln": ("Lingala", "Latn"),
    "lo": ("Lao", "Laoo"),
    "lt": ("Lithuanian", "Latn"),
    "lv": ("Latvian", "Latn"),
    "map-bms": ("Banyumasan", "Latn"),
    "mg": ("Malagasy", "Latn"),
    "mhr": ("Meadow Mari", "Cyrl"),
    "mi": ("Maori", "Latn"),
    "min": ("Minangkabau", "Latn"),
    "mk": ("Macedonian", "Cyrl"),
    "ml": ("Malayalam", "Mlym"),
    "mn": ("Mongolian", "Cyrl"),
    "mr": ("Marathi", "Deva"),
    "ms": ("Malay", "Latn"),
    "mt": ("Maltese", "Latn"),
    "mwl": ("Mirandese", "Latn"),
    "my": ("Burmese", "Mymr"),
    "mzn": ("Mazanderani", "Arab"),
    "nap": ("Neapolitan", "Latn"),
    "nds": ("Low German", "Latn"),
    "nds-nl": ("Dutch Low Saxon", "Latn"),
    "ne": ("Nepali", "Deva"),
    "nl": ("Dutch", "Latn"),
    "nn": ("Norwegian Nynorsk", "Latn"),
    "no": ("Norwegian (Bokmål)", "Latn"),
    "nov": ("Novial", "Latn"),
    "oc": ("Occitan", "Latn"),
    "om": ("Oromo", "Latn"),
    "or": ("Odia", "Orya"),
    "os": ("Ossetian", "Cyrl"),
    "pa": ("Punjabi", "Guru"),
    "pdc": ("Pennsylvania German", "Latn"),
    "pl": ("Polish", "Latn"),
    "pms": ("Piedmontese", "Latn"),
    "pnb": ("Western Punjabi", "Arab"),
    "ps": ("Pashto", "Arab"),
    "pt": ("Portuguese", "Latn"),
    "qu": ("Quechua", "Latn"),
    "rm": ("Romansh", "Latn"),
    "ro": ("Romanian", "Latn"),
    "roa-rup": ("Aromanian", "Latn"),
    "roa-tara": ("Tarantino", "Latn"),
    "ru": ("Russian", "Cyrl"),
    "rw": ("Kinyarwanda", "Latn"),
    "sa": ("Sanskrit", "Deva"),
    "sah": ("Yakut", "Cyrl"),
    "scn": ("Sicilian", "Latn"),
    "sco": ("Scots", "Latn"),
    "sd": ("Sindhi", "Arab"),
    "sh": ("Serbo-Croatian", "Latn"),
    "si": ("Sinhala", "Sinh"),
    "simple": ("Simple English", "Latn"),
    "sk": ("Slovak", "Latn"),
    "sl": ("Slovenian", "Latn"),
    "so": ("Somali", "Latn"),
    "sq": ("Albanian", "Latn"),
    "sr": ("Serbian", "Cyrl"),
    "su": ("Sundanese", "Latn"),
    "sv": ("Swedish", "Latn"),
    "sw": ("Swahili", "Latn"),
    "szl": ("Silesian", "Latn"),
    "ta": ("Tamil", "Taml"),
    "te": ("Telugu", "Telu"),
    "tg": ("Tajik", "Cyrl"),
    "th": ("Thai", "Thai"),
    "tk": ("Turkmen", "Latn"),
    "tl": ("Tagalog", "Latn"),
    "tr": ("Turkish", "Latn"),
    "tt": ("Tatar", "Cyrl"),
    "ug": ("Uyghur", "Arab"),
    "uk": ("Ukrainian", "Cyrl"),
    "ur": ("Urdu", "Arab"),
    "uz": ("Uzbek", "Latn"),
    "vec": ("Venetian", "Latn"),
    "vep": ("Veps", "Latn"),
    "vi": ("Vietnamese", "Latn"),
    "vls": ("West Flemish", "Latn"),
    "vo": ("Volapük", "Latn"),
    "wa": ("Walloon", "Latn"),
    "war": ("Waray", "Latn"),
    "wuu": ("Wu Chinese", "Hani"),
    "xh": ("Xhosa", "Latn"),
    "xmf": ("Mingrelian", "Geor"),
    "yi": ("Yiddish", "Hebr"),
    "yo": ("Yoruba", "Latn"),
    "zea": ("Zeelandic", "Latn"),
    "zh": ("Chinese", "Hani"),
    "zh-classical": ("Classical Chinese", "Hani"),
    "zh-min-nan": ("Min Nan Chinese", "Latn"),
    "zh-yue": ("Cantonese", "Hani"),
}

LANGUAGES: dict[str, Language] = {
    code: Language(code, name, script) for code, (name, script) in _TABLE.items()
}

# Per-task languages, in each source's own order.
XNLI: tuple[str, ...] = (
    "ar",
    "bg",
    "de",
    "el",
    "en",
    "es",
    "fr",
    "hi",
    "ru",
    "sw",
    "th",
    "tr",
    "ur",
    "vi",
    "zh",
)
PAWSX: tuple[str, ...] = ("de", "en", "es", "fr", "ja", "ko", "zh")
MARC: tuple[str, ...] = ("de", "en", "es", "fr", "ja", "zh")

# The 176 configs of `unimelb-nlp/wikiann` (Rahimi et al. 2019 splits), in the hub's order.
WIKIANN: tuple[str, ...] = (
    "ace", "af", "als", "am", "an", "ang", "ar", "arc", "arz", "as", "ast", "ay", "az", "ba", "bar",
    "bat-smg", "be", "be-x-old", "bg", "bh", "bn", "bo", "br", "bs", "ca", "cbk-zam", "cdo", "ce",
    "ceb", "ckb", "co", "crh", "cs", "csb", "cv", "cy", "da", "de", "diq", "dv", "el", "eml", "en",
    "eo", "es", "et", "eu", "ext", "fa", "fi", "fiu-vro", "fo", "fr", "frr", "fur", "fy", "ga", "gan",
    "gd", "gl", "gn", "gu", "hak", "he", "hi", "hr", "hsb", "hu", "hy", "ia", "id", "ig", "ilo", "io",
    "is", "it", "ja", "jbo", "jv", "ka", "kk", "km", "kn", "ko", "ksh", "ku", "ky", "la", "lb", "li",
    "lij", "lmo", "ln", "lt", "lv", "map-bms", "mg", "mhr", "mi", "min", "mk", "ml", "mn", "mr", "ms",
    "mt", "mwl", "my", "mzn", "nap", "nds", "ne", "nl", "nn", "no", "nov", "oc", "or", "os", "pa",
    "pdc", "pl", "pms", "pnb", "ps", "pt", "qu", "rm", "ro", "ru", "rw", "sa", "sah", "scn", "sco",
    "sd", "sh", "si", "simple", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw", "szl", "ta", "te",
    "tg", "th", "tk", "tl", "tr", "tt", "ug", "uk", "ur", "uz", "vec", "vep", "vi", "vls", "vo", "wa",
    "war", "wuu", "xmf", "yi", "yo", "zea", "zh", "zh-classical", "zh-min-nan", "zh-yue",
)  # fmt: skip

# MaxBelitsky/cross-lingual-subnetworks' MLM languages (`mbelitsky/wikipedia_subset` split names),
# in its order.
WIKIPEDIA_SEED: tuple[str, ...] = (
    "lt",
    "ru",
    "cs",
    "en",
    "fr",
    "de",
    "zh",
    "sw",
    "ar",
    "hi",
    "fa",
    "ur",
    "es",
)

# Wiki codes with a `wikimedia/wikipedia` subset `YYYYMMDD.<code>` that the table covers: every code
# above (all WikiANN configs are Wikipedia editions). Not exhaustive: ~300 wikis exist on the hub.
WIKIPEDIA: tuple[str, ...] = tuple(sorted(LANGUAGES))

TASK_LANGUAGES: dict[str, tuple[str, ...]] = {
    "xnli": XNLI,
    "paws-x": PAWSX,
    "marc": MARC,
    "wikiann": WIKIANN,
    "wikipedia": WIKIPEDIA,
}

# The embedded default's generated languages: name, script and the grammar settings from which
# `xsub.data.synthetic` builds each one's lexicon and renders its sentences. Their conf/lang files sit
# beside the real ones (`synthetic_languages`).
SYNTHETIC_SCRIPT = "Qaaa"  # ISO 15924 "reserved for private use": none of these languages has a real script

SYNTHETIC_LANGUAGES: dict[str, dict] = {
    "xsvo": {
        "name": "Synthetic SVO",
        "order": "SVO",
        "script": SYNTHETIC_SCRIPT,
        "consonants": "ptkmn",
        "det": True,
        "adj": "pre",
        "adposition": "pre",
        "case": False,
    },
    "xsvo2": {
        "name": "Synthetic SVO, second lexicon",
        "order": "SVO",
        "script": SYNTHETIC_SCRIPT,
        "consonants": "bdglr",
        "det": True,
        "adj": "post",
        "adposition": "pre",
        "case": False,
    },
    "xsov": {
        "name": "Synthetic SOV, agent particle",
        "order": "SOV",
        "script": SYNTHETIC_SCRIPT,
        "consonants": "sfvhz",
        "det": False,
        "adj": "pre",
        "adposition": "post",
        "case": True,
    },
    "xvso": {
        "name": "Synthetic VSO",
        "order": "VSO",
        "script": SYNTHETIC_SCRIPT,
        "consonants": "cjqwx",
        "det": True,
        "adj": "post",
        "adposition": "pre",
        "case": False,
    },
}


ALL = Language("all", "all languages of the task", "")


def _yaml(lang: Language) -> str:
    """The text of `conf/lang/<code>.yaml`: explicit package header, then code/name/script."""
    body = yaml.safe_dump(
        {"code": lang.code, "name": lang.name, "script": lang.script},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,
    )
    return f"# @package lang.{lang.code}\n{body}"


def write_lang_configs(conf_dir: Path, extra: dict[str, Language] | None = None) -> int:
    """(Re)write `conf_dir/lang/<code>.yaml` for every language (plus `extra`, plus `all`).

    Only files whose text changes are touched; files of languages not in the table are left alone.
    Returns the number of language files the table covers (including `all.yaml`).
    """
    langs = {**LANGUAGES, **(extra or {})}
    for key, lang in langs.items():
        if key != lang.code:
            raise ValueError(f"language table key '{key}' differs from its code '{lang.code}'")
    out = Path(conf_dir) / "lang"
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for lang in [*langs.values(), ALL]:
        path = out / f"{lang.code}.yaml"
        text = _yaml(lang)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        n += 1
    return n


def synthetic_languages() -> dict[str, Language]:
    """The embedded default's generated languages (their files sit beside the real ones)."""
    return {
        code: Language(code, str(spec["name"]), str(spec["script"]))
        for code, spec in SYNTHETIC_LANGUAGES.items()
    }


def _default_conf_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "conf"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else _default_conf_dir()
    count = write_lang_configs(target, extra=synthetic_languages())
    log.info("wrote %d language configs to %s", count, target / "lang")
