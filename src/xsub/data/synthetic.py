"""Embedded default data: a seeded family of artificial languages rendering the same sentences.

Real multilingual checkpoints and labelled data are not reachable offline, so the default run uses a
benchmark the project makes itself, where cross-lingual sharing is known by construction:

- An interlingua of semantic *frames* (agent, verb, patient, adjectives, tense, negation, voice,
  optional location and organisation) is sampled once and rendered by each language's grammar.
- Every language has its own lexicon built from its own consonant inventory, so token sets are
  disjoint by construction; word orders differ (SVO, SVO with a second lexicon, SOV, VSO), as do the
  positions of determiners, adjectives and adpositions.
- The classification label is the semantic category of the *agent* (person / animal / object), and the
  patient is always of another category. A bag of words sees both categories but not which one is the
  agent (sentences may also be passive), so it cannot exceed 50 % while a structure-aware model can reach
  100 %: attention matters.
- Named entities (PER / ORG / LOC, BIO tags) share one pool of name stems, so a bare stem is a person,
  a place or a company depending on its context.

`ensure_synthetic` writes everything in the schemas of the real sources (MARC mirror, WikiANN,
Wikipedia, FLORES) plus a word-level fast tokenizer, so the project's real loaders read it via `data.path`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xsub import artifacts

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
NAME = "synthetic"  # artifacts.data_dir(root, NAME)
SCRIPT = "Qaaa"  # ISO 15924 "reserved for private use": none of these languages has a real script

LANGUAGES: dict[str, dict] = {
    "xsvo": {
        "name": "Synthetic SVO",
        "order": "SVO",
        "script": SCRIPT,
        "consonants": "ptkmn",
        "det": "pre",
        "adj": "pre",
        "adposition": "pre",
    },
    "xsvo2": {
        "name": "Synthetic SVO, second lexicon",
        "order": "SVO",
        "script": SCRIPT,
        "consonants": "bdglr",
        "det": "pre",
        "adj": "post",
        "adposition": "pre",
    },
    "xsov": {
        "name": "Synthetic SOV",
        "order": "SOV",
        "script": SCRIPT,
        "consonants": "sfvhz",
        "det": None,
        "adj": "pre",
        "adposition": "post",
    },
    "xvso": {
        "name": "Synthetic VSO",
        "order": "VSO",
        "script": SCRIPT,
        "consonants": "cjqwx",
        "det": "pre",
        "adj": "post",
        "adposition": "pre",
    },
}
TASK_LANGUAGES: dict[str, list[str]] = {task: list(LANGUAGES) for task in ("cls", "ner", "mlm", "parallel")}

VOWELS = "aeiou"
CATEGORIES = ("person", "animal", "object")  # classification labels = category of the agent
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPLITS = ("train", "validation", "test")
MAX_LENGTH = 64

# Inventory of the interlingua: concept id prefix -> count (nouns: per category).
N_NOUNS_PER_CATEGORY = 12
N_VERBS = 16
N_ADJS = 12
N_FIRST_NAMES = 20
N_STEMS = 30  # name stems shared by surnames, places and organisations
N_LOC_HEADS = 4  # "river", "city", ...
N_ORG_HEADS = 4  # "bank", "union", ...
NOUN_CLASSES = True  # determiners agree with the noun's category (like grammatical gender)
FUNCTION_WORDS = ("det", "past", "future", "neg", "passive", "by", "in", "for", "with")
CONTENT_PREFIXES = ("noun", "verb", "adj", "first", "stem", "lochead", "orghead", "fn:past", "fn:future")


# ----------------------------------------------------------------------------------------------------
# Frames: the language-independent meaning of a sentence.


@dataclass(frozen=True)
class NounPhrase:
    """An argument: a common noun (with optional adjective) or a person's name (category person)."""

    category: int
    noun: int | None = None  # index among the category's nouns
    adj: int | None = None
    first: int | None = None  # first-name index (names only)
    stem: int | None = None  # surname stem (names only)

    @property
    def is_name(self) -> bool:
        return self.noun is None


