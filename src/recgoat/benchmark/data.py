"""A cell's data: its dataset, loaded and prepared (:func:`load_dataset`; the split is ``split_seed``'s, or the
cell's seed with ``split_seeds: true``), and its features: a given folder, or ``features: auto``, encoded once into
:func:`auto_feature_folder` (:func:`resolve_features`) with the kinds the benchmark's models read
(:func:`auto_kinds`).
"""
from __future__ import annotations

from pathlib import Path

from recgoat.benchmark.config import BenchmarkConfig, DatasetSpec, dataset_label
from recgoat.errors import ConfigError


def is_presplit(spec: DatasetSpec) -> bool:
    """A folder already split (prepared, MMRec, line-per-user): the split seed does not apply."""
    from recgoat.datasets.registry import presplit_layout

    return presplit_layout(spec.name) is not None


def load_dataset(spec: DatasetSpec, split_seed: int):
    """Load and prepare a dataset; ``max_users`` keeps the first users of the raw interactions."""
    from recgoat.datasets import PrepareConfig, load, load_raw, prepare
    from recgoat.datasets.registry import default_prepare_config

    p = Path(spec.name)
    if is_presplit(spec):
        if spec.max_users or spec.prepare:
            raise ConfigError(f"dataset {spec.name}: already split; max_users/prepare do not apply")
        ds = load(p)
    else:
        cfg = default_prepare_config(spec.name)
        try:
            cfg = PrepareConfig(**{**cfg.__dict__, **spec.prepare, "seed": split_seed})
        except TypeError as e:
            raise ConfigError(f"dataset {spec.name}: bad prepare option: {e}") from None
        name, inter, items, fields, info = load_raw(spec.name)
        if spec.max_users:
            keep = inter["user"].drop_duplicates().iloc[:spec.max_users]
            inter = inter[inter["user"].isin(keep)]
            info = {**info, "max_users": spec.max_users}
        ds = prepare(name, inter, items, fields, cfg, info)
    ds.name = dataset_label(spec)
    return ds


def needs_features(model_cls: type) -> bool:
    return bool(getattr(model_cls, "needs_features", False))


def auto_feature_folder(out: Path, label: str, split_seed: int | str | None = None) -> Path:
    """Where ``features: auto`` encodes a dataset: ``<out>/features/<label>``, or ``<label>-split<seed>`` when
    every seed re-splits the data (``split_seeds: true``; ``split_seed`` given)."""
    return out / "features" / (label if split_seed is None else f"{label}-split{split_seed}")


def feature_folder(spec: DatasetSpec, out: Path, split_seed: int | None) -> Path:
    """The folder a dataset's features are read from: the one given, or :func:`auto_feature_folder`."""
    return Path(spec.features) if spec.features != "auto" else auto_feature_folder(out, dataset_label(spec), split_seed)


def auto_kinds(config: BenchmarkConfig) -> tuple[str, ...]:
    """What ``features: auto`` encodes (``recgoat encode``'s kinds): those the benchmark's models read
    (:meth:`~recgoat.models.base.Recommender.feature_kinds`). User profiles only when one of them reads them
    (RecGOAT with its profile branch): with an LLM backend they cost hours a benchmark of peers never used."""
    from recgoat.features.auto import kinds_read
    from recgoat.features.store import KINDS

    kinds = {k for model in config.models for k in kinds_read(model.name, model.params)}
    return tuple(k for k in KINDS if k in kinds)


def resolve_features(spec: DatasetSpec, dataset, out: Path, split_seed: int | None, progress: bool,
                     which: tuple[str, ...] | None = None, device: str = "cpu"):
    """Features for a dataset: a given folder, or encoded once into :func:`auto_feature_folder` (the kinds
    ``which``, default all; see :func:`auto_kinds`) by encoders on ``device`` (the ``train.device`` of the cell
    that needs them)."""
    from recgoat.features import load_features

    if spec.features is None:
        raise ConfigError(f"dataset {dataset_label(spec)}: a model needs features but `features` is null")
    folder = feature_folder(spec, out, split_seed)
    if spec.features == "auto":
        from recgoat.features.auto import encode_auto

        return encode_auto(dataset, folder, progress, which, device=device)
    from recgoat.features.loading import FingerprintMismatch
    from recgoat.features.store import named_as_encoded

    named = named_as_encoded(dataset, folder)
    try:
        return load_features(named, folder)
    except FingerprintMismatch as e:
        other = _other_data_features(e, spec, named.name)
        if other is None:
            raise
        raise other from None


def _other_data_features(error, spec: DatasetSpec, encoded_for: str):
    """The fingerprint refusal ``error`` (a :class:`~recgoat.features.loading.FingerprintMismatch`) of a given
    feature folder, told as features of another dataset when the
    folder's manifests name a dataset other than this entry's (its label, its name); None otherwise (the same
    dataset: its data changed since encoding, as the store says).

    Why: the store's advice, "the data changed since encoding; re-run `recgoat encode text`", is wrong for a
    folder of other data given by mistake (another dataset's, another ``max_users`` subset's): nothing changed,
    and re-encoding into that folder would overwrite the other dataset's features; a ``max_users`` subset or
    ``prepare`` options cannot be encoded by `recgoat encode` at all, only by ``features: auto``."""
    from recgoat.errors import DataError
    from recgoat.io import read_json

    names = {dataset_label(spec), spec.name, Path(spec.name).name}
    if is_presplit(spec) and (Path(spec.name) / "manifest.json").is_file():
        try:  # a prepared folder loads under the name it was prepared under, which `recgoat encode` records
            names.add(read_json(Path(spec.name) / "manifest.json").get("name"))
        except (OSError, ValueError, AttributeError):
            pass
    if encoded_for in names:
        return None
    label = dataset_label(spec)
    auto = ("`features: auto` (encoded into <out>/features/; `recgoat encode` cannot make features of a "
            "max_users subset or of prepare options)" if spec.max_users or spec.prepare else
            f"`features: auto`, or the folder `recgoat encode all {spec.name} --out DIR` makes")
    return DataError(error.path, f"features of dataset {encoded_for}, not of this benchmark's dataset {label} "
                                 f"({error.mismatch}); give dataset {label} "
                                 f"(datasets entry {spec.name!r}, key `features`) its own features: {auto}")
