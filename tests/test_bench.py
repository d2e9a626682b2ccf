"""Smoke runs of the benchmarks on tiny sizes: they run end to end, and xsub agrees with the original
projects' stack.

The reference side runs in bench/reference/.venv (transformers 4.x, made here with `make bench-reference`
from the package registry), so these tests also check that xsub's gate importance is the original projects'
head_mask importance and that both pruning loops end on the same mask.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xsub import precision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference_env() -> Path:
    subprocess.run(["make", "-s", "bench-reference"], cwd=ROOT, check=True, capture_output=True)
    return ROOT / "bench" / "reference" / ".venv"


def bench(script: str, *args: str, cache: Path) -> str:
    env = {**os.environ, "XSUB_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / script), "--threads", "1", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def tiny(artifacts: str) -> list[str]:
    """Both workloads at smoke size: the tiny xlm-r shape, and the session's finetuned embedded model."""
    return [
        "--shape", "tiny", "--n", "24", "--embedded-n", "64", "--artifacts", artifacts,
        "--embedded-overrides", "debug=tiny",  # the session's run is the debug-sized one
    ]  # fmt: skip


def test_importance_smoke_agrees_with_reference(reference_env, finetuned_root, tmp_path):
    # --no-ladder: xsub's fp32 pass and, where bf16 is native, the bf16 one (each child costs an
    # interpreter start)
    out = bench("importance.py", *tiny(finetuned_root), "--no-ladder", cache=tmp_path)
    last = out.strip().splitlines()[-1]
    pattern = r"importance speedup vs reference: (\d+\.\d\d)x \(spearman (-?\d\.\d{4}), (bf16|fp32)\)"
    m = re.fullmatch(pattern, last)
    assert m, last
    assert m.group(3) == precision.describe("auto", "cpu"), last
    fp32 = [line.split() for line in out.splitlines() if line.startswith("+ dynamic padding ")]
    assert len(fp32) == 2, out  # xlmr-shaped and embedded
    for row in fp32:  # xsub's fp32 importance is the reference's, and prunes the same heads first
        assert float(row[-4]) >= 0.999 and row[-3] == "yes", out
    assert "bf16 (CUDA): skipped" in out, out
    assert out.count("importance pass:") == 2


def test_prune_end_to_end_smoke_same_mask(reference_env, finetuned_root, tmp_path):
    out = bench("prune_end_to_end.py", *tiny(finetuned_root), "--threshold", "0.5", cache=tmp_path)
    assert re.search(r"xlmr: full prune speedup vs reference: \d+\.\d\dx \(same final mask, fp32\)", out), out
    assert re.search(
        r"embedded: full prune speedup vs reference: \d+\.\d\dx \(same final mask, fp32\)", out
    ), out


def test_cka_bench_quick(tmp_path):
    out = bench("cka.py", "--quick", cache=tmp_path)
    gram_rows = [line.split("|") for line in out.splitlines() if re.match(r"\d+\s+\| gram", line)]
    assert len(gram_rows) == 2, out  # n = 500 and 2000
    for row in gram_rows:  # streamed CKA equals the Gram-matrix formula
        assert float(row[5]) < 1e-9 and float(row[6]) < 1e-9, out


def test_lape_overhead_quick(tmp_path):
    out = bench("lape_overhead.py", "--quick", cache=tmp_path)
    m = re.search(r"lape statistics overhead: (\d+\.\d\d)x of a bare forward", out)
    assert m, out
    assert float(m.group(1)) < 1.5, out  # the target is 1.15x (bench/README.md); smoke sizes, loaded machine
