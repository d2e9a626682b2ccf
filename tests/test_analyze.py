"""stage=analyze end to end on the embedded model (debug sizes): inputs from the store, tables, figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_cfg
from locate import mask_dir, model_dir
from xsub import store as xstore
from xsub.__main__ import run_stage
from xsub.analysis import crosseval
from xsub.analysis.cka import pooled_hidden_states
from xsub.analysis.inputs import Inputs
from xsub.analysis.overlap import layer_overlap, pairwise_jaccard, pearson
from xsub.cka import gram_cka
from xsub.config import ConfigError
from xsub.data import load_split
from xsub.data.encode import encode
from xsub.mask import Mask, MaskError, MaskMeta
from xsub.metrics import TaskMetric
from xsub.model import get_gates, load_finetuned
from xsub.subnetwork import masked
from xsub.trainer import Collator, evaluate

LANGS = ("xsvo", "xsvo2", "xsov", "xvso")
PRUNE = (
    "stage=prune",
    "task=synth-cls",
    "debug=tiny",
    "lang=all",
    "pruning.n_examples=48",
    "pruning.batch_size=16",
    "pruning.threshold=0.0",
    "pruning.max_rounds=3",
)
PRUNING = PRUNE[4:]  # the settings the masks were pruned with: an analysis names them to find them


@pytest.fixture(scope="module")
def store(finetuned_root, tmp_path_factory) -> str:
    """A private store: the session's data and finetuned model, a second seed, masks for seeds 0 and 1."""
    root = tmp_path_factory.mktemp("analyze")
    shutil.copytree(Path(finetuned_root) / "data", root / "data")
    shutil.copytree(Path(finetuned_root) / "models", root / "models")
    run_stage(
        make_cfg(
            "stage=train", "task=synth-cls", "lang=all", "debug=tiny", "seed=1", f"paths.artifacts={root}"
        )
    )
    for seed in (0, 1):
        run_stage(make_cfg(*PRUNE, f"seed={seed}", f"paths.artifacts={root}"))
    return str(root)


def analyze_cfg(store: str, name: str, *extra: str):
    return make_cfg(
        "stage=analyze",
        f"analysis={name}",
        "task=synth-cls",
        "debug=tiny",
        *PRUNING,
        f"paths.artifacts={store}",
        *extra,
    )


def analyze(store: str, name: str, *extra: str) -> tuple[dict, Path]:
    """Run an analysis; its DONE record and its folder in the store (named by its key)."""
    done = run_stage(analyze_cfg(store, name, *extra))
    out = Path(store) / done["path"]
    assert (out / "DONE.json").is_file()
    return done, out


def mask(store: str, lang: str, seed: int = 0, *prune: str) -> Mask:
    return Mask.load(mask_dir(store, lang, *PRUNE, *prune, seed=seed) / "mask.safetensors")


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- overlap ------------------------------------------------------------------------------------------


def test_overlap_over_two_seeds(store):
    done, out = analyze(store, "overlap", "analysis.seeds=[0,1]")
    assert out.parts[-6:-1] == ("overlap", "synth-bert", "synth-cls", "heads", "seed0+1")
    jac = pd.read_csv(out / "jaccard.csv")
    assert set(jac.lang_a) == set(LANGS) and set(jac.seed) == {0, 1}
    diag = jac[jac.lang_a == jac.lang_b]
    assert (diag.jaccard == 1.0).all()
    masks = {(lang, s): mask(store, lang, s) for lang in LANGS for s in (0, 1)}
    row = jac[(jac.lang_a == "xsvo") & (jac.lang_b == "xsov") & (jac.seed == 1)].jaccard.item()
    assert row == pytest.approx(masks[("xsvo", 1)].jaccard(masks[("xsov", 1)]))
    per_layer = pd.read_csv(out / "per_layer.csv")
    m = masks[("xvso", 0)]
    got = per_layer[(per_layer.lang == "xvso") & (per_layer.seed == 0)].sort_values("layer").kept.to_numpy()
    assert got.tolist() == pytest.approx(m.heads.float().mean(1).tolist())  # mean over a layer's heads
    agree = pd.read_csv(out / "seed_agreement.csv")
    assert len(agree) == len(LANGS) and agree.importance_r.notna().all()
    for fig in done["figures"]:
        assert _png(out / fig)
    assert {"jaccard_heads.png", "per_layer_heads.png", "masks_heads.png"} <= set(done["figures"])
    assert "Jaccard heads" in done["summary"] and "±" in done["summary"]


