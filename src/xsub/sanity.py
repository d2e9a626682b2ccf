"""Is a finetuned model better than chance? The prune stage asks before it prunes.

A model that never learned its task has no subnetwork to find: every pruning round is "accepted"
because the score cannot fall below a line drawn at chance. So before pruning a classification model,
its unpruned accuracy on the pruning data (n examples) is compared with the accuracy of always
answering the most frequent label of those data (the chance level p0). Under the null hypothesis
"the model is no better than chance", the number of correct answers is Binomial(n, p0); the model is
*within noise of chance* when that count is not significantly above n·p0: the one-sided binomial test
P(X >= correct | n, p0) is above ALPHA. Then the stage refuses with one line giving the score, the
chance level and n (`pruning.allow_chance=true` prunes anyway).

Only accuracy metrics have a chance level this simple; entity F1 and perplexity are not checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from xsub.config import XsubError

ALPHA = 0.01  # significance level of the one-sided binomial test


@dataclass(frozen=True)
class Chance:
    level: float  # accuracy of always answering the most frequent label
    n: int  # examples scored

    def p_value(self, score: float) -> float:
        """P(X >= correct) for X ~ Binomial(n, level): how likely chance alone scores this well."""
        from scipy.stats import binom

        correct = round(score * self.n)
        return float(binom.sf(correct - 1, self.n, self.level))

    def upper(self) -> float:
        """The smallest accuracy significantly above chance at ALPHA (the noise band's upper edge)."""
        from scipy.stats import binom

        return float((binom.isf(ALPHA, self.n, self.level) + 1) / self.n)

    def within_noise(self, score: float) -> bool:
        return self.p_value(score) > ALPHA


def chance_of(batches: Iterable[dict[str, torch.Tensor]]) -> Chance | None:
    """The chance level of sequence-classification batches (one label per example); None otherwise."""
    labels = [b["labels"].reshape(-1) for b in batches if "labels" in b and b["labels"].dim() == 1]
    if not labels:
        return None
    y = torch.cat(labels)
    y = y[y >= 0]
    if y.numel() == 0:
        return None
    counts = torch.bincount(y)
    return Chance(level=float(counts.max()) / y.numel(), n=int(y.numel()))


def refuse_if_chance(score: float, chance: Chance | None, what: str, allow: bool) -> None:
    """Raise the one-line refusal when `score` is within noise of `chance` (unless `allow`)."""
    if chance is None or allow or not chance.within_noise(score):
        return
    raise XsubError(
        f"{what} scores {score:.3f} accuracy unpruned, within noise of chance {chance.level:.3f} "
        f"(majority label; n={chance.n}, one-sided binomial p={chance.p_value(score):.2f} > {ALPHA}; "
        f"significant from {chance.upper():.3f}): it never learned the task, so there is no subnetwork "
        "to find; train it longer or larger, or set pruning.allow_chance=true to prune anyway"
    )
