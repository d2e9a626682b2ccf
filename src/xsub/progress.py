"""Progress of long loops that does not flood non-interactive logs.

`progress(iterable, desc=...)` is a tqdm bar when stderr is a terminal. Anywhere else (Slurm output
files, CI logs, a pipe) it writes plain log lines through the `xsub.progress` logger instead of
carriage-return redraws: one line at most every `interval` seconds (30) or every `fraction` (10%) of
the total, whichever comes first, plus one final line when the loop ends (also when it is left early
by `break` or an exception). Both kinds take `set_postfix(**values)` and `update(n)`, so a loop is
written once:

    bar = progress(loader, desc="epoch 1/3", enabled=cfg.progress)
    for batch in bar:
        ...
        bar.set_postfix(loss=f"{loss:.4f}")

A line reads `epoch 1/3: 45/120 (38%), 12s elapsed, 3.7 it/s, ~20s left, loss=0.4213`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TextIO, TypeVar

log = logging.getLogger("xsub.progress")

T = TypeVar("T")

INTERVAL_S = 30.0
FRACTION = 0.1


def interactive(stream: TextIO | None = None) -> bool:
    """Is `stream` (default: sys.stderr, where tqdm draws) a terminal?"""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LogProgress(Generic[T]):
    """Iterate `iterable`, logging progress lines (see the module docstring for the rule).

    `clock` returns seconds (time.monotonic by default; tests pass a fake one). With `enabled=False`
    nothing is logged and the wrapper only counts.
    """

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        desc: str = "",
        total: int | None = None,
        *,
        enabled: bool = True,
        interval: float = INTERVAL_S,
        fraction: float = FRACTION,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        if interval <= 0 or not 0 < fraction <= 1:
            raise ValueError(f"progress needs interval > 0 and 0 < fraction <= 1, got {interval}, {fraction}")
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else (_length(iterable) if iterable is not None else None)
        self.enabled = enabled
        self.interval = interval
        self.fraction = fraction
        self.n = 0
        self.postfix = ""
        self._clock = clock
        self._log = logger
        self._start = clock()
        self._last_line = self._start
        self._next_n = self._step() if self.total else math.inf
        self._closed = False

    # ---- the tqdm-like API the loops use

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("progress(...) without an iterable cannot be iterated; call update(n)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        """Count `n` more items done; log a line if one is due."""
        self.n += n
        if not self.enabled or self._closed:
            return
        now = self._clock()
        if self.total is not None and self.n >= self.total:
            return  # the final line (close) reports the end
        if self.n >= self._next_n or now - self._last_line >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **values: Any) -> None:
        """Values shown at the end of each line (as tqdm's `set_postfix`); does not log by itself."""
        items = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        """Log the final line once (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._log.info("%s", self._line(self._clock(), final=True))

    def __enter__(self) -> LogProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lines

    def _step(self) -> float:
        return max(1.0, self.fraction * self.total) if self.total else math.inf

    def _emit(self, now: float) -> None:
        self._log.info("%s", self._line(now, final=False))
        self._last_line = now
        if self.total:
            step = self._step()
            self._next_n = (math.floor(self.n / step) + 1) * step

    def _line(self, now: float, final: bool) -> str:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else math.nan
        head = f"{self.desc}: " if self.desc else ""
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        parts = [count]
        if final:
            stopped = self.total is not None and self.n < self.total
            parts.append(f"{'stopped' if stopped else 'done'} in {_duration(elapsed)}")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
        if not math.isnan(rate):
            parts.append(f"{rate:.3g} it/s")
        if not final and self.total and rate > 0:
            parts.append(f"~{_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return head + ", ".join(parts)


def progress(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    enabled: bool = True,
    *,
    interval: float = INTERVAL_S,
    fraction: float = FRACTION,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """A progress wrapper around `iterable`: tqdm on a terminal, log lines elsewhere, silent if not
    `enabled`. Iterate it; call `set_postfix(**values)` to show values, `update(n)` to count by hand."""
    if enabled and interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total)
    return LogProgress(
        iterable,
        desc,
        total,
        enabled=enabled,
        interval=interval,
        fraction=fraction,
        clock=clock,
    )
