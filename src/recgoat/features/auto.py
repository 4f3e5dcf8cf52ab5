"""``features: auto``: a dataset's features encoded (or imported) into a folder, then loaded.

One meaning for both ``recgoat train --features auto`` and the benchmark's ``features: auto``: an MMRec
folder's own ``text_feat.npy`` / ``image_feat.npy`` are imported first (the paper's data ships its item features
so; :func:`~recgoat.features.store.encode_all` keeps them and encodes only what they lack), then everything
the dataset allows is encoded — what is already there and up to date is reused, an interrupted encode resumed,
and item text and images another auto folder beside it made of the same content (another split of the data)
are copied rather than encoded again.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from recgoat.datasets.mmrec import mmrec_feature_kinds
from recgoat.io import check_folder_path, folder_lock


def kinds_read(model_name: str, params: dict) -> tuple[str, ...]:
    """The kinds (``text``, ``image``, ``users``) ``features: auto`` encodes for model ``model_name`` with
    ``params``: :meth:`~recgoat.models.base.Recommender.feature_kinds` of that configuration; all of them when
    the params do not validate (the model's build then says what is wrong, by name)."""
    from recgoat.features.store import KINDS
    from recgoat.models.base import get_model_class

    cls = get_model_class(model_name)
    try:
        return tuple(cls.feature_kinds(cls.Config(**params)))
    except (ValidationError, TypeError):
        return KINDS


def encodable_kinds(dataset, profiles: bool = True) -> tuple[str, ...]:
    """The feature matrices (``text``, ``image``, ``profile``) :func:`encode_auto` makes of ``dataset`` with the
    default settings, known before anything is encoded: an MMRec folder's imported files, item text and images
    where the dataset has them, and (``profiles``) user profiles where its items have text to write them from."""
    from recgoat.features.store import nothing_to_encode

    imported = mmrec_feature_kinds(dataset)
    return (*(["text"] if "text" in imported or nothing_to_encode(dataset, "text") is None else []),
            *(["image"] if "image" in imported or nothing_to_encode(dataset, "image") is None else []),
            *(["profile"] if profiles and nothing_to_encode(dataset, "users") is None else []))


def encode_auto(dataset, folder: str | Path, progress: bool = True, which: tuple[str, ...] | None = None,
                on_wait: Callable[[str], None] | None = None, device: str = "cpu"):
    """Import an MMRec folder's own features (if any), encode the rest into ``folder`` (the kinds ``which``,
    default all: ``text``, ``image``, ``users``), and return the loaded :class:`~recgoat.features.loading.Features`.
    ``device``: where the encoders run (the trainer's: a run on a GPU encodes there too; the matrices are the
    same to float rounding, and the cache key ignores the device, as ``recgoat encode --device`` does).
    ``on_wait``: wait for another process writing to ``folder`` (told by that callback), else refuse (the store's
    rule: one writer per feature folder)."""
    from recgoat.errors import DataError
    from recgoat.features.mmrec_io import import_mmrec
    from recgoat.features.store import (FEATURE_FILES, KINDS, NOTHING_TO_ENCODE_FIX, FeatureConfig, encode_all,
                                        load_features, what_it_lacks)

    if not encodable_kinds(dataset, profiles=False):
        # said before the lock makes the folder: "encode all" would make nothing, and load_features then said
        # "no feature files; run `recgoat encode all`", which had just run
        raise DataError(folder, f"`features: auto` has nothing to encode for dataset {dataset.name}: "
                                f"{what_it_lacks(dataset)}; {NOTHING_TO_ENCODE_FIX}, or leave out --features auto "
                                f"(a model that reads no features, or RecGOAT on IDs alone)")
    check_folder_path(Path(folder), "the feature output must be a folder")  # before the lock makes it
    with folder_lock(folder, on_wait) if on_wait is not None else nullcontext():
        if mmrec_feature_kinds(dataset):
            import_mmrec(dataset, dataset.info["source"], folder)
        # the other auto folders beside it (other splits of the data) lend their text and images
        # a kind the dataset lacks is skipped even alone (a model reading only images, an MMRec folder's own
        # matrices imported above): "nothing to encode" is this function's own refusal, above and below
        encode_all(dataset, folder, FeatureConfig(device=device), which=KINDS if which is None else which,
                   progress=progress, reuse_beside=Path(folder).parent, skip_absent=True)
    if not any((Path(folder) / name).exists() for name in FEATURE_FILES.values()):
        raise DataError(folder, f"`features: auto` encoded nothing for dataset {dataset.name} (of the kinds "
                                f"{', '.join(KINDS if which is None else which)})")
    return load_features(dataset, folder)