def test_identical_rerun_is_skipped_and_a_different_one_recomputes(store):
    first, out = analyze(store, "overlap")
    stamp = (out / "DONE.json").stat().st_mtime_ns
    again, same = analyze(store, "overlap")
    assert same == out and again["run_id"] == first["run_id"]
    assert (out / "DONE.json").stat().st_mtime_ns == stamp and again["summary"] == first["summary"]
    other, elsewhere = analyze(store, "overlap", "lang=[xsvo,xsov]")
    assert elsewhere != out and other["id"] != first["id"]  # a new artifact beside the old one
    assert set(pd.read_csv(elsewhere / "jaccard.csv").lang_a) == {"xsvo", "xsov"}
    assert set(pd.read_csv(out / "jaccard.csv").lang_a) == set(LANGS)  # nothing is overwritten
    ups = {u["id"] for u in json.loads((out / "DONE.json").read_text())["upstream"]}
    assert len(ups) == len(LANGS) and all(u.startswith("mask:") for u in ups)  # its inputs' identities


def test_missing_mask_names_the_prune_command(store):
    with pytest.raises(ConfigError, match=r"python -m xsub stage=prune task=synth-cls .*seed=5"):
        analyze(store, "overlap", "seed=5")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_jaccard_of_a_mask_with_itself_is_one_and_with_its_complement_zero(layers, heads, seed):
    g = torch.Generator().manual_seed(seed)
    m = Mask(torch.rand(layers, heads, generator=g) > 0.5, meta=MaskMeta(lang="a"))
    table = pairwise_jaccard({("t", "a", 0): m, ("t", "b", 0): ~m}, ["heads"])
    j = {(r.lang_a, r.lang_b): r.jaccard for r in table.itertuples()}
    assert j[("a", "a")] == j[("b", "b")] == 1.0
    assert j[("a", "b")] == j[("b", "a")] == 0.0
    over = layer_overlap({("t", "a", 0): m, ("t", "b", 0): ~m}, ["heads"])
    assert (over.overlap.fillna(0.0) == 0.0).all()  # nothing is kept by both


def test_pearson_is_nan_for_a_constant_mask():
    assert pearson(torch.ones(8), torch.arange(8.0)) != pearson(torch.ones(8), torch.arange(8.0))
    assert pearson(torch.arange(8.0), 2 * torch.arange(8.0) + 1) == pytest.approx(1.0)


# ---- crosseval ----------------------------------------------------------------------------------------


def test_crosseval_full_model_row_is_the_train_stage_dev_metric(store):
    done, out = analyze(store, "crosseval")
    table = pd.read_csv(out / "crosseval.csv")
    assert len(table) == len(LANGS) * (1 + 2 * len(LANGS))  # full + own and random per mask language
    trained = json.loads((model_dir(store) / "metrics.json").read_text())
    full = table[table["mask"] == "full"].set_index("eval_lang").value
    for lang in LANGS:
        assert full[lang] == pytest.approx(trained["dev"][lang]["accuracy"])
    own = table[table["mask"] == "own"]
    rnd = table[table["mask"] == "random"]
    assert (own.heads_kept.to_numpy() == rnd.heads_kept.to_numpy()).all()  # equal-size random baseline
    assert (own.heads_kept < 8).all()  # 2 layers x 4 heads, pruned for 3 rounds
    # every cell is the metric with that mask applied: recompute one by hand through the gates
    model, tok = load_finetuned(model_dir(store) / "model", "classification")
    xsov = mask(store, "xsov")
    cfg = make_cfg("task=synth-cls", "debug=tiny", f"paths.artifacts={store}")
    dev = encode(load_split(cfg, "xvso", "dev"), tok, "classification", cfg.data.max_length)
    with masked(model, xsov):
        expected = evaluate(
            model,
            dev,
            Collator(tok, "classification"),
            TaskMetric("classification", 3),
            torch.device("cpu"),
            cfg.train.eval_batch_size,
        )["accuracy"]
    got = own[(own.mask_lang == "xsov") & (own.eval_lang == "xvso")].value.item()
    assert got == pytest.approx(expected)
    assert _png(out / "crosseval_synth-cls.png")
    assert "full model" in done["summary"]


def test_masked_applies_heads_and_weights_and_restores_the_model(finetuned_root):
    model, tok = load_finetuned(model_dir(finetuned_root) / "model", "classification")
    batch = tok(["a b c d", "e f"], padding=True, return_tensors="pt")
    full = model(**batch).logits
    heads = torch.ones(2, 4, dtype=torch.bool)
    heads[0, :3] = False
    weight = "bert.encoder.layer.1.intermediate.dense.weight"
    w = dict(model.named_parameters())[weight]
    keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    before = w.detach().clone()
    with masked(model, Mask(heads)):
        assert not torch.allclose(model(**batch).logits, full)
    with masked(model, Mask(torch.ones(2, 4, dtype=torch.bool), weights={weight: keep})):
        assert (w[~keep] == 0).all()
        assert not torch.allclose(model(**batch).logits, full)
    assert torch.equal(w, before)
    assert torch.allclose(model(**batch).logits, full)  # gates open again after the block
    assert get_gates(model) is not None and bool((get_gates(model).head == 1).all())
    with (
        pytest.raises(MaskError, match=r"has 3×4 heads, the model 2×4"),
        masked(model, Mask(torch.ones(3, 4))),
    ):
        pass


