"""stage=report on a small store (debug sizes): tidy tables, figures, the page, and the sweep filter."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from conftest import make_cfg
from locate import mask_dir
from xsub import store as xstore
from xsub.__main__ import STAGES, run_stage
from xsub.config import ConfigError, ReportConfig
from xsub.mask import Mask
from xsub.report.page import markdown_table
from xsub.stages import report

LANGS = ("xsvo", "xsov")
PRUNE = (
    "stage=prune",
    "task=synth-cls",
    "debug=tiny",
    "lang=[xsvo,xsov]",
    "pruning.n_examples=32",
    "pruning.batch_size=16",
    "pruning.threshold=0.0",
    "pruning.max_rounds=2",
    "pruning.model_seed=0",
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(finetuned_root, tmp_path_factory) -> str:
    """The session's data and finetuned model (seed 0), masks of two languages for seeds 0 and 1 (both
    pruned from the seed-0 model), and the overlap analysis over both seeds."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    for seed in (0, 1):
        run_stage(make_cfg(*PRUNE, f"seed={seed}", f"paths.artifacts={root}"))
    run_stage(
        make_cfg(
            "stage=analyze",
            "analysis=overlap",
            "task=synth-cls",
            "debug=tiny",
            "lang=[xsvo,xsov]",
            "analysis.seeds=[0,1]",
            *PRUNE[4:],  # the settings its masks were pruned with
            f"paths.artifacts={root}",
        )
    )
    return str(root)


def report_cfg(root: str | Path, **settings):
    """A composed config with `report` set (the stage reads its settings from cfg.report)."""
    stage = "report" if "report" in STAGES else "train"
    cfg = make_cfg(f"stage={stage}", "task=synth-cls", "debug=tiny", f"paths.artifacts={root}")
    with open_dict(cfg):
        cfg.report = OmegaConf.structured(ReportConfig(**settings))
    return cfg


