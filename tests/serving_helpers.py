"""A tiny catalogue and a BPR-MF trained on it for one epoch: what the serving QA modules export and serve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def train_shop(folder: Path, rows: list[tuple], items: list[str], titles: list[str | None] | None = None,
               dedup: bool = True):
    """``(model, dataset)``: the generic-layout catalogue of ``rows`` (user_id, item_id, timestamp) and
    ``items`` (with ``titles``, default "Title i") written to ``folder``, prepared without k-core filtering
    (``dedup``: drop repeated pairs), and BPR-MF (d 8, seed 0) trained on it for one epoch, in eval mode."""
    import torch

    from recgoat.datasets import PrepareConfig, load_raw, prepare
    from recgoat.models import BPRMF
    from recgoat.training.trainer import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    titles = titles if titles is not None else [f"Title {i}" for i in range(len(items))]
    pd.DataFrame({"item_id": items, "title": titles}).to_csv(folder / "items.csv", index=False)
    name, inter, item_table, fields, info = load_raw(str(folder))
    ds = prepare(name, inter, item_table, fields, PrepareConfig(k_core=0, dedup=dedup), info)
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    model.fit(ds, TrainConfig(epochs=1, progress=False))
    model.eval()
    return model, ds
