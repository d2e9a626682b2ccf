"""A 4-job local sweep (hydra/launcher=local: 4 processes at once) with and without threads per job.

Without (`hydra.launcher.set_threads=false`), every job starts torch with its default thread count
(the machine's cores), so 4 jobs on C cores run 4 x C threads; with it (the default) each job gets
C // 4 threads (at least 1) through OMP_NUM_THREADS and torch.set_num_threads. Both sweeps run in one
invocation, each into a fresh store seeded with the same generated data, so nothing is skipped.

    python bench/sweep_threads.py                 # 4 x stage=train task=synth-mlm, small sizes
    python bench/sweep_threads.py --examples 256  # shorter jobs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(store: Path, out: Path, jobs: int, examples: int, set_threads: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [
        sys.executable,
        "-m",
        "xsub",
        "-m",
        "hydra/launcher=local",
        f"hydra.launcher.set_threads={str(set_threads).lower()}",
        "stage=train",
        "task=synth-mlm",
        "debug=tiny",
        f"data.max_train_examples={examples}",
        "train.epochs=2",
        f"seed={','.join(map(str, range(jobs)))}",
        f"paths.artifacts={store}",
        f"hydra.sweep.dir={out}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def job_seconds(out: Path) -> list[float]:
    times = []
    for f in sorted(out.rglob("xsub-job.json")):
        rec = json.loads(f.read_text())
        times.append(rec["ended"] - rec["started"])
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--examples", type=int, default=1024, help="data.max_train_examples per job")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="xsub-bench-sweep-") as tmp:
        tmp_path = Path(tmp)
        seed_store = tmp_path / "seed-store"
        sys.path.insert(0, str(ROOT / "src"))
        from xsub.data.synthetic import ensure_synthetic

        ensure_synthetic(seed_store, seed=0)  # the generated data both sweeps read (not timed)
        rows = []
        for set_threads in (False, True):
            store = tmp_path / f"store-{set_threads}"
            shutil.copytree(seed_store, store, symlinks=True)
            out = tmp_path / f"multirun-{set_threads}"
            wall = sweep(store, out, args.jobs, args.examples, set_threads)
            per_job = job_seconds(out)
            rows.append((set_threads, wall, per_job))
    print(f"{args.jobs} jobs at once on {cores} cores (load average before: {load:.1f})")
    print(f"{'threads per job':<22} {'sweep wall s':>12} {'job run s (mean)':>17}")
    for set_threads, wall, per_job in rows:
        label = (
            f"{max(1, cores // args.jobs)} (set_threads=true)" if set_threads else f"{cores} (torch default)"
        )
        mean = sum(per_job) / len(per_job) if per_job else float("nan")
        print(f"{label:<22} {wall:>12.1f} {mean:>17.1f}")


if __name__ == "__main__":
    main()