@dataclass(frozen=True)
class Entity:
    """A location or organisation: one or two name stems and an optional head word."""

    type: str  # LOC | ORG
    stems: tuple[int, ...]
    head: int | None = None


@dataclass(frozen=True)
class Frame:
    agent: NounPhrase
    patient: NounPhrase
    verb: int
    tense: int = 0  # 0 present (unmarked), 1 past, 2 future
    neg: bool = False
    passive: bool = False
    loc: Entity | None = None
    org: Entity | None = None
    comp: NounPhrase | None = None  # "with X": a third argument, a distractor for the classifier

    @property
    def label(self) -> int:
        return self.agent.category

    def concepts(self) -> Counter:
        """Multiset of the concept ids every language renders (determiners are not universal)."""
        out: Counter = Counter(_np_concepts(self.agent) + _np_concepts(self.patient))
        out[f"verb:{self.verb}"] += 1
        for flag, fn in ((self.tense == 1, "past"), (self.tense == 2, "future"), (self.neg, "neg")):
            if flag:
                out[f"fn:{fn}"] += 1
        if self.passive:
            out.update(["fn:passive", "fn:by"])
        if self.comp is not None:
            out.update([*_np_concepts(self.comp), "fn:with"])
        for ent, prep in ((self.loc, "in"), (self.org, "for")):
            if ent is not None:
                out.update(_entity_concepts(ent) + [f"fn:{prep}"])
        return out


def _np_concepts(np_: NounPhrase) -> list[str]:
    if np_.is_name:
        return [f"first:{np_.first}"] * (np_.first is not None) + [f"stem:{np_.stem}"] * (np_.stem is not None)
    return [f"noun:{np_.category * N_NOUNS_PER_CATEGORY + np_.noun}"] + [f"adj:{np_.adj}"] * (
        np_.adj is not None
    )


def _entity_concepts(ent: Entity) -> list[str]:
    head = [] if ent.head is None else [f"{ent.type.lower()}head:{ent.head}"]
    return [f"stem:{s}" for s in ent.stems] + head


@dataclass(frozen=True)
class FrameParams:
    """Sampling rates; NER data uses an entity-rich setting, the rest the default one."""

    p_name: float = 0.3  # a person argument is a name rather than a common noun
    p_adj: float = 0.3
    p_passive: float = 0.25
    p_neg: float = 0.2
    p_loc: float = 0.3
    p_org: float = 0.2
    p_same_category: float = 0.0
    p_comp: float = 0.0  # a companion ("with X") of any category
    bare_surname: bool = True  # agent and patient of the same category (raises the BoW ceiling)


CLS_PARAMS = FrameParams()
NER_PARAMS = FrameParams(p_name=0.7, p_loc=0.6, p_org=0.5)


def _sample_np(rng: np.random.Generator, category: int, p: FrameParams) -> NounPhrase:
    if category == 0 and rng.random() < p.p_name:
        form = rng.integers(3 if p.bare_surname else 2)  # first + surname, first only, surname only
        first = int(rng.integers(N_FIRST_NAMES)) if form in (0, 1) else None
        stem = int(rng.integers(N_STEMS)) if form in (0, 2) else None
        return NounPhrase(category, first=first, stem=stem)
    adj = int(rng.integers(N_ADJS)) if rng.random() < p.p_adj else None
    return NounPhrase(category, noun=int(rng.integers(N_NOUNS_PER_CATEGORY)), adj=adj)


def _sample_entity(rng: np.random.Generator, type_: str, p_head: float) -> Entity:
    n_stems = 1 + int(rng.random() < 0.3)
    stems = tuple(int(s) for s in rng.choice(N_STEMS, size=n_stems, replace=False))
    n_heads = N_LOC_HEADS if type_ == "LOC" else N_ORG_HEADS
    head = int(rng.integers(n_heads)) if rng.random() < p_head else None
    return Entity(type_, stems, head)


