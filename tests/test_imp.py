"""IMP on Foroutan et al. 2022's schedule; its ticket's quality as the lottery-ticket protocol measures it."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_cfg
from test_magnitude import TOTAL, ToyTrainer, tiny_model
from xsub import store
from xsub.__main__ import run_stage
from xsub.config import PruningConfig
from xsub.pruning.imp import imp_num_events, imp_prune, imp_target_sparsity
from xsub.stages import prune as prune_stage


def test_events_follow_the_rate_of_the_original_weights():
    assert imp_num_events(PruningConfig()) == 5  # 10% per event to 50%: five events
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.9)) == 9
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.55)) == 6  # the last step is smaller
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.0)) == 0
    assert imp_num_events(PruningConfig(imp_final_sparsity=0.6, imp_rate=0.2)) == 3
    targets = [imp_target_sparsity(e, 5, 0.5) for e in range(1, 6)]
    assert targets == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


class Counting(ToyTrainer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def __call__(self, model, seg):
        self.calls.append(seg.index)
        return super().__call__(model, seg)


def test_ticket_is_retrained_from_the_rewind_point_and_recorded(tmp_path):
    cfg = PruningConfig(imp_prune_every=3, imp_final_sparsity=0.3)
    model = tiny_model(dropout=0.1)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Counting()
    state = store.Checkpoint(tmp_path / "rounds.pt", "mask:test/imp")
    res = imp_prune(model, pretrained, trainer, cfg, num_events=3, retrain=True, checkpoint=state)
    assert trainer.calls == [0, 1, 2, 3]  # three events, then the ticket (segment index = events)
    assert res.full == trainer.losses[0][-1] and res.ticket == trainer.losses[3][-1]
    dropped = sum(int(z.sum()) for z in trainer.zero_sets[3].values())
    assert dropped == round(0.3 * TOTAL)  # the ticket trained with the final mask
    assert res.mask.meta.extra["ticket"] == res.ticket and res.mask.meta.extra["full"] == res.full
    for name, keep in res.mask.weights.items():  # on return: the ticket at the rewind point
        assert torch.equal(model.state_dict()[name][keep], pretrained[name][keep])
    again = Counting()
    back = imp_prune(
        tiny_model(dropout=0.1), pretrained, again, cfg, num_events=3, retrain=True, checkpoint=state
    )
    assert again.calls == [] and back.ticket == res.ticket and back.mask.equals(res.mask)


def test_stage_records_the_ticket_beside_the_full_model(finetuned_root, capsys):
    cfg = make_cfg(
        "stage=prune",
        "task=synth-cls",
        "debug=tiny",
        "lang=xsov",
        "pruning=imp",
        "pruning.imp_final_sparsity=0.2",
        f"paths.artifacts={finetuned_root}",
    )
    res = run_stage(cfg)["xsov"]
    assert res["weights_kept"] == pytest.approx(0.8, abs=0.01)
    directory = store.path(cfg, store.mask_key(cfg, "xsov"))
    ticket = store.read_done(directory)["ticket"]
    assert isinstance(ticket["full_model"], float) and isinstance(ticket["ticket"], float)
    assert ticket["sparsity"] == pytest.approx(0.2, abs=0.01) and ticket["split"] == "dev"
    history = json.loads((directory / "history.json").read_text())
    assert [e["event"] for e in history["events"]] == [1, 2] and history["ticket"] == ticket["ticket"]
    assert history["events"][0]["trained_at_sparsity"] == 0.0  # the first segment: the dense model
    table = prune_stage.results_table(cfg, {"xsov": res})
    assert f"{ticket['full_model']:.4f} -> {ticket['ticket']:.4f}" in table and "lottery-ticket" in table


def test_imp_epochs_sets_every_segment_and_the_ticket(finetuned_root, monkeypatch):
    import xsub.trainer

    base = ["stage=prune", "task=synth-cls", "debug=tiny", "lang=xsvo", "pruning=imp"]
    args = [*base, "pruning.imp_final_sparsity=0.1", f"paths.artifacts={finetuned_root}"]
    cfg = make_cfg(*args, "pruning.imp_epochs=2")
    assert store.mask_key(cfg, "xsvo").id != store.mask_key(make_cfg(*args), "xsvo").id
    epochs, real = [], xsub.trainer.fit

    def fit(model, *args, **kwargs):
        epochs.append(args[4].epochs)  # the segment's train config
        return real(model, *args, **kwargs)

    monkeypatch.setattr(xsub.trainer, "fit", fit)
    run_stage(cfg)
    assert cfg.train.epochs == 1 and epochs == [2, 2]  # one event's segment, then the ticket
