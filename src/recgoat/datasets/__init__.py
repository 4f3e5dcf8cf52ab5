"""Datasets: loading, preprocessing, splitting and the :class:`Dataset` container."""
from recgoat.datasets.amazon import load_amazon
from recgoat.datasets.dataset import SPLITS, Dataset
from recgoat.datasets.lines import load_lines, save_lines
from recgoat.datasets.mmrec import load_mmrec, save_mmrec
from recgoat.datasets.preprocess import PrepareConfig, prepare
from recgoat.datasets.registry import available, load, load_raw

__all__ = ["Dataset", "PrepareConfig", "SPLITS", "available", "load", "load_amazon", "load_lines",
           "load_mmrec", "load_raw", "prepare", "save_lines", "save_mmrec"]