def sample_frame(rng: np.random.Generator, p: FrameParams = CLS_PARAMS, label: int | None = None) -> Frame:
    """One frame; `label` fixes the agent's category (used to balance the classes exactly)."""
    agent_cat = int(rng.integers(len(CATEGORIES))) if label is None else int(label)
    if rng.random() < p.p_same_category:
        patient_cat = agent_cat
    else:
        patient_cat = (agent_cat + 1 + int(rng.integers(len(CATEGORIES) - 1))) % len(CATEGORIES)
    return Frame(
        agent=_sample_np(rng, agent_cat, p),
        patient=_sample_np(rng, patient_cat, p),
        verb=int(rng.integers(N_VERBS)),
        tense=int(rng.integers(3)),
        neg=bool(rng.random() < p.p_neg),
        passive=bool(rng.random() < p.p_passive),
        loc=_sample_entity(rng, "LOC", 0.6) if rng.random() < p.p_loc else None,
        org=_sample_entity(rng, "ORG", 0.7) if rng.random() < p.p_org else None,
        comp=_sample_np(rng, int(rng.integers(len(CATEGORIES))), p) if rng.random() < p.p_comp else None,
    )


def sample_frames(rng: np.random.Generator, n: int, p: FrameParams = CLS_PARAMS) -> list[Frame]:
    """`n` frames with exactly balanced labels (up to n mod 3), in random order."""
    labels = rng.permutation(np.arange(n) % len(CATEGORIES))
    return [sample_frame(rng, p, int(y)) for y in labels]


def parallel_frames(seed: int = 0, n: int = 1000) -> list[Frame]:
    """The frames behind `parallel/<lang>.parquet`: row i of every language renders frame i."""
    return sample_frames(_rng(seed, "parallel"), n, CLS_PARAMS)


# ----------------------------------------------------------------------------------------------------
# Lexicons: concept id -> word form, disjoint across languages by construction.


def concept_ids() -> list[str]:
    """Every concept of the interlingua, in a fixed order (the lexicon is built in this order)."""
    ids = [f"fn:{w}" for w in FUNCTION_WORDS]
    ids += [f"det:{i}" for i in range(len(CATEGORIES))] if NOUN_CLASSES else []
    ids += [f"noun:{i}" for i in range(N_NOUNS_PER_CATEGORY * len(CATEGORIES))]
    ids += [f"verb:{i}" for i in range(N_VERBS)]
    ids += [f"adj:{i}" for i in range(N_ADJS)]
    ids += [f"first:{i}" for i in range(N_FIRST_NAMES)]
    ids += [f"stem:{i}" for i in range(N_STEMS)]
    ids += [f"lochead:{i}" for i in range(N_LOC_HEADS)]
    ids += [f"orghead:{i}" for i in range(N_ORG_HEADS)]
    return ids


def build_lexicon(seed: int, lang: str) -> dict[str, str]:
    """Word forms from the language's own CV syllables: one syllable for function words, 2-3 otherwise.

    Languages use disjoint consonant sets and every syllable has a consonant, so no word is shared.
    """
    consonants = LANGUAGES[lang]["consonants"]
    syllables = [c + v for c in consonants for v in VOWELS]
    rng = _rng(seed, "lexicon", lang)
    lexicon: dict[str, str] = {}
    used: set[str] = set()
    for cid in concept_ids():
        while True:
            n_syl = 1 if cid.startswith("fn:") else int(rng.integers(2, 4))
            word = "".join(syllables[i] for i in rng.integers(len(syllables), size=n_syl))
            if word not in used:
                break
        used.add(word)
        lexicon[cid] = word
    return lexicon


def build_lexicons(seed: int) -> dict[str, dict[str, str]]:
    return {lang: build_lexicon(seed, lang) for lang in LANGUAGES}


# ----------------------------------------------------------------------------------------------------
# Rendering: frame -> (words, BIO tags) in one language.

Token = tuple[str, int]  # (concept id, NER tag id)