def links(page: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", page)


def test_store_report_tables_figures_and_page(store, capsys):
    done = report.run(report_cfg(store))
    out = Path(done["out"])
    assert out == Path(store).resolve() / "reports" / "synth-bert" / "store"
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out

    pruning = pd.read_csv(out / "pruning.csv")
    assert len(pruning) == 4 and set(pruning.lang) == set(LANGS) and set(pruning.seed) == {0, 1}
    assert set(pruning.method) == {"heads"} and set(pruning.model_seed) == {0}
    for row in pruning.itertuples():
        mask = Mask.load(Path(store) / row.path)
        assert row.heads_kept == mask.num_heads_kept and row.heads_total == mask.heads.numel()
        assert row.fraction_heads == pytest.approx(mask.fraction("heads"))

    training = pd.read_csv(out / "training.csv", keep_default_na=False)
    assert list(training.columns)[:8] == [
        "model",
        "task",
        "langs",
        "seed",
        "lang",
        "split",
        "metric",
        "value",
    ]
    cls = training[training.task == "synth-cls"]
    assert set(cls.split) == {"dev", "test"} and set(cls.langs) == {"all"} and set(cls.seed) == {0}
    assert len(cls[(cls.lang == "xsvo") & (cls.split == "dev") & (cls.metric == "accuracy")]) == 1
    assert "synth-mlm" in set(training.task)  # the store filter keeps every task found

    jac = pd.read_csv(out / "mask_jaccard.csv")
    m = {
        (lg, s): Mask.load(mask_dir(store, lg, *PRUNE, seed=s) / "mask.safetensors")
        for lg in LANGS
        for s in (0, 1)
    }
    got = jac[(jac.lang_a == "xsvo") & (jac.lang_b == "xsov") & (jac.seed == 1)].jaccard.item()
    assert got == pytest.approx(m[("xsvo", 1)].jaccard(m[("xsov", 1)]))

    overlap = pd.read_csv(out / "analysis_overlap_jaccard.csv")
    (folder,) = set(overlap.folder)
    assert folder.startswith("analysis/overlap/synth-bert/synth-cls/heads/seed0+1/")  # + its hash
    assert (Path(store) / folder / "DONE.json").is_file()
    assert {"task_a", "lang_a", "lang_b", "seed", "jaccard"} <= set(overlap.columns)

    assert {"heads_kept.png", "jaccard_synth-bert_synth-cls_heads.png"} <= set(done["figures"])
    for fig in done["figures"]:
        assert (out / fig).read_bytes()[:8] == PNG
    assert set(done["skipped"]) == {
        "CKA between languages (own subnetworks, mean over layers)",
        "Mask transfer (retrained with the mask of another language)",
    }
    page = (out / "report.md").read_text()
    assert links(page) and all((out / link).is_file() for link in links(page))
    assert {f"{t}" for t in done["tables"]} <= set(links(page)) and "Not drawn: no cka results" in page
    html = (out / "report.html").read_text()
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', html))

    filtered = report.run(report_cfg(store, seeds=[1], langs=["xsov"], tasks=["synth-cls"], name="one"))
    assert Path(filtered["out"]).name == "one"
    assert filtered["counts"]["masks"] == 1 and "jaccard" not in " ".join(filtered["figures"])
    rows = pd.read_csv(Path(filtered["out"]) / "analysis_overlap_jaccard.csv")
    assert set(rows.seed) == {1} and set(rows.lang_a) == set(rows.lang_b) == {"xsov"}


def test_empty_store_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no results for model synth-bert .*run stage=train"):
        report.run(report_cfg(tmp_path))
    with pytest.raises(ConfigError, match=r"report.sweep: no job configs"):
        report.run(report_cfg(tmp_path, sweep=str(tmp_path)))


def test_sweep_folder_reports_only_its_jobs(store, tmp_path):
    sweep = tmp_path / "multirun" / "2024-01-01_00-00-00"
    jobs = [("xsvo", 0), ("xsov", 1)]
    for num, (lang, seed) in enumerate(jobs):
        job = make_cfg(*PRUNE, f"lang={lang}", f"seed={seed}", f"paths.artifacts={store}")
        (sweep / f"{num}_lang={lang},seed={seed}" / ".hydra").mkdir(parents=True)
        OmegaConf.save(job, sweep / f"{num}_lang={lang},seed={seed}" / ".hydra" / "config.yaml")
    elsewhere = tmp_path / "other-store"  # the report's own paths.artifacts: the jobs' store wins
    done = report.run(report_cfg(elsewhere, sweep=str(sweep)))
    out = Path(done["out"])
    assert out == Path(store).resolve() / "reports" / "synth-bert" / sweep.name
    pruning = pd.read_csv(out / "pruning.csv")
    assert sorted(zip(pruning.lang, pruning.seed)) == sorted(jobs)
    training = pd.read_csv(out / "training.csv", keep_default_na=False)
    assert set(training.task) == {"synth-cls"} and set(training.lang) == set(LANGS)
    assert set(training.seed) == {0}  # the model both masks were pruned from
    page = (out / "report.md").read_text()
    assert "2 jobs" in page and all((out / link).is_file() for link in links(page))


def test_markdown_table_escapes_cells():
    text = markdown_table(["a|b", "x"], [[1.23456789, None], ["p|q", float("nan")]])
    assert text.splitlines() == ["| a\\|b | x |", "|---|---|", "| 1.235 |  |", "| p\\|q |  |"]


def _analysis(root: Path, name: str, seeds: str, frame: pd.DataFrame) -> str:
    """A finished analysis artifact written by hand: its table and a DONE record naming its key."""
    fields = {"name": name, "model": "synth-bert", "tasks": "synth-cls", "method": "heads", "seeds": seeds}
    key = xstore.Key("analysis", tuple(fields.items()), xstore._canonical({"n": len(frame)}))
    folder = root / key.rel
    folder.mkdir(parents=True)
    frame.to_csv(folder / f"{name}.csv", index=False)
    record = {"kind": "analysis", "id": key.id, "path": str(key.rel), "fields": fields, "settings": {}}
    (folder / "DONE.json").write_text(json.dumps(record))
    return str(key.rel)


def test_cka_and_transfer_figures_from_analysis_tables(tmp_path):
    grid = itertools.product((0, 1), LANGS, LANGS, ("own", "full"), (0, 1), (0, 1))
    cka = pd.DataFrame(
        [
            {"seed": s, "task_a": "synth-cls", "lang_a": a, "mask_a": side, "task_b": "synth-cls",
             "lang_b": b, "mask_b": side, "layer_a": la, "layer_b": lb,
             "linear": 0.5 + 0.1 * la + 0.05 * s, "debiased": 0.4}
            for s, a, b, side, la, lb in grid
        ]
    )  # fmt: skip
    _analysis(tmp_path, "cka", "seed0+1", cka)
    _analysis(tmp_path, "cka", "seed0", cka[cka.seed == 0])  # a second folder repeating seed 0
    transfer = pd.DataFrame(
        [
            {"target": t, "source": f"lang:{m}" if m in LANGS else m, "mask_of": m, "seed": s,
             "metric": "accuracy", "value": 0.9 if t == m else 0.5, "heads_kept": 6}
            for t in LANGS for m in (*LANGS, "random") for s in (0, 1)
        ]
    )  # fmt: skip
    transfer_folder = _analysis(tmp_path, "transfer", "seed0+1", transfer)
    done = report.run(report_cfg(tmp_path, html=False))
    out = Path(done["out"])
    assert {"cka_synth-bert_heads.png", "transfer_synth-bert_synth-cls_heads.png"} <= set(done["figures"])
    for fig in done["figures"]:
        assert (out / fig).read_bytes()[:8] == PNG
    assert len(pd.read_csv(out / "analysis_cka.csv")) == len(cka) + (cka.seed == 0).sum()
    assert set(pd.read_csv(out / "analysis_transfer.csv").folder) == {transfer_folder}
    assert not (out / "report.html").exists() and "Heads kept per language" in done["skipped"]
    page = (out / "report.md").read_text()
    assert "_Not drawn: no masks found" in page and all((out / link).is_file() for link in links(page))


# ---- a sweep over settings other than task, language and seed -----------------------------------------

LRS, THRESHOLDS = ("5e-4", "1e-3"), ("0.0", "0.5")


@pytest.fixture(scope="module")
def sweep_store(finetuned_root, tmp_path_factory) -> str:
    """Masks of a `train.lr` × `pruning.threshold` sweep (two of each, one seed), and one overlap."""
    root = tmp_path_factory.mktemp("report-sweep")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    run_stage(
        make_cfg(
            "stage=train",
            "task=synth-cls",
            "lang=all",
            "debug=tiny",
            "train.lr=1e-3",
            f"paths.artifacts={root}",
        )
    )
    for lr, threshold in itertools.product(LRS, THRESHOLDS):
        run_stage(
            make_cfg(*PRUNE, f"train.lr={lr}", f"pruning.threshold={threshold}", f"paths.artifacts={root}")
        )
    run_stage(
        make_cfg(
            "stage=analyze", "analysis=overlap", "task=synth-cls", "debug=tiny", "lang=[xsvo,xsov]",
            *PRUNE[4:], "train.lr=1e-3", "pruning.threshold=0.5", f"paths.artifacts={root}",
        )
    )  # fmt: skip
    return str(root)


def test_a_setting_sweep_is_one_row_per_run_with_its_settings_as_columns(sweep_store):
    """Issue 13: a sweep over lr × threshold gave one result N times, averaged in the report as seeds."""
    done = report.run(report_cfg(sweep_store, tasks=["synth-cls"], name="lr-threshold"))
    out = Path(done["out"])
    pruning = pd.read_csv(out / "pruning.csv")
    assert {"train.lr", "pruning.threshold"} <= set(pruning.columns)
    assert set(pruning.seed) == {0}  # one seed: the rows are runs, not seeds
    for lang in LANGS:
        rows = pruning[pruning.lang == lang]
        assert len(rows) == 4 and rows.run.nunique() == 4
        assert sorted(zip(rows["train.lr"], rows["pruning.threshold"])) == sorted(
            (float(lr), float(t)) for lr, t in itertools.product(LRS, THRESHOLDS)
        )
    training = pd.read_csv(out / "training.csv")
    assert set(training["train.lr"]) == {5e-4, 1e-3} and training.run.nunique() == 2
    jac = pd.read_csv(out / "mask_jaccard.csv")  # pairs only within one run's settings
    assert len(jac[(jac.lang_a == "xsvo") & (jac.lang_b == "xsov")]) == 4
    page = (out / "report.md").read_text()
    assert "train.lr" in page and "pruning.threshold" in page


def test_report_sweep_of_a_real_multirun_collects_exactly_its_artifacts(sweep_store, tmp_path):
    """Issue 13: report.sweep= pulled in analyses the sweep did not make and training runs it never read."""
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    sweep = tmp_path / "multirun" / "sweep"
    cmd = [
        sys.executable, "-m", "xsub", "-m", *PRUNE, f"pruning.threshold={','.join(THRESHOLDS)}",
        f"paths.artifacts={sweep_store}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = report.run(report_cfg(tmp_path / "elsewhere", sweep=str(sweep)))
    out = Path(done["out"])
    pruning = pd.read_csv(out / "pruning.csv")
    assert len(pruning) == 4 and set(pruning.lang) == set(LANGS)
    assert sorted(set(pruning["pruning.threshold"])) == [0.0, 0.5] and "train.lr" not in pruning
    training = pd.read_csv(out / "training.csv")
    assert set(training.task) == {"synth-cls"} and training.run.nunique() == 1  # the model it read
    assert done["counts"]["analysis folders"] == 0 and not list(out.glob("analysis_*.csv"))
    assert "2 jobs" in (out / "report.md").read_text()


def store_cfg(root: str | Path, *overrides: str):
    return make_cfg("stage=store", "task=synth-cls", "debug=tiny", f"paths.artifacts={root}", *overrides)


def test_stage_store_lists_and_removes_only_what_matches(sweep_store, tmp_path, capsys):
    """Issue 13: `stage=store` lists artifacts (key, settings, status, size); `store.remove` deletes
    exactly the matches, and only with `store.yes=true`."""
    listed = run_stage(store_cfg(sweep_store, "store.kind=mask", "store.lang=xsvo"))
    text = capsys.readouterr().out
    assert len(listed["entries"]) == 4 and all("/xsvo/" in e for e in listed["entries"])
    assert "train.lr=1e-3" in text and "pruning.threshold=0.5" in text and " done " in text
    assert " KB" in text or " B " in text  # size on disk
    fast = run_stage(store_cfg(sweep_store, "store.kind=mask", "store.where=['train.lr=0.001']"))
    assert len(fast["entries"]) == 4  # two languages x two thresholds of the lr=1e-3 model
    everything = run_stage(store_cfg(sweep_store))["entries"]
    assert {Path(e).relative_to(sweep_store).parts[0] for e in everything} >= {"models", "masks", "analysis"}

    root = tmp_path / "copy"
    shutil.copytree(sweep_store, root)
    which = ("store.kind=mask", "store.where=['pruning.threshold=0.5','train.lr=0.001']", "store.remove=true")
    asked = run_stage(store_cfg(root, *which))
    assert len(asked["entries"]) == 2 and asked["removed"] == []
    assert "add store.yes=true" in capsys.readouterr().out
    assert all(Path(e).is_dir() for e in asked["entries"])  # nothing deleted without store.yes
    gone = run_stage(store_cfg(root, *which, "store.yes=true"))
    assert sorted(gone["removed"]) == sorted(asked["entries"]) and not any(
        Path(e).exists() for e in asked["entries"]
    )
    left = run_stage(store_cfg(root))["entries"]
    assert len(left) == len(everything) - 2  # exactly the matches
