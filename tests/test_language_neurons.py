"""pruning=lape | lang_ap through the prune stage, and analysis=ablation | steering, on debug sizes.

What a user relies on: every language of the run gets a mask with heads kept and its neurons off; the
statistics are stored once per language, so another language list re-selects without a forward pass
and gets new mask identities; a run of one language, or of each language's own model, is refused in one
line; LAPE's released neuron files import through the same stage; the analyses give the A × B tables.
(The ground truth on trained models is in test_demo_llm and test_demo: ablating a language's neurons
hurts it most.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import make_cfg
from xsub import store
from xsub.__main__ import run_stage
from xsub.config import ConfigError
from xsub.mask import Mask

LANGS = ["xsvo", "xsvo2", "xsov", "xvso"]
BASE = ["task=synth-clm", "model=synth-gpt", "debug=tiny"]
LOOSE = ["pruning.top_rate=0.2", "pruning.filter_rate=0.5", "pruning.activation_bar_ratio=0.5"]


@pytest.fixture(scope="module")
def gpt_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("neurons"))
    run_stage(make_cfg("stage=train", *BASE, "lang=all", f"paths.artifacts={root}"))
    return root


def prune(root: str, *extra: str) -> dict:
    return run_stage(make_cfg("stage=prune", *BASE, f"paths.artifacts={root}", *extra))


def masks(root: str, method: str) -> list[store.Entry]:
    return store.find(Path(root), "mask", method=method)


def test_lape_masks_every_language_and_reuses_statistics(gpt_root: str) -> None:
    prune(gpt_root, "pruning=lape", "lang=all", *LOOSE)
    found = {e.fields["lang"]: e for e in masks(gpt_root, "lape")}
    assert sorted(found) == sorted(LANGS)
    for lang, entry in found.items():
        m = Mask.load(entry.path / "mask.safetensors")
        assert bool(m.heads.all()) and m.mlp.shape == (2, 64)
        assert m.meta.extra["language_neurons"] == int((~m.mlp).sum())
        assert m.meta.lang == lang and m.meta.method == "lape"
    assert sum(int((~Mask.load(e.path / "mask.safetensors").mlp).sum()) for e in found.values()) > 0
    stats = store.find(Path(gpt_root), "activations")
    assert sorted(e.fields["lang"] for e in stats) == sorted(LANGS)
    run_ids = {e.path: json.loads((e.path / store.DONE).read_text())["run_id"] for e in stats}

    prune(gpt_root, "pruning=lape", "lang=[xsvo,xsov]", *LOOSE)  # another set compared: new masks
    again = store.find(Path(gpt_root), "activations")
    assert {e.path: json.loads((e.path / store.DONE).read_text())["run_id"] for e in again} == run_ids
    pairs = [e for e in masks(gpt_root, "lape") if e.settings["pruning"].get("languages") == ["xsvo", "xsov"]]
    assert sorted(e.fields["lang"] for e in pairs) == ["xsov", "xsvo"]
    assert {e.record["id"] for e in pairs}.isdisjoint({e.record["id"] for e in found.values()})


def test_one_language_or_own_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="two or more"):
        make_cfg("stage=prune", *BASE, "pruning=lape", "lang=xsvo")
    with pytest.raises(ConfigError, match=r"drop pruning\.model_langs=own"):
        make_cfg("stage=prune", *BASE, "pruning=lang_ap", "lang=all", "pruning.model_langs=own")
    with pytest.raises(ConfigError, match=r"pruning\.languages must"):
        make_cfg("stage=prune", *BASE, "pruning=lape", "lang=xsvo", "pruning.languages=[xsov,xvso]")
    make_cfg("stage=prune", *BASE, "pruning=lape", "lang=xsvo", "pruning.languages=[xsvo,xvso]")


def test_lang_ap_takes_top_and_bottom_k(gpt_root: str) -> None:
    prune(gpt_root, "pruning=lang_ap", "lang=all", "pruning.top_k=3", "pruning.n_texts=24")
    found = masks(gpt_root, "lang_ap")
    assert sorted(e.fields["lang"] for e in found) == sorted(LANGS)
    for e in found:
        assert int((~Mask.load(e.path / "mask.safetensors").mlp).sum()) == 6


def test_released_neuron_file_imports_through_the_stage(gpt_root: str, tmp_path: Path) -> None:
    neurons = [[torch.tensor([1, 4]), torch.tensor([], dtype=torch.long)] for _ in LANGS]
    neurons[2] = [torch.tensor([0]), torch.tensor([63, 5])]
    file = tmp_path / "synth.neuron.pth"
    torch.save(neurons, file)
    langs = "pruning.file_langs=[" + ",".join(LANGS) + "]"
    prune(gpt_root, "pruning=lape", "lang=xsov", f"pruning.neurons_file={file}", langs)
    (entry,) = [e for e in masks(gpt_root, "lape") if e.settings.get("file_sha256")]
    m = Mask.load(entry.path / "mask.safetensors")
    assert (~m.mlp).nonzero().tolist() == [[0, 0], [1, 5], [1, 63]]


def test_ablation_and_steering_tables(gpt_root: str) -> None:
    common = ["stage=analyze", *BASE, "pruning=lape", "lang=all", *LOOSE, f"paths.artifacts={gpt_root}"]
    prune(gpt_root, "pruning=lape", "lang=all", *LOOSE)
    done = run_stage(make_cfg(*common, "analysis=ablation"))
    (folder,) = [e.path for e in store.find(Path(gpt_root), "analysis", name="ablation")]
    t = pd.read_csv(folder / "ablation.csv")
    assert set(t["mask"]) == {"ablated", "random"} and len(t) == 2 * len(LANGS) ** 2
    assert (t.change - (t.value - t.unablated)).abs().max() < 1e-9
    assert "ablation_synth-clm.png" in done["figures"]

    run_stage(make_cfg(*common, "analysis=ablation", "analysis.ablate=mean"))
    assert len(store.find(Path(gpt_root), "analysis", name="ablation")) == 2  # its own identity

    run_stage(make_cfg(*common, "analysis=steering", "analysis.n_prompts=4", "analysis.new_tokens=6"))
    (folder,) = [e.path for e in store.find(Path(gpt_root), "analysis", name="steering")]
    s = pd.read_csv(folder / "steering.csv")
    assert set(s.steer_lang) == {"none", *LANGS} and s.share.between(0, 1).all()
    assert (s.groupby(["prompt_lang", "steer_lang"]).share.sum() <= 1 + 1e-9).all()
    assert len(pd.read_csv(folder / "steering_examples.csv")) > 0


def test_steering_needs_a_causal_lm() -> None:
    cfg = make_cfg(
        "stage=analyze", "task=synth-mlm", "debug=tiny", "pruning=lape", "lang=all", "analysis=steering"
    )
    from xsub.analysis import steering
    from xsub.analysis.inputs import Inputs

    with pytest.raises(ConfigError, match="causal-LM task"):
        steering.run(Inputs(cfg))


def test_overlap_of_neuron_masks_compares_the_neurons(gpt_root: str) -> None:
    prune(gpt_root, "pruning=lape", "lang=all", *LOOSE)
    common = ["stage=analyze", *BASE, "pruning=lape", "lang=all", *LOOSE, f"paths.artifacts={gpt_root}"]
    run_stage(make_cfg(*common, "analysis=overlap"))
    (folder,) = [e.path for e in store.find(Path(gpt_root), "analysis", name="overlap")]
    jac = pd.read_csv(folder / "jaccard.csv")
    assert set(jac.part) == {"mlp"}  # heads are all kept by construction
    sets = {}
    for e in masks(gpt_root, "lape"):
        if e.settings["pruning"].get("languages") == LANGS:
            sets[e.fields["lang"]] = ~Mask.load(e.path / "mask.safetensors").mlp
    a, b = sets["xsvo"], sets["xsov"]
    union = int((a | b).sum())
    want = 1.0 if union == 0 else int((a & b).sum()) / union
    got = jac[(jac.lang_a == "xsvo") & (jac.lang_b == "xsov")].jaccard.item()
    assert abs(got - want) < 1e-12