def _tag(type_: str, n: int) -> list[int]:
    b = NER_LABELS.index(f"B-{type_}")
    return [b] + [b + 1] * (n - 1)


def _render_np(np_: NounPhrase, spec: dict) -> list[Token]:
    if np_.is_name:
        parts = _np_concepts(np_)
        return list(zip(parts, _tag("PER", len(parts))))
    noun = (f"noun:{np_.category * N_NOUNS_PER_CATEGORY + np_.noun}", 0)
    words = [noun]
    if np_.adj is not None:
        adj = (f"adj:{np_.adj}", 0)
        words = [adj, noun] if spec["adj"] == "pre" else [noun, adj]
    if spec["det"] == "pre":
        words = [(f"det:{np_.category}" if NOUN_CLASSES else "fn:det", 0), *words]
    return words


def _render_entity(ent: Entity, spec: dict, prep: str) -> list[Token]:
    stems = [f"stem:{s}" for s in ent.stems]
    if ent.head is not None:
        head = f"{ent.type.lower()}head:{ent.head}"
        # SVO languages put the head last ("Kamo River"), the others first ("Bank Kamo").
        stems = [*stems, head] if spec["order"] == "SVO" else [head, *stems]
    phrase = list(zip(stems, _tag(ent.type, len(stems))))
    return [(prep, 0), *phrase] if spec["adposition"] == "pre" else [*phrase, (prep, 0)]


def _verb_group(frame: Frame, spec: dict) -> list[Token]:
    markers = []
    if frame.neg:
        markers.append("fn:neg")
    if frame.tense:
        markers.append("fn:past" if frame.tense == 1 else "fn:future")
    if frame.passive:
        markers.append("fn:passive")
    verb = f"verb:{frame.verb}"
    # Head-final languages put the markers after the verb, mirrored (like suffixes).
    words = [verb, *reversed(markers)] if spec["order"] == "SOV" else [*markers, verb]
    return [(w, 0) for w in words]


def render_concepts(frame: Frame, lang: str) -> list[Token]:
    """The sentence as (concept id, NER tag) pairs, following the language's grammar."""
    spec = LANGUAGES[lang]
    post = spec["adposition"] == "post"
    agent, patient = _render_np(frame.agent, spec), _render_np(frame.patient, spec)
    vg = _verb_group(frame, spec)
    by = ("fn:by", 0)
    if frame.passive:  # the patient is promoted to subject, the agent demoted to a by-phrase
        subj, obj = patient, ([*agent, by] if post else [by, *agent])
    else:
        subj, obj = agent, patient
    pps: list[Token] = []
    if frame.comp is not None:
        comp = _render_np(frame.comp, spec)
        pps += [("fn:with", 0), *comp] if not post else [*comp, ("fn:with", 0)]
    if frame.loc is not None:
        pps += _render_entity(frame.loc, spec, "fn:in")
    if frame.org is not None:
        pps += _render_entity(frame.org, spec, "fn:for")
    order = spec["order"]
    if order == "SVO":
        return [*subj, *vg, *obj, *pps]
    if order == "SOV":
        return [*subj, *pps, *obj, *vg]
    if order == "VSO":
        return [*vg, *subj, *obj, *pps]
    raise ValueError(f"unknown word order {order}")


def render(frame: Frame, lang: str, lexicon: dict[str, str]) -> tuple[list[str], list[int]]:
    """Words and NER tag ids of `frame` in `lang`."""
    toks = render_concepts(frame, lang)
    return [lexicon[c] for c, _ in toks], [t for _, t in toks]


def spans(words: Sequence[str], tags: Sequence[int]) -> list[str]:
    """WikiANN-style span strings ("PER: John Smith") from BIO tags."""
    out: list[str] = []
    cur: list[str] = []
    cur_type = ""
    for word, tag in zip(words, tags):
        name = NER_LABELS[tag]
        if name.startswith("I-") and cur and name[2:] == cur_type:
            cur.append(word)
            continue
        if cur:
            out.append(f"{cur_type}: {' '.join(cur)}")
        cur, cur_type = ([word], name[2:]) if name != "O" else ([], "")
    if cur:
        out.append(f"{cur_type}: {' '.join(cur)}")
    return out


