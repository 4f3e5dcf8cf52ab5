"""MostPopular: every user gets the items with the most training interactions.

A rank-1 "embedding" model (``z_u = 1``, ``z_i = popularity``) so it shares the evaluator and API.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from recgoat.models.base import ModelConfig, Recommender, register


class MostPopConfig(ModelConfig):
    pass


@register("mostpop")
class MostPop(Recommender):
    Config = MostPopConfig
    trainable = False

    def __init__(self, n_users: int, n_items: int, config: MostPopConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        self.register_buffer("popularity", torch.zeros(n_items))

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        counts = np.asarray(self._train_csr.sum(axis=0)).ravel().astype(np.float32)
        self.popularity.copy_(torch.from_numpy(counts))

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return torch.ones(self.n_users, 1, device=self.popularity.device), self.popularity[:, None]
