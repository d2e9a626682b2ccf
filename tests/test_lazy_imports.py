"""A finished run is skipped fast: the stages import the heavy libraries only where they do work."""

from __future__ import annotations

import importlib
import subprocess
import sys

from xsub.config import ANALYSIS_SCHEMAS
from xsub.stages.analyze import WITH_UPSTREAM

HEAVY = ("datasets", "transformers", "torchmetrics", "matplotlib", "sklearn")


def test_stage_modules_and_their_skip_path_load_no_heavy_library():
    code = (
        "import sys; import xsub.__main__, xsub.stages.train, xsub.stages.prune, xsub.stages.analyze; "
        "from xsub.__main__ import compose_runs; compose_runs(['task=xnli', 'lang=de'], False); "
        "from xsub.precision import for_run; "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"imported at startup: {res.stdout}"


def test_analyses_with_upstream_inputs_are_listed():
    has = {n for n in ANALYSIS_SCHEMAS if hasattr(importlib.import_module(f"xsub.analysis.{n}"), "upstream")}
    assert has == set(WITH_UPSTREAM)


def test_a_finished_prune_is_skipped_without_importing_torch(finetuned_root, tmp_path):
    """Its results row comes from DONE.json, and the embedded model's precision needs no torch on a CPU."""
    from conftest import make_cfg
    from xsub.__main__ import run_stage

    args = ["stage=prune", "task=synth-cls", "debug=tiny", "lang=xsvo", "pruning.n_examples=32"]
    args.append(f"paths.artifacts={finetuned_root}")
    first = run_stage(make_cfg(*args))
    code = (
        "import sys\nfrom xsub.__main__ import main\n"
        f"sys.argv = ['xsub', *{args!r}]\n"
        "try:\n    main()\nfinally:\n    print('torch' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False", res.stdout
    assert f"{first['xsvo']['heads_kept']}/" in res.stdout  # the same results row as the run that made it