# ----------------------------------------------------------------------------------------------------
# Datasets in the real sources' schemas.


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """Independent stream per (seed, purpose, language): adding a language does not shift the others."""
    words = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def _split_sizes(n_train: int, n_eval: int) -> dict[str, int]:
    return {"train": n_train, "validation": n_eval, "test": n_eval}


def cls_table(frames: Iterable[Frame], lang: str, lexicon: dict[str, str]) -> pa.Table:
    """MARC mirror schema (mteb/SetFit): id, text, label."""
    ids, texts, labels = [], [], []
    for i, frame in enumerate(frames):
        ids.append(i)
        texts.append(" ".join(render(frame, lang, lexicon)[0]))
        labels.append(frame.label)
    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("label", pa.int64())])
    return pa.table({"id": ids, "text": texts, "label": labels}, schema=schema)


def ner_table(frames: Iterable[Frame], lang: str, lexicon: dict[str, str]) -> pa.Table:
    """WikiANN schema: tokens, ner_tags, langs, spans."""
    cols: dict[str, list] = {"tokens": [], "ner_tags": [], "langs": [], "spans": []}
    for frame in frames:
        words, tags = render(frame, lang, lexicon)
        cols["tokens"].append(words)
        cols["ner_tags"].append(tags)
        cols["langs"].append([lang] * len(words))
        cols["spans"].append(spans(words, tags))
    schema = pa.schema(
        [
            ("tokens", pa.list_(pa.string())),
            ("ner_tags", pa.list_(pa.int64())),
            ("langs", pa.list_(pa.string())),
            ("spans", pa.list_(pa.string())),
        ]
    )
    return pa.table(cols, schema=schema)


def mlm_table(
    rng: np.random.Generator, n_articles: int, lang: str, lexicon: dict[str, str], start_id: int = 0
) -> pa.Table:
    """Wikipedia schema: id, url, title, text. An article is 3-5 sentences about one person."""
    cols: dict[str, list] = {"id": [], "url": [], "title": [], "text": []}
    for k in range(n_articles):
        topic = NounPhrase(0, first=int(rng.integers(N_FIRST_NAMES)), stem=int(rng.integers(N_STEMS)))
        sentences = []
        for _ in range(int(rng.integers(3, 6))):
            frame = sample_frame(rng, CLS_PARAMS)
            if rng.random() < 0.4:  # the article's topic takes part in some of its sentences
                role = "agent" if frame.agent.category == 0 else "patient"
                if getattr(frame, role).category == 0:
                    frame = _replace(frame, **{role: topic})
            sentences.append(" ".join(render(frame, lang, lexicon)[0]))
        title = " ".join(lexicon[c] for c in _np_concepts(topic))
        idx = start_id + k
        cols["id"].append(str(idx))
        cols["url"].append(f"https://{lang}.wikipedia.invalid/wiki?curid={idx}")
        cols["title"].append(title)
        cols["text"].append("\n".join(sentences))
    return pa.table(cols, schema=pa.schema([(c, pa.string()) for c in cols]))


def _replace(frame: Frame, **kw: object) -> Frame:
    return Frame(**{**{f: getattr(frame, f) for f in frame.__dataclass_fields__}, **kw})


def parallel_table(frames: Sequence[Frame], lang: str, lexicon: dict[str, str]) -> pa.Table:
    """FLORES-like: id, sentence; rows aligned on id across languages."""
    schema = pa.schema([("id", pa.int64()), ("sentence", pa.string())])
    sentences = [" ".join(render(f, lang, lexicon)[0]) for f in frames]
    return pa.table({"id": list(range(len(frames))), "sentence": sentences}, schema=schema)


