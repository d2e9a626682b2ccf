"""Which language a generated text is in: the lexicon for the synthetic languages, py3langid otherwise.

The synthetic languages have disjoint lexicons, so a text's language is known exactly: the language
whose lexicon holds most of its words ("unknown" when none does, or on a tie). For natural languages
py3langid (Lui & Baldwin's langid.py, with its model in the wheel: nothing is downloaded at run time)
classifies over its 97 languages, unrestricted, so "another language" is a possible answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

UNKNOWN = "unknown"


def lexicon_identifier(lexicons: dict[str, dict[str, str]]) -> Callable[[str], str]:
    """By word counts over disjoint lexicons (language -> concept -> word)."""
    owner = {word: lang for lang, lex in lexicons.items() for word in lex.values()}

    def identify(text: str) -> str:
        counts = Counter(owner[w] for w in text.split() if w in owner).most_common(2)
        if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
            return UNKNOWN
        return counts[0][0]

    return identify


def langid_identifier() -> Callable[[str], str]:
    """py3langid's classifier; an empty text is "unknown"."""
    import py3langid

    def identify(text: str) -> str:
        return py3langid.classify(text)[0] if text.strip() else UNKNOWN

    return identify


def for_task(task) -> Callable[[str], str]:
    """The identifier for a task's languages (its config): lexicons for the built-in synthetic data."""
    if task.get("builtin"):
        from xsub.data.synthetic import build_lexicons

        return lexicon_identifier(build_lexicons(0))  # the store's synthetic data is generated from seed 0
    return langid_identifier()
