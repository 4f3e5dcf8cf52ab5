"""Constant columns a model makes for its embeddings are made on the model's device: a model moved off the
CPU (to a GPU; here to PyTorch's shape-only ``meta`` device, which every machine has) must not mix devices."""
from __future__ import annotations

from recgoat.models.mostpop import MostPop
from recgoat.models.vbpr import VBPR


def test_mostpop_user_column_follows_the_model():
    model = MostPop(n_users=3, n_items=4).to("meta")
    users, items = model.embeddings()
    assert users.device.type == items.device.type == "meta"
    assert users.shape == (3, 1) and items.shape == (4, 1)


def test_vbpr_bias_column_follows_the_model():
    model = VBPR(n_users=3, n_items=4, text_dim=5).to("meta")
    assert model.config.use_bias
    users = model._users(None)  # [γ_u ‖ θ_u ‖ 1]
    assert users.device.type == "meta" and users.shape[0] == 3
