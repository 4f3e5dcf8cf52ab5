"""Datasets: loading, preprocessing, splitting and the :class:`Dataset` container."""
from recgoat.datasets.dataset import SPLITS, Dataset
from recgoat.datasets.preprocess import PrepareConfig, prepare
from recgoat.datasets.registry import available, load, load_raw

__all__ = ["Dataset", "PrepareConfig", "SPLITS", "available", "load", "load_raw", "prepare"]
