"""Item side features for the multimodal models: which modalities exist, their sizes, and checks.

Shared by VBPR, FREEDOM, LGMRec and BM3 (and RecGOAT's matrix checks), so each refuses missing,
mismatched or non-finite features with the same clear message naming the model.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recgoat.errors import ConfigError, DataError
from recgoat.features.loading import FeatureMatrixError, check_feature_matrix
from recgoat.graphs.bipartite import register_fixed
from recgoat.models.base import Recommender

MODALITIES = ("text", "image")


def feature_matrix(x: Any, name: str, model: str, per: str = "item") -> np.ndarray:
    """``x`` as a float32 matrix (one row per ``per``) of finite numbers; else one :class:`DataError`
    naming ``model``, the matrix and the problem. ``load_features`` checks the files it reads, but
    features built in Python reach the model directly: a NaN row would surface only as a NaN loss, and
    strings would be parsed as numbers. The check is the feature store's (:func:`check_feature_matrix`)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return check_feature_matrix(x, per=per)
    except FeatureMatrixError as e:
        raise DataError(None, f"{model}: {name} features: {e}") from None


def item_modalities(features, model: str, n_items: int | None = None) -> dict[str, np.ndarray]:
    """The item feature matrices present in ``features`` (``{"text": X_t, "image": X_v}``, either may be
    absent); raises :class:`ConfigError` naming ``model`` when there are none."""
    if features is None:
        raise ConfigError(none_given_message(model))
    found = {m: feature_matrix(getattr(features, m), m, model)
             for m in MODALITIES if getattr(features, m, None) is not None}
    if not found:
        raise ConfigError(f"{model} needs item text or image features, but the given features hold neither "
                          f"(a user profile alone is not enough); encode item text or images first")
    for m, x in found.items():
        if n_items is not None and x.shape[0] != n_items:
            raise ConfigError(wrong_rows_message(model, m, x.shape, n_items))
    return found


def none_given_message(model: str, what: str = "item features (text and/or image)") -> str:
    """``model`` needs ``what`` but was given no features at all (shared with RecGOAT, whose views differ)."""
    # `--features auto` first: the one step that does it all, which the README documents and this left out
    return (f"{model} needs {what} but none were given: let `recgoat train --features auto` (`features: auto` in a "
            f"config file) encode them, or encode them with `recgoat encode all <dataset>` and give the folder: "
            f"`--features FOLDER` (recgoat train), `features: FOLDER` (a config file) or "
            f"features=load_features(dataset, folder) (Python)")


def wrong_rows_message(model: str, name: str, shape: tuple, n_rows: int) -> str:
    """A feature matrix with another number of rows than the dataset has items (users, for profiles)."""
    return (f"{model}: {name} features have shape {tuple(shape)}, expected ({n_rows}, D): features were made for "
            f"another dataset")


def modality_dims(features, model: str) -> dict[str, int]:
    """``{"text_dim": D_t, "image_dim": D_v}`` with 0 for an absent modality (saved with the model)."""
    found = item_modalities(features, model)
    return {f"{m}_dim": int(found[m].shape[1]) if m in found else 0 for m in MODALITIES}


def present_modalities(dims: dict, model: str) -> list[str]:
    """The modalities with a non-zero ``{m}_dim`` in a model's constructor ``dims``; raises
    :class:`ConfigError` naming ``model`` when there are none."""
    present = [m for m in MODALITIES if int(dims.get(f"{m}_dim", 0)) > 0]
    if not present:
        raise ConfigError(f"{model} needs item text or image features (dims text_dim/image_dim are 0)")
    return present


def check_dims(model: Recommender, found: dict[str, np.ndarray]) -> None:
    """Refuse features whose modalities or sizes differ from those the model was built with."""
    for m in MODALITIES:
        want = int(model.dims.get(f"{m}_dim", 0))
        got = int(found[m].shape[1]) if m in found else 0
        if want != got:
            raise ConfigError(f"{model.name}: built for {m} features of dimension {want}, given {got}; "
                              f"pass the features the model was built with")


def image_mask(features, n_items: int, model: str) -> np.ndarray:
    """Which items have a real image (all of them when the features carry no mask)."""
    mask = getattr(features, "image_mask", None)
    if mask is None:
        return np.ones(n_items, bool)
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if mask.shape != (n_items,) or mask.dtype.kind not in "biu":
        raise DataError(None, f"{model}: image_mask has shape {mask.shape} and dtype {mask.dtype}, expected "
                              f"({n_items},) booleans (one per item)")
    return mask.astype(bool)


def view_presence(features, m: str, x: np.ndarray, n_items: int, model: str) -> np.ndarray:
    """Which items have view ``m`` (``x``: its checked matrix): a row that is not all zero (the feature store, and
    MMRec's import, write a zero row for an item without a text or an image), and for images ``image_mask`` too."""
    present = np.linalg.norm(x, axis=1) > 0
    if m == "image":
        present &= image_mask(features, n_items, model)
    return present


def empty_views(features, found: dict[str, np.ndarray], n_items: int, model: str) -> list[str]:
    """The views in ``found`` that no item has (every row zero): e.g. an image folder encoded where no image could
    be read. The models read them as zeros; shared with RecGOAT so that every model reports them alike."""
    return [m for m, x in found.items() if not view_presence(features, m, x, n_items, model).any()]


