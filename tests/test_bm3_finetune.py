"""BM3's ``finetune_features`` option: the item features as trainable parameters (the authors' code; the
default), on tiny synthetic inputs. Off, they are frozen buffers; on, the features start equal to the given ones,
only the batch's rows move, the caller's arrays are never written, and the trained values survive save/load
(a loaded model's prepare keeps them) and a trainer's checkpoint (restored after ``prepare``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.models import Recommender, get_model_class
from test_peers_math import tiny  # 6 users × 9 items, text 7-d and image 5-d features


def build(finetune: bool | None):
    ds, feats = tiny()
    torch.manual_seed(0)
    cfg = {"embedding_dim": 4} if finetune is None else {"embedding_dim": 4, "finetune_features": finetune}
    return get_model_class("bm3").build(ds, cfg, feats), ds, feats


def step(model, pos: list[int]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    torch.manual_seed(1)
    users = torch.tensor([0, 1])
    loss = model.loss(users, torch.tensor(pos), torch.tensor([5, 6]))["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_on_by_default_and_off_leaves_the_features_out_of_the_parameters():
    default, _, _ = build(None)
    on, _, _ = build(True)
    frozen, _, _ = build(False)
    assert default.config.finetune_features and any(k.startswith("feat_params") for k in default.state_dict())
    assert not any(k.startswith("feat_params") for k in frozen.state_dict())
    for m in (default, on, frozen):
        step(m, [0, 1])
        step(m, [0, 1])
    for k, v in default.state_dict().items():
        assert torch.equal(on.state_dict()[k], v), k
    # the same initialisation and batches: the second step sees moved features only when they train
    assert torch.equal(on.feats["text"].detach(), frozen.feats["text"]) is False
    assert not torch.equal(on.predictor.weight.detach(), frozen.predictor.weight.detach())


def test_features_start_as_given_and_only_the_batch_rows_train():
    model, _, feats = build(True)
    given = {m: getattr(feats, m).copy() for m in ("text", "image")}
    for m in ("text", "image"):
        assert torch.equal(model.feat_params[m].detach(), torch.from_numpy(given[m]))
    # the gradient reaches the features through the alignment and masked-reconstruction terms
    step(model, [0, 1])
    for m in ("text", "image"):
        moved = (model.feat_params[m].detach() != torch.from_numpy(given[m])).any(dim=1)
        assert moved[[0, 1]].all() and not moved[2:].any(), m
        np.testing.assert_array_equal(getattr(feats, m), given[m])  # a copy: the caller's array is untouched


def test_finetuned_features_survive_save_load_and_a_checkpoint_restored_after_prepare(tmp_path):
    model, ds, feats = build(True)
    step(model, [0, 1])
    model.eval()
    loaded = Recommender.load(model.save(tmp_path / "m"))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(loaded.score([0, 1]), model.score([0, 1]))
    # the trainer's resume order: a fresh model is prepared (features reset), then the checkpoint is loaded
    fresh, _, _ = build(True)
    fresh.load_state_dict(model.state_dict())
    for m in ("text", "image"):
        assert torch.equal(fresh.feats[m].detach(), model.feat_params[m].detach())
        assert not torch.equal(fresh.feats[m].detach(), torch.from_numpy(getattr(feats, m)))


@pytest.mark.parametrize("finetune", [False, True])
def test_loss_uses_the_features_the_option_says(finetune):
    """With the option on, replacing a feature parameter changes the loss; off, there is none to replace
    and the frozen features are the tensors read from the caller's arrays."""
    model, _, feats = build(finetune)
    model.train()
    torch.manual_seed(1)
    args = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([5, 6]))
    before = model.loss(*args)["align"].item()
    if finetune:
        with torch.no_grad():
            model.feat_params["text"].mul_(-1.0)
        torch.manual_seed(1)
        assert model.loss(*args)["align"].item() != pytest.approx(before)
    else:
        assert len(model.feat_params) == 0
        assert not model.feats["text"].requires_grad


def test_a_loaded_model_prepared_again_keeps_its_fine_tuned_features(tmp_path):
    """fit() of a loaded model calls prepare() with the features it was trained with: the fine-tuned values
    were overwritten with the raw ones, so training went on from other inputs than it stopped with."""
    model, ds, feats = build(True)
    step(model, [0, 1])
    loaded = Recommender.load(model.save(tmp_path / "m"))
    loaded.prepare(ds, feats)
    for m in ("text", "image"):
        assert torch.equal(loaded.feats[m].detach(), model.feat_params[m].detach())
        assert loaded.feats[m] is loaded.feat_params[m]  # the loss reads the parameter, which trains on
        assert not torch.equal(loaded.feats[m].detach(), torch.from_numpy(getattr(feats, m)))


def test_a_bm3_saved_before_the_option_existed_loads_with_frozen_features(tmp_path):
    """model.json of a BM3 saved before finetune_features existed lacks the key: read as the new default
    (True), the model expected feature parameters its weights file does not hold and refused to load."""
    import json

    model, ds, _ = build(False)
    model.eval()
    folder = model.save(tmp_path / "old")
    meta = json.loads((folder / "model.json").read_text())
    del meta["config"]["finetune_features"]
    (folder / "model.json").write_text(json.dumps(meta))
    loaded = Recommender.load(folder)
    assert loaded.config.finetune_features is False
    assert torch.equal(loaded.score([0, 1]), model.score([0, 1]))
