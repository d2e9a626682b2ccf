"""xsub.progress: a tqdm bar on a terminal, a few log lines elsewhere (fake clock, no sleeps)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from xsub import progress as progress_mod
from xsub.progress import LogProgress, interactive, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Items:
    """An iterable that advances the fake clock by `step` seconds per item it yields."""

    def __init__(self, n: int, clock: FakeClock, step: float, sized: bool = True) -> None:
        self.n, self.clock, self.step, self.sized = n, clock, step, sized

    def __iter__(self):
        for i in range(self.n):
            self.clock.now += self.step
            yield i

    def __len__(self) -> int:
        if not self.sized:
            raise TypeError("unsized")
        return self.n


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="xsub.progress")

    def get() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "xsub.progress"]

    return get


@pytest.fixture
def not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())


def test_every_tenth_of_a_fast_loop_then_one_final_line(not_a_terminal, lines) -> None:
    clock = FakeClock()
    out = list(progress(Items(1000, clock, 0.001), desc="epoch 1/2", clock=clock))
    assert out == list(range(1000))
    got = lines()
    assert len(got) == 10  # 10%, 20%, ..., 90%, then the final line (no duplicate 100% line)
    assert got[0].startswith("epoch 1/2: 100/1000 (10%), 0s elapsed")
    assert got[8].startswith("epoch 1/2: 900/1000 (90%)")
    assert got[-1].startswith("epoch 1/2: 1000/1000 (100%), done in 1s")


def test_slow_loop_logs_every_interval(not_a_terminal, lines) -> None:
    clock = FakeClock()
    for _ in progress(Items(20, clock, 10.0), desc="slow", total=None, clock=clock, fraction=1.0):
        pass
    got = lines()
    # 200 s in all: a line each 30 s (after items 3, 6, ..., 18) and the final one
    assert [g.split(",")[0] for g in got] == [f"slow: {n}/20 ({5 * n}%)" for n in (3, 6, 9, 12, 15, 18, 20)]
    assert "~" in got[0] and "left" in got[0]
    assert "done in 3m20s" in got[-1]


def test_whichever_comes_first(not_a_terminal, lines) -> None:
    """At most one line per 30 s or per 10%, never more: a 100-item loop of 1 s items gives lines at
    10%, 20%, 30% ... (every 10 s), not every 30 s only, and no extra time-based lines in between."""
    clock = FakeClock()
    list(progress(Items(100, clock, 1.0), desc="x", clock=clock))
    assert len(lines()) == 10


def test_unsized_iterable_logs_by_time_only(not_a_terminal, lines) -> None:
    clock = FakeClock()
    list(progress(Items(11, clock, 7.0, sized=False), desc="stream", clock=clock))
    got = lines()
    assert [g.split(",")[0] for g in got] == ["stream: 5", "stream: 10", "stream: 11"]  # 35 s, 70 s, end
    assert "left" not in got[0]


def test_postfix_appears_on_the_lines(not_a_terminal, lines) -> None:
    clock = FakeClock()
    bar = progress(Items(10, clock, 1.0), desc="train", clock=clock)
    for i, _ in enumerate(bar):
        bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
    got = lines()
    assert got[0].endswith("loss=1.0000")
    assert got[-1].endswith("loss=0.1000")


def test_break_and_exception_still_write_the_final_line(not_a_terminal, lines) -> None:
    clock = FakeClock()
    for i, _ in enumerate(progress(Items(100, clock, 0.1), desc="capped", clock=clock)):
        if i == 4:
            break
    assert lines()[-1].startswith("capped: 4/100 (4%), stopped in")  # as tqdm: items whose body finished

    with pytest.raises(RuntimeError):
        for _ in progress(Items(100, clock, 0.1), desc="failing", clock=clock):
            raise RuntimeError("boom")
    assert lines()[-1].startswith("failing: 0/100 (0%), stopped in")


def test_disabled_is_silent(not_a_terminal, lines) -> None:
    clock = FakeClock()
    bar = progress(Items(50, clock, 100.0), desc="quiet", enabled=False, clock=clock)
    for _ in bar:
        bar.set_postfix(loss="1")
    assert lines() == []


def test_manual_update_and_context_manager(not_a_terminal, lines) -> None:
    clock = FakeClock()
    with progress(desc="rounds", total=4, clock=clock) as bar:
        for _ in range(4):
            clock.now += 1
            bar.update()
    got = lines()
    assert got[-1].startswith("rounds: 4/4 (100%), done in 4s")
    assert len(got) == 4  # 1/4, 2/4, 3/4 (each >= 10%), final


def test_tiny_totals_do_not_log_more_than_one_line_per_item(not_a_terminal, lines) -> None:
    clock = FakeClock()
    list(progress(Items(3, clock, 0.0), desc="t", clock=clock))
    assert len(lines()) == 3  # 1/3, 2/3, final


def test_a_terminal_gets_tqdm_and_no_log_lines(monkeypatch: pytest.MonkeyPatch, lines) -> None:
    from tqdm.auto import tqdm

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = progress(range(5), desc="bar")
    assert isinstance(bar, tqdm)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    assert lines() == []
    assert "bar" in tty.getvalue()


def test_disabled_on_a_terminal_draws_nothing(monkeypatch: pytest.MonkeyPatch, lines) -> None:
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    bar = progress(range(5), desc="bar", enabled=False)
    assert isinstance(bar, LogProgress)
    assert list(bar) == list(range(5))
    assert tty.getvalue() == "" and lines() == []


def test_interactive_tolerates_odd_streams() -> None:
    class Closed(io.StringIO):
        def isatty(self) -> bool:
            raise ValueError("I/O operation on closed file")

    assert interactive(Tty()) is True
    assert interactive(io.StringIO()) is False
    assert interactive(Closed()) is False
    assert interactive(object()) is False  # type: ignore[arg-type]


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        LogProgress(range(3), interval=0)
    with pytest.raises(ValueError):
        LogProgress(range(3), fraction=0)
    assert progress_mod.INTERVAL_S == 30.0 and progress_mod.FRACTION == 0.1