def no_usable_view_message(model: str, empty: list[str]) -> str:
    """``model`` was given features whose every view (``empty``) no item has: training would read zeros only."""
    views = " and ".join(empty)
    has = " or ".join("an image" if m == "image" else "a text" for m in empty)
    return (f"{model} needs item text or image features, but no item has any: the {views} features given are "
            f"empty (every row zero{', no image in image_mask' if 'image' in empty else ''}: no item has {has}), "
            f"and a model trained on them would read zeros only; give features where items have a text or an image "
            f"(`recgoat encode text` / `recgoat encode image`), or train a model that reads no features (lightgcn)")


def views_read(summary: dict[str, Any], profile_source: bool = False) -> list[str]:
    """The feature views a run summary says its model read, as `recgoat train`'s "feature views used" line and the
    benchmark report name them: ``modalities_used`` with those no item has marked (``empty_views``), then the
    profile branch, with where its profiles came from when ``profile_source`` (``profile_source``)."""
    empty = summary.get("empty_views") or ()
    views = [f"{m} (empty: no item has one)" if m in empty else m for m in summary.get("modalities_used") or ()]
    if summary.get("profile_branch"):
        source = summary.get("profile_source") if profile_source else None
        views.append(f"profile {source}" if isinstance(source, str) and source.startswith("(") else
                     f"profile ({source})" if source else "profile")
    return views


def register_item_features(model: Recommender, found: dict[str, np.ndarray]) -> None:
    """Each modality's frozen features as a non-persistent buffer ``feat_<m>`` (not saved): ``.double()`` and
    ``.to(device)`` move them with the weights, as RecGOAT's. Held in a plain dict, FREEDOM's and LGMRec's stayed
    float32 on the CPU, and the first product with float64 weights failed inside torch. Made in the weights'
    dtype and device (:func:`register_fixed`), so features given after ``.double()`` match them too."""
    for m, x in found.items():
        register_fixed(model, f"feat_{m}", torch.from_numpy(x))


def tunable_item_features(n_items: int, dims: dict[str, Any], modalities: list[str],
                          enabled: bool) -> torch.nn.ParameterDict:
    """The item features a model fine-tunes, one ``n_items × dim`` parameter per modality (none unless
    ``enabled``), zero until :func:`set_item_features`. Made in the constructor, not in ``prepare()``: ``load()``
    builds the model and reads its state before any ``prepare()``."""
    return torch.nn.ParameterDict(
        {m: torch.nn.Parameter(torch.zeros(n_items, int(dims[f"{m}_dim"]))) for m in modalities} if enabled else {})


def model_item_features(model: Recommender, tuned: torch.nn.ParameterDict) -> dict[str, torch.Tensor]:
    """``X_m`` per modality: the fine-tuned parameters ``tuned``, and the frozen buffers of the others (which follow
    ``.double()`` / ``.to(device)``; a plain dict of them stayed float32 on the CPU)."""
    return {**registered_item_features(model), **tuned}


def set_item_features(model: Recommender, found: dict[str, np.ndarray], tuned: torch.nn.ParameterDict) -> None:
    """The item features ``found`` (:func:`item_features`) in ``model``: those it fine-tunes (``tuned``, parameters
    made in its constructor) start from them, the others are frozen buffers (:func:`register_item_features`). A
    model from ``load()`` keeps its fine-tuned values: its ``prepare`` refused features other than those it was
    trained with, so fitting it trains on from where it stopped, as every other parameter does (BM3, MGCN)."""
    if getattr(model, "_saved_feature_digests", None) is None:
        with torch.no_grad():
            for m, p in tuned.items():
                p.copy_(torch.from_numpy(found[m]))
    register_item_features(model, {m: x for m, x in found.items() if m not in tuned})


def registered_item_features(model: Recommender) -> dict[str, torch.Tensor]:
    """The ``feat_<m>`` buffers of :func:`register_item_features`, by modality (none before ``prepare``)."""
    return {m: b for m in MODALITIES if (b := getattr(model, f"feat_{m}", None)) is not None}


def item_features(model: Recommender, features) -> dict[str, np.ndarray]:
    """The item modalities in ``features``, checked against what ``model`` was built with, C-contiguous (each
    model hands them to ``torch.from_numpy``, which refuses a reversed view such as ``features[::-1]``)."""
    found = item_modalities(features, model.name, model.n_items)
    check_dims(model, found)
    # a view no item has (an image folder where no image could be read) is zeros: reported as empty, as RecGOAT
    # does ("feature views used: image" alone read as if images were used); with no other view it is refused,
    # as features not given at all are, rather than trained on
    empty = empty_views(features, found, model.n_items, model.name)
    if empty and len(empty) == len(found):
        raise ConfigError(no_usable_view_message(model.name, empty))
    # the run summary names the views read (the CLI prints "feature views used: …"), as RecGOAT's does:
    # without it a peer trained on an image-only folder did not say that it saw no text
    model.summary["modalities_used"] = [m for m in MODALITIES if m in found]
    model.summary.pop("empty_views", None)
    if empty:
        model.summary["empty_views"] = empty
    return {m: np.ascontiguousarray(x) for m, x in found.items()}