# ---- CLI ----------------------------------------------------------------------------------------------


def test_unknown_analysis_is_one_line(capsys):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "xsub", "stage=analyze", "analysis=nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("xsub: error: unknown analysis 'nope'; choose one of:")
    assert len(proc.stderr.strip().splitlines()) == 1


# ---- stitch, importance_tsne, token_overlap, cka ------------------------------------------------------


def test_stitch_reports_every_column_against_both_ends(store):
    done, out = analyze(
        store,
        "stitch",
        "lang=[xsvo,xsov]",
        "analysis.pairs=all",
        "analysis.layers=[0,2]",
        "analysis.epochs=1",
        "analysis.train_examples=32",
    )
    table = pd.read_csv(out / "stitch.csv")
    assert len(table) == 4 * 2  # ordered pairs x layers
    cols = ["front", "end", "stitched_init", "stitched", "ls_residual", "final_loss"]
    assert (
        table[cols].notna().all().all()
    )  # Language-Specific-Subnetworks lost result columns; none may be missing here
    assert ((table.stitched >= 0) & (table.stitched <= 1)).all()
    # front and end are the same finetuned model: A -> A stitched at the last layer by least squares of a
    # model onto itself is the identity, so it scores exactly like the end model
    same = table[(table.front_lang == table.end_lang) & (table.layer == 2)]
    assert (same.stitched_init == same.end).all()
    assert _png(out / "stitch.png") and "least squares" in done["summary"]


def test_stitch_bad_layer_is_one_line(store):
    with pytest.raises(ValueError, match="layer"):
        analyze(store, "stitch", "lang=xsvo", "analysis.layers=[9]", "analysis.epochs=1")


def test_importance_tsne_one_point_per_language_and_seed(store):
    _done, out = analyze(store, "importance_tsne", "analysis.seeds=[0,1]", "analysis.perplexity=3")
    table = pd.read_csv(out / "importance_tsne.csv")
    assert len(table) == 8 and set(table.lang) == set(LANGS) and table[["x", "y"]].notna().all().all()
    assert _png(out / "importance_tsne.png")


def test_token_overlap_of_disjoint_synthetic_lexicons_is_zero(store):
    _done, out = analyze(store, "token_overlap")
    table = pd.read_csv(out / "token_overlap.csv").set_index("lang")
    assert table.loc["xsvo"].reference == "xsvo"  # the synthetic task has no English: its first language
    assert table.loc["xsvo"].type_overlap == 1.0
    assert (table.drop("xsvo").type_overlap == 0.0).all()  # disjoint lexicons, by construction
    assert table.sentences.iloc[0] == 1000


def test_cka_end_to_end_equals_the_gram_formula_on_the_model_representations(store):
    args = ("lang=[xsvo,xsov]", "analysis.n_sentences=64", "analysis.batch_size=24", "analysis.pooling=mean")
    args += ("precision=fp32",)  # the recomputation below is fp32
    _done, out = analyze(store, "cka", *args)
    table = pd.read_csv(out / "cka.csv")
    pairs = set(zip(table.lang_a + "/" + table.mask_a, table.lang_b + "/" + table.mask_b))
    assert pairs == {
        ("xsvo/own", "xsvo/full"),
        ("xsvo/own", "xsov/own"),
        ("xsvo/full", "xsov/full"),
        ("xsov/own", "xsov/full"),
    }
    assert len(table) == 4 * 3 * 3 and (table.n == 64).all()
    # recompute one cell from scratch: full model, mean pooling, textbook Gram-matrix CKA
    model, tok = load_finetuned(model_dir(store) / "model", "classification")
    cfg = make_cfg("task=synth-cls", "debug=tiny", "analysis=cka", f"paths.artifacts={store}")
    par = Inputs(cfg).parallel(["xsvo", "xsov"], 64)
    reps = {}
    for lang in ("xsvo", "xsov"):
        enc = tok(list(par[lang]), padding=True, truncation=True, max_length=32, return_tensors="pt")
        reps[lang] = pooled_hidden_states(model, dict(enc), "mean")
    cell = table[
        (table.mask_a == "full") & (table.mask_b == "full") & (table.layer_a == 2) & (table.layer_b == 1)
    ]
    assert cell.linear.item() == pytest.approx(gram_cka(reps["xsvo"][2], reps["xsov"][1]), rel=1e-6)
    assert cell.debiased.item() == pytest.approx(
        gram_cka(reps["xsvo"][2], reps["xsov"][1], debiased=True), rel=1e-6
    )
    for name in ("cka_per_layer.png", "cka_layers.png", "cka_languages_own.png", "cka_languages_full.png"):
        assert _png(out / name)
    # a memory budget that fits one pair per pass streams the sentences several times, same numbers
    _, out2 = analyze(store, "cka", *args, "analysis.memory_gb=0.0", "force=true")
    again = pd.read_csv(out2 / "cka.csv")
    assert again[["linear", "debiased"]].to_numpy() == pytest.approx(
        table[["linear", "debiased"]].to_numpy(), rel=1e-9
    )


