"""stage=interpolate on the embedded model (debug sizes): exact ends, distances, forgetting, curve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_cfg
from locate import model_dir
from xsub.__main__ import run_stage
from xsub.config import ConfigError

TINY = ("stage=interpolate", "task=synth-cls", "debug=tiny", "interpolate.points=5")


@pytest.fixture(scope="module")
def store(finetuned_root, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("interp")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    run_stage(make_cfg("stage=train", "task=synth-cls", "debug=tiny", "seed=1", f"paths.artifacts={root}"))
    return str(root)


def _out(store: str, done: dict) -> Path:
    """The interpolation's folder: interpolate/<model>/<task>/<hash of settings and both ends>/."""
    out = Path(store) / done["path"]
    assert out.parent == Path(store) / "interpolate/synth-bert/synth-cls" and (out / "DONE.json").is_file()
    return out


def test_path_between_two_seeds_has_exact_ends(store):
    done = run_stage(
        make_cfg(*TINY, f"paths.artifacts={store}", "interpolate.curve=true", "interpolate.train_examples=32")
    )
    out = _out(store, done)
    assert [u["id"] for u in done["upstream"]] == [
        f"model:{model_dir(store, seed=s).relative_to(Path(store) / 'models')}" for s in (0, 1)
    ]  # both ends' identities
    table = pd.read_csv(out / "path.csv")
    line = table[table.path == "line"].reset_index()
    assert len(line) == 5 and line.x.iloc[0] == 0.0 and line.x.iloc[-1] == 1.0
    for row, seed in ((0, 0), (-1, 1)):
        metrics = json.loads((model_dir(store, seed=seed) / "metrics.json").read_text())
        for lang in ("xsvo", "xsvo2", "xsov", "xvso"):
            assert line[lang].iloc[row] == metrics["dev"][lang]["accuracy"]
    curve = table[table.path == "curve"].reset_index()
    assert (
        curve[["xsvo", "xvso"]].iloc[[0, -1]].to_numpy().tolist()
        == line[["xsvo", "xvso"]].iloc[[0, -1]].to_numpy().tolist()
    )
    assert done["distances"]["l2"] > 0 and -1 <= done["distances"]["cosine"] <= 1
    forgot = pd.read_csv(out / "forgetting.csv")
    assert len(forgot) == 4 * 32 and set(forgot.lang) == {"xsvo", "xsvo2", "xsov", "xvso"}
    assert (forgot.forgotten == (forgot.correct_at_start & (forgot.first_wrong >= 0))).all()
    assert (out / "interpolate.png").read_bytes()[:4] == b"\x89PNG"


def test_distance_of_a_checkpoint_to_itself_is_zero(store):
    done = run_stage(make_cfg(*TINY, f"paths.artifacts={store}", "interpolate.b=[seed:0]"))
    assert done["distances"]["l2"] == 0.0 and done["distances"]["rms"] == 0.0
    assert done["distances"]["cosine"] == pytest.approx(1.0)


def test_missing_endpoint_names_the_train_command(store):
    with pytest.raises(
        ConfigError, match=r"endpoint B .* make it with: python -m xsub stage=train .*data.split_half=2"
    ):
        run_stage(make_cfg(*TINY, f"paths.artifacts={store}", "interpolate.b=[data.split_half:2]"))


def test_endpoints_at_two_training_steps_of_one_run(store):
    """train.save_steps keeps the model after step k; `step:k` selects it as an endpoint."""
    run_stage(
        make_cfg(
            "stage=train",
            "task=synth-cls",
            "debug=tiny",
            "seed=2",
            "train.save_steps=[1]",
            f"paths.artifacts={store}",
        )
    )
    run = model_dir(store, seed=2)
    assert (run / "steps/step1/model/config.json").is_file()
    done = run_stage(
        make_cfg(*TINY, f"paths.artifacts={store}", "interpolate.a=[seed:2,step:1]", "interpolate.b=[seed:2]")
    )
    assert done["distances"]["l2"] > 0  # one step is not the end of training
    out = _out(store, done)
    line = pd.read_csv(out / "path.csv").query("path == 'line'")
    final = json.loads((run / "metrics.json").read_text())["dev"]
    assert [line[lang].iloc[-1] for lang in final] == [final[lang]["accuracy"] for lang in final]
    with pytest.raises(
        ConfigError, match=r"step 3 was not kept .* retrain: python -m xsub stage=train "
    ) as err:
        run_stage(make_cfg(*TINY, f"paths.artifacts={store}", "interpolate.a=[seed:2,step:3]"))
    assert "train.save_steps=[3]" in str(err.value) and "force=true" in str(err.value)
