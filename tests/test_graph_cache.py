"""RecGOAT's kNN graph cache (``cached_knn``): keyed by the features' content, so new features under the
same feature manifest get their own graph; a damaged or foreign cache file is rebuilt, not trusted."""
from __future__ import annotations

import numpy as np
import pytest

from recgoat.graphs.knn import knn_graph
from recgoat.models import recgoat as rg


@pytest.fixture(autouse=True)
def fresh_memory_cache(monkeypatch):
    monkeypatch.setattr(rg, "_GRAPHS", {})


def feats(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(30, 8)).astype(np.float32)


def same(a, b) -> bool:
    return (a != b).nnz == 0 and a.shape == b.shape


@pytest.mark.parametrize("on_disk", [False, True])
def test_other_features_get_their_own_graph(tmp_path, on_disk):
    """Re-encoded features keep their manifest's key (the encoder settings): keyed by it, the first graph
    came back for the second matrix, from memory and from the disk cache alike."""
    cache = str(tmp_path) if on_disk else None
    a, b = feats(0), feats(1)
    ga = rg.cached_knn(a, 5, "item-text", None, cache)
    if on_disk:
        rg._GRAPHS.clear()
    gb = rg.cached_knn(b, 5, "item-text", None, cache)
    assert same(ga, knn_graph(a, 5)) and same(gb, knn_graph(b, 5)) and not same(ga, gb)
    assert rg.cached_knn(a.copy(), 5, "item-text", None, cache) is not None  # same content: reused
    assert rg._GRAPHS and all(v.shape == (30, 30) for v in rg._GRAPHS.values())


def break_deflate(path) -> None:
    """Make the first member of the zip ``path`` an invalid deflate stream (its first block's type the reserved
    0b11): reading it is a ``zlib.error``, which no zip check (BadZipFile) catches first."""
    import struct

    data = bytearray(path.read_bytes())
    method, = struct.unpack_from("<H", data, 8)
    assert data[:4] == b"PK\x03\x04" and method == 8, "not a deflated first member"
    n, m = struct.unpack_from("<HH", data, 26)
    data[30 + n + m] = 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [b"not a zip file", b"", "deflate"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path, damage):
    x = feats(2)
    g = rg.cached_knn(x, 4, "user", None, str(tmp_path), symmetrize=False)
    (path,) = tmp_path.glob("knn-*.npz")
    if damage == "deflate":  # was a zlib.error traceback
        break_deflate(path)
    else:
        path.write_bytes(damage)
    rg._GRAPHS.clear()
    again = rg.cached_knn(x, 4, "user", None, str(tmp_path), symmetrize=False)
    assert same(again, g) and same(again, knn_graph(x, 4, symmetrize=False))
    rg._GRAPHS.clear()  # and the rebuilt file is whole again
    assert same(rg.cached_knn(x, 4, "user", None, str(tmp_path), symmetrize=False), g)


def test_a_cache_file_of_another_size_is_rebuilt(tmp_path):
    x = feats(3)
    rg.cached_knn(x, 4, "item-image", None, str(tmp_path))
    (path,) = tmp_path.glob("knn-*.npz")
    import scipy.sparse as sp

    sp.save_npz(path, sp.identity(7, format="csr"))  # a graph of 7 nodes under this 30-node key
    rg._GRAPHS.clear()
    assert same(rg.cached_knn(x, 4, "item-image", None, str(tmp_path)), knn_graph(x, 4))


def test_a_cache_folder_that_is_a_file_is_named_as_the_setting(tmp_path):
    """Was "gcfile: File exists" from mkdir, naming neither the setting nor the problem."""
    from recgoat.errors import ConfigError

    f = tmp_path / "gcfile"
    f.write_text("hi")
    with pytest.raises(ConfigError, match=f"^model.params.graph_cache_dir: {f} is a file, not a folder$"):
        rg.cached_knn(feats(0), 5, "item-text", None, str(f))
    assert f.read_text() == "hi"
