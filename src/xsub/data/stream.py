"""Bounded, deterministic samples of a streamed corpus: never more rows than the sample needs.

A hub corpus such as `wikimedia/wikipedia` ships one train split per language that is a whole dump
(English: ~6.4M articles, ~11 GB). `carve` takes a fixed-size sample from any iterable of rows (a
streamed `datasets.IterableDataset`, a generator, a list) without materialising the source:

- rows pass through a seeded shuffle buffer of `buffer_size` rows (fill the buffer, then emit a random
  slot and put the next row there), so the sample is not just the dump's first articles, and the same
  seed over the same source gives the same rows on every machine;
- the evaluation parts are carved off first, in the order given (e.g. test, then dev), then train, so
  changing the train size never changes dev/test;
- reading stops as soon as the requested part is complete: part k needs at most
  `buffer_size + sum(sizes of parts 1..k)` rows from the source (`rows_needed`), and no other row is read.

The last part may instead (or also) be bounded by a token budget (`token_budget` with `count_tokens`),
as the language-neuron statistics need (`pruning.n_tokens`); the budget counts the rows it keeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BUFFER = 10_000


def shuffled(rows: Iterable[T], buffer_size: int, seed: int) -> Iterator[T]:
    """Rows of `rows` in a seeded buffer-shuffled order; reads one source row per emitted row once full."""
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    rng = random.Random(seed)
    buf: list[T] = []
    for row in rows:
        if len(buf) < buffer_size:
            buf.append(row)
            continue
        i = rng.randrange(buffer_size)
        yield buf[i]
        buf[i] = row
    rng.shuffle(buf)
    yield from buf


def rows_needed(sizes: Sequence[tuple[str, int]], until: str, buffer_size: int) -> int:
    """Upper bound on source rows read to complete part `until` (row-count parts only)."""
    total = 0
    for name, n in sizes:
        total += n
        if name == until:
            return total + buffer_size
    raise KeyError(until)


def carve(
    rows: Iterable[Any],
    sizes: Sequence[tuple[str, int]],
    *,
    seed: int,
    buffer_size: int = DEFAULT_BUFFER,
    until: str = "",
    token_budget: int = 0,
    count_tokens: Callable[[Any], int] | None = None,
) -> dict[str, list[Any]]:
    """Consecutive parts of a buffer-shuffled stream: {name: rows}, in the order of `sizes`.

    `sizes` is [(name, n_rows), ...]; n_rows 0 for the last part means "until the token budget".
    `until` stops after that part (later parts are absent from the result); "" = all parts.
    `token_budget` > 0 also ends the last part once the kept rows reach that many tokens (`count_tokens`).
    A source with fewer rows gives shorter parts, filled in order (evaluation parts first).
    """
    if not sizes:
        raise ValueError("carve: no parts requested")
    names = [name for name, _ in sizes]
    if until and until not in names:
        raise KeyError(f"carve: unknown part {until!r}; one of {names}")
    if token_budget and count_tokens is None:
        raise ValueError("carve: token_budget needs count_tokens")
    last = len(sizes) - 1
    if sizes[last][1] <= 0 and token_budget <= 0:
        raise ValueError("carve: the last part needs a row count or a token budget")
    stream = shuffled(rows, buffer_size, seed)
    out: dict[str, list[Any]] = {}
    for k, (name, n) in enumerate(sizes):
        part: list[Any] = []
        out[name] = part
        budgeted = k == last and token_budget > 0
        tokens = 0
        while (n <= 0 or len(part) < n) and not (budgeted and tokens >= token_budget):
            row = next(stream, _END)
            if row is _END:
                return out
            part.append(row)
            if budgeted:
                tokens += int(count_tokens(row))  # type: ignore[misc]
        if name == until:
            break
    return out


_END: Any = object()
