"""``features: auto``: a dataset's features encoded (or imported) into a folder, then loaded.

One meaning for both ``recgoat train --features auto`` and the benchmark's ``features: auto``: an MMRec
folder's own ``text_feat.npy`` / ``image_feat.npy`` are imported first (the paper's data ships its item features
so; :func:`~recgoat.features.store.encode_all` keeps them and encodes only what they lack), then everything
the dataset allows is encoded — what is already there and up to date is reused, an interrupted encode resumed.
"""
from __future__ import annotations

from pathlib import Path

from recgoat.datasets.mmrec import mmrec_feature_kinds


def encode_auto(dataset, folder: str | Path, progress: bool = True):
    """Import an MMRec folder's own features (if any), encode the rest into ``folder``, and return the loaded
    :class:`~recgoat.features.store.Features`."""
    from recgoat.features.store import encode_all, import_mmrec, load_features

    if mmrec_feature_kinds(dataset):
        import_mmrec(dataset, dataset.info["source"], folder)
    encode_all(dataset, folder, progress=progress)
    return load_features(dataset, folder)
