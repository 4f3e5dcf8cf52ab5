"""The non-linearity between stacked GAT layers (``gat_activation``).

Two GAT layers used to be stacked bare; with ELU between them (the GAT paper's choice, and PyG's ``GAT``
model's) a branch computes ``conv_2(elu(conv_1(X W_p)))``. One layer is unchanged either way; models saved
before the option existed keep their bare stacking when loaded."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recgoat.errors import ConfigError
from recgoat.models import Recommender
from recgoat.models.recgoat import RecGOAT
from recgoat.nn.layers import ModalityGATBranch

from conftest import subset_users
from recgoat_helpers import build, random_features

torch.set_num_threads(1)


def _graph(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, 4 * n), rng.integers(0, n, 4 * n)
    keep = src != dst
    return torch.from_numpy(np.stack([src[keep], dst[keep]]).astype(np.int64))


def _branch(impl: str, layers: int, activation: str) -> ModalityGATBranch:
    torch.manual_seed(0)
    return ModalityGATBranch(12, 8, heads=2, n_layers=layers, impl=impl, activation=activation).double()


@pytest.mark.parametrize("impl", ["sparse", "pyg"])
@pytest.mark.parametrize("activation", ["elu", "none"])
def test_two_layers_compute_the_composition_with_the_activation_between(impl, activation):
    x = torch.randn(30, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ei = _graph(30)
    branch = _branch(impl, 2, activation)
    h = branch.convs[0](branch.proj(x), ei)
    expected = branch.convs[1](F.elu(h) if activation == "elu" else h, ei)
    assert torch.allclose(branch(x, ei), expected, rtol=1e-10, atol=1e-12)
    rows = torch.tensor([3, 0, 17])
    assert torch.allclose(branch(x, ei, rows), expected[rows], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["sparse", "pyg"])
def test_elu_and_none_differ_with_two_layers_and_agree_with_one(impl):
    x = torch.randn(30, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ei = _graph(30, 1)
    assert not torch.allclose(_branch(impl, 2, "elu")(x, ei), _branch(impl, 2, "none")(x, ei))
    assert torch.equal(_branch(impl, 1, "elu")(x, ei), _branch(impl, 1, "none")(x, ei))


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="relu"):
        ModalityGATBranch(4, 4, activation="relu")


# ---------------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def data(ml_small):
    ds = subset_users(ml_small, 30)
    return ds, random_features(ds, 1, text=10, profile=10)


def test_the_model_passes_its_setting_to_every_branch(data):
    ds, feats = data
    for act in ("elu", "none"):
        model = build(ds, feats, gat_layers=2, gat_activation=act)
        assert model.branches["text"].activation == act and model.profile_branch.activation == act
    assert build(ds, feats, gat_layers=2).branches["text"].activation == "elu"


@pytest.mark.parametrize("layers", [0, 1])
def test_a_non_default_activation_without_stacked_layers_is_refused_by_name(data, layers):
    ds, feats = data
    with pytest.raises(ConfigError, match="gat_activation"):
        build(ds, feats, gat_layers=layers, gat_activation="none")


def _saved_without_the_key(model: RecGOAT, folder) -> None:
    model.save(folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["config"]["gat_activation"]
    (folder / "model.json").write_text(json.dumps(meta))


def test_a_two_layer_model_saved_before_the_option_loads_with_bare_stacking(data, tmp_path):
    ds, feats = data
    model = build(ds, feats, gat_layers=2, gat_activation="none")
    model.eval()
    _saved_without_the_key(model, tmp_path / "old")
    loaded = Recommender.load(tmp_path / "old")
    assert loaded.config.gat_activation == "none"
    loaded.prepare(ds, feats)
    assert torch.allclose(loaded.score([0, 1, 2]), model.score([0, 1, 2]), atol=1e-6)


def test_a_one_layer_model_saved_before_the_option_loads_with_the_default_and_no_note(data, tmp_path):
    ds, feats = data
    model = build(ds, feats)
    model.eval()
    _saved_without_the_key(model, tmp_path / "old")
    loaded = Recommender.load(tmp_path / "old")
    assert loaded.config.gat_activation == "elu"
    assert "gat_activation" not in loaded.summary.get("note", "")