def test_two_poolings_are_two_analyses_both_kept(store):
    """Issue 13: `-m analysis=cka analysis.pooling=first,mean` wrote one folder; only the last survived."""
    args = ("lang=[xsvo,xsov]", "analysis.n_sentences=32", "analysis.batch_size=32")
    first, out_first = analyze(store, "cka", *args, "analysis.pooling=first")
    mean, out_mean = analyze(store, "cka", *args, "analysis.pooling=mean")
    assert out_first != out_mean and first["id"] != mean["id"]
    assert (out_first / "DONE.json").is_file() and (out_mean / "DONE.json").is_file()
    assert xstore.read_done(out_first)["config"]["pooling"] == "first"
    assert xstore.read_done(out_mean)["config"]["pooling"] == "mean"
    a, b = pd.read_csv(out_first / "cka.csv"), pd.read_csv(out_mean / "cka.csv")
    assert len(a) == len(b) and a.linear.to_numpy() != pytest.approx(b.linear.to_numpy())


def test_a_re_prune_makes_the_overlap_compute_anew(store, caplog):
    """Issue 13: after a re-prune the overlap said "already analysed" and printed the old Jaccard."""
    two = ("lang=[xsvo,xsov]",)
    before, out_before = analyze(store, "overlap", *two)
    other = ("pruning.threshold=0.5",)
    run_stage(make_cfg(*PRUNE, *two, *other, f"paths.artifacts={store}"))
    caplog.clear()
    after, out_after = analyze(store, "overlap", *two, *other)
    assert "already analysed" not in caplog.text and out_after != out_before
    new = {lang: mask(store, lang, 0, *other) for lang in ("xsvo", "xsov")}
    jac = pd.read_csv(out_after / "jaccard.csv")
    got = jac[(jac.lang_a == "xsvo") & (jac.lang_b == "xsov") & (jac.part == "heads")].jaccard.item()
    assert got == pytest.approx(new["xsvo"].jaccard(new["xsov"]))
    mask_ids = {u["id"] for u in after["upstream"]}
    assert mask_ids.isdisjoint(u["id"] for u in before["upstream"])  # it read the new masks
    # the same mask made again (force=true: a new run of the same identity): the analysis is stale
    run_stage(make_cfg(*PRUNE, "lang=xsvo", *other, "force=true", f"paths.artifacts={store}"))
    caplog.clear()
    again, out_again = analyze(store, "overlap", *two, *other)
    assert out_again == out_after and again["run_id"] != after["run_id"]
    assert "already analysed" not in caplog.text


def test_an_analysis_killed_before_its_done_leaves_nothing(store, monkeypatch):
    """Issue 13: a crosseval killed between writing its PNG and its DONE.json left the figure behind."""
    args = ("lang=[xsvo,xvso]",)
    cfg = analyze_cfg(store, "crosseval", *args)
    key_path = xstore.path(cfg, Inputs(cfg).key())
    written: list[Path] = []

    def killed(inputs, table):
        written.extend(inputs.out.glob("*.png"))
        raise KeyboardInterrupt  # Ctrl-C after the figures, before the summary and DONE.json

    monkeypatch.setattr(crosseval, "_summary", killed)
    with pytest.raises(KeyboardInterrupt):
        analyze(store, "crosseval", *args)
    assert written and not any(p.exists() for p in written)  # the figure was staged, then removed
    assert not key_path.exists()
    assert not [p for p in key_path.parent.iterdir() if p.name.startswith(".")]  # no staging left
    monkeypatch.undo()
    done, out = analyze(store, "crosseval", *args)
    assert out == key_path and _png(out / "crosseval_synth-cls.png") and "full model" in done["summary"]


def test_tables_and_figures_are_logged_to_wandb_offline(store, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(Path(store) / "masks", root / "masks")
    analyze(str(root), "overlap", "logger=wandb")
    run = next((root / "wandb").glob("**/offline-run-*"))
    assert list(run.glob("files/media/images/figure/*.png")), "figures not logged"
    assert list(run.glob("files/media/table/table/*.table.json")), "tables not logged"
