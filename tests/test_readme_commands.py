"""Every `python -m xsub ...` command in the documentation validates through `--check` as written.

Commands come from the fenced code blocks of README.md, docs/*.md, slurm/README.md and bench/README.md
(continuation lines joined, `# comments` dropped). A block line `$ python -m xsub ...` followed by
`xsub: error: ...` documents an error: where that error is a configuration error, `--check` must give
exactly it; where it happens only at run time (a missing input), `--check` passes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from xsub.__main__ import check
from xsub.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "slurm/README.md",
    ROOT / "bench/README.md",
]
COMMAND = re.compile(r"(?:^|\s)(?:\S*/)?python -m xsub\b(.*)$")


def documented_commands() -> list[tuple[str, int, list[str], str | None]]:
    """(file, line, argv after `python -m xsub`, documented error or None) for every command in a block."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        in_block = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                in_block = not in_block
                i += 1
                continue
            start = i
            if in_block:
                text = line
                while text.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text.rstrip()[:-1] + " " + lines[i].strip()
                match = COMMAND.search(text.lstrip("$ "))
                if match:
                    nxt = lines[i + 1] if i + 1 < len(lines) else ""
                    error = nxt.split("xsub: error: ", 1)[1] if nxt.startswith("xsub: error: ") else None
                    argv = shlex.split(match.group(1), comments=True)
                    found.append((doc.relative_to(ROOT).as_posix(), start + 1, argv, error))
            i += 1
    return found


COMMANDS = documented_commands()


def test_the_documentation_has_commands():
    files = {f for f, *_ in COMMANDS}
    assert len(COMMANDS) >= 30 and {"README.md", "slurm/README.md"} <= files


@pytest.mark.parametrize(
    ("doc", "line", "argv", "error"), COMMANDS, ids=[f"{f}:{n}" for f, n, *_ in COMMANDS]
)
def test_documented_command_validates(doc, line, argv, error, monkeypatch):
    monkeypatch.delenv("XSUB_ARTIFACTS", raising=False)
    if "--help" in argv or "-h" in argv:
        return  # informational: nothing to compose
    try:
        n = check(argv)
    except ConfigError as err:
        if error is None:
            pytest.fail(f"{doc}:{line}: python -m xsub {shlex.join(argv)}\n  xsub: error: {err}")
        # the documented error, as far as the documentation prints it (a long list may be cut with ...)
        shown = error.split(" ... ")[0]
        assert str(err).startswith(shown), f"{doc}:{line}: documented {error!r}, got {err}"
        return
    assert n >= 1


REAL_TASKS = ("xnli", "paws-x", "marc", "wikiann", "wiki-mlm")


@pytest.mark.parametrize(
    ("doc", "line", "argv", "error"), COMMANDS, ids=[f"{f}:{n}" for f, n, *_ in COMMANDS]
)
def test_documented_real_task_names_its_model(doc, line, argv, error):
    """Without model= a command runs the embedded synth-bert, which knows only the synthetic languages."""
    tasks = [a.split("=", 1)[1] for a in argv if a.startswith("task=")]
    if (
        error is None
        and any(t in REAL_TASKS for t in tasks)
        and not any(a.startswith("model=") for a in argv)
    ):
        pytest.fail(f"{doc}:{line}: python -m xsub {shlex.join(argv)} runs synth-bert; add model=")
