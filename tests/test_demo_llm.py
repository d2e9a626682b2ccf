"""experiment=demo-llm end to end: pretrain synth-gpt, prune its heads per language, overlap + crosseval,
then its language neurons: LAPE masks with the ablation matrix, and AP neurons steering generation.

Checks that pruning is meaningful: every language's mask stays within 1.1 x its unpruned perplexity,
and masking a random set of heads of the same size hurts more than the language's own mask on average.
The synthetic languages have disjoint lexicons, so language-specific neurons exist by construction:
ablating a language's LAPE neurons must raise its own perplexity more than any other language's, and
more than random neurons of the same count per layer do; holding a language's AP neurons at their
median must raise the share of generations in that language above the unsteered share.
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
    assert t.bits_per_byte.notna().all() and (t.bits_per_byte > 0).all()  # beside perplexity (causal LM)
    full = t[t["mask"] == "full"].set_index("eval_lang").value
    own = t[(t["mask"] == "own") & (t.mask_lang == t.eval_lang)].set_index("eval_lang").value
    rnd = t[(t["mask"] == "random") & (t.mask_lang == t.eval_lang)].set_index("eval_lang").value
    assert own.mean() >= full.mean() - 1e-6  # removing heads does not help on held-out text
    assert rnd.mean() > own.mean()  # the importance-chosen heads matter more than random ones

    assert "Δperplexity: off \\ eval" in text and "steered to" in text
    (ablation,) = list(tmp_path.glob("analysis/ablation/**/ablation.csv"))
    a = pd.read_csv(ablation)
    ablated = a[a["mask"] == "ablated"].pivot(index="mask_lang", columns="eval_lang", values="change")
    for lang in ablated.index:  # diagonal dominance: a language's own neurons matter most to it
        others = ablated.loc[lang].drop(lang)
        assert ablated.loc[lang, lang] > 2 * max(others.max(), 0), (lang, ablated.loc[lang].to_dict())
    control = a[(a["mask"] == "random") & (a.mask_lang == a.eval_lang)].set_index("eval_lang").change
    assert (ablated.values.diagonal() > control.reindex(ablated.index).values).all()

    (steering,) = list(tmp_path.glob("analysis/steering/**/steering.csv"))
    s = pd.read_csv(steering)
    on_target = s[(s.steer_lang != "none") & (s.identified == s.steer_lang) & (s.prompt_lang != s.steer_lang)]
    steered = on_target.set_index(["prompt_lang", "steer_lang"]).share
    unsteered = s[s.steer_lang == "none"].set_index(["prompt_lang", "identified"]).share
    base = unsteered.reindex(steered.index).fillna(0.0).to_numpy()
    assert steered.mean() > base.mean() + 0.2, (steered.mean(), base.mean())
