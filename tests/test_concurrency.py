"""Many jobs, one artifact store: parallel local sweep jobs and identical concurrent runs never corrupt it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from locate import mask_dir, model_dir
from xsub.mask import Mask

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _hidden_leftovers(root: Path) -> list[Path]:
    """Temporary siblings of atomic writes (".name.xxxx") that a crashed or racing writer would leave."""
    skip = (".hydra", ".submitit", ".locks")  # .locks: the store's one folder of lock files
    return [p for p in root.rglob(".*") if not p.name.endswith(".lock") and p.name not in skip]


def test_parallel_sweep_jobs_share_one_store(tmp_path):
    root = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "xsub",
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.cpus_per_task=1",
        "stage=train",
        "task=synth-mlm",
        "debug=tiny",
        "seed=0,1",
        f"paths.artifacts={root}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for seed in (0, 1):
        assert (model_dir(root, task="synth-mlm", seed=seed) / "DONE.json").is_file()
    # both jobs needed the generated languages at once: built once, under the lock, complete
    logs = [p.read_text() for p in (tmp_path / "multirun").glob("*/__main__.log")]
    assert len(logs) == 2 and sum("generated synthetic" in log for log in logs) == 1
    assert not _hidden_leftovers(root)
    # submitit's job folders are named by job id; no literal ".submitit/%j" folder is left beside them
    assert not list((tmp_path / "multirun").rglob("%j"))


def test_identical_concurrent_prunes_agree(finetuned_root, tmp_path):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    prune = [
        "stage=prune",
        "task=synth-cls",
        "debug=tiny",
        "lang=xvso",
        "pruning.n_examples=48",
        "pruning.threshold=0.0",
        "pruning.max_rounds=4",
    ]
    cmd = [sys.executable, "-m", "xsub", *prune, f"paths.artifacts={root}"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    mask = Mask.load(mask_dir(root, "xvso", *prune) / "mask.safetensors")  # checksum-verified, complete
    assert mask.meta.rounds == 4
    # the second waited on the lock, then reused the first one's mask
    assert sum("already pruned" in o[0] + o[1] for o in outs) == 1
    assert not _hidden_leftovers(root)