def build_tokenizer(lexicons: dict[str, dict[str, str]]):
    """Word-level fast tokenizer over every language's lexicon, BERT-style special tokens and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for lang in LANGUAGES:
        for word in lexicons[lang].values():
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
    )


def bow_ceiling(p: FrameParams = CLS_PARAMS) -> float:
    """Best accuracy of any classifier that sees the sentence as a bag of words.

    The bag reveals the two argument categories but not their roles, and both role assignments are
    equally likely (voice is independent of the categories), so when they differ the best guess is a coin.
    """
    return p.p_same_category + (1.0 - p.p_same_category) / 2.0


def _params(seed: int, n_train: int, n_eval: int, n_mlm: int, n_parallel: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_eval": n_eval,
        "n_mlm": n_mlm,
        "n_parallel": n_parallel,
        "languages": list(LANGUAGES),
    }


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def generate(out: Path, seed: int, n_train: int, n_eval: int, n_mlm: int, n_parallel: int) -> None:
    """Write the whole benchmark into `out` (a fresh directory; no DONE marker)."""
    lexicons = build_lexicons(seed)
    sizes = _split_sizes(n_train, n_eval)
    mlm_sizes = _split_sizes(n_mlm, max(1, n_mlm // 10))
    par = parallel_frames(seed, n_parallel)
    for lang in LANGUAGES:
        lex = lexicons[lang]
        for split, n in sizes.items():
            _write(cls_table(sample_frames(_rng(seed, "cls", lang, split), n, CLS_PARAMS), lang, lex), out / "cls" / lang / f"{split}.parquet")
            ner_frames = sample_frames(_rng(seed, "ner", lang, split), n, NER_PARAMS)
            _write(ner_table(ner_frames, lang, lex), out / "ner" / lang / f"{split}.parquet")
        start = 0
        for split, n in mlm_sizes.items():
            table = mlm_table(_rng(seed, "mlm", lang, split), n, lang, lex, start_id=start)
            _write(table, out / "mlm" / lang / f"{split}.parquet")
            start += n
        _write(parallel_table(par, lang, lex), out / "parallel" / f"{lang}.parquet")
    build_tokenizer(lexicons).save_pretrained(str(out / "tokenizer"))
    (out / "lexicons.json").write_text(json.dumps(lexicons, indent=1, sort_keys=True) + "\n")
    meta = {
        **_params(seed, n_train, n_eval, n_mlm, n_parallel),
        "language_specs": LANGUAGES,
        "task_languages": TASK_LANGUAGES,
        "cls_labels": list(CATEGORIES),
        "ner_labels": list(NER_LABELS),
        "cls_params": asdict(CLS_PARAMS),
        "ner_params": asdict(NER_PARAMS),
        "bow_ceiling": bow_ceiling(CLS_PARAMS),
        "vocab_size": len(SPECIAL_TOKENS) + sum(len(lex) for lex in lexicons.values()),
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def ensure_synthetic(
    root: Path,
    seed: int = 0,
    n_train: int = 4000,
    n_eval: int = 500,
    n_mlm: int = 1000,
    n_parallel: int = 1000,
) -> Path:
    """Generate the benchmark under `root/data/synthetic` once; reuse it while the parameters match.

    `n_train`/`n_eval` are sentences per language for cls and ner (validation and test get `n_eval`
    each), `n_mlm` is train articles per language (3-5 sentences each; dev/test get a tenth).
    """
    target = artifacts.data_dir(Path(root), NAME)
    params = _params(seed, n_train, n_eval, n_mlm, n_parallel)
    with artifacts.lock(target):
        if artifacts.is_done(target) and artifacts.read_done(target) == params:
            return target
        t0 = time.perf_counter()
        with artifacts.atomic_path(target) as tmp:
            tmp.mkdir()
            generate(tmp, seed, n_train, n_eval, n_mlm, n_parallel)
            (tmp / artifacts.DONE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        log.info("generated synthetic languages (seed %d) in %s in %.1fs", seed, target, time.perf_counter() - t0)
    return target
