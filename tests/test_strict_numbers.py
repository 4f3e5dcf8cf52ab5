"""recgoat.strict.is_int / is_real: "an integer (a real), numpy's too, never a boolean", the one rule behind the
feature settings, PrepareConfig, the retrieval index's parameters and the evaluator's cut-offs."""
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from recgoat.datasets.preprocess import PrepareConfig, ratios_ok
from recgoat.errors import ConfigError
from recgoat.evaluation.evaluator import Evaluator
from recgoat.features.store import FeatureConfig
from recgoat.serving.retrieval import ItemIndex
from recgoat.strict import is_int, is_real

INTS = [0, 7, -3, 10**30, np.int8(3), np.int64(-2), np.uint64(5), np.intp(1)]
REALS_NOT_INT = [2.5, -0.0, float("nan"), float("inf"), np.float32(1.5), np.float64(8.0), np.float16(2),
                 Fraction(1, 3)]
NEITHER = [True, False, np.bool_(True), np.bool_(False), "3", "2.5", b"1", None, Decimal("2"), 1 + 0j,
           np.complex64(1), np.array(3), np.array([3]), [3], (3,), object()]


@pytest.mark.parametrize("value", INTS, ids=repr)
def test_integers_are_ints_and_reals(value) -> None:
    assert is_int(value) and is_real(value)


@pytest.mark.parametrize("value", REALS_NOT_INT, ids=repr)
def test_floats_and_fractions_are_reals_not_ints(value) -> None:
    """8.0 is no integer (a float where a count goes is refused, not rounded); NaN/inf are real (callers that
    need a finite value check it)."""
    assert not is_int(value) and is_real(value)


@pytest.mark.parametrize("value", NEITHER, ids=repr)
def test_booleans_strings_none_decimals_and_arrays_are_neither(value) -> None:
    """A bool is an int to Python (YAML reads yes/no/on/off so): refused; Decimal is no numbers.Real; a 0-d
    array is neither (models.base._is_integer, which takes 0-d tensors, is a rule of its own)."""
    assert not is_int(value) and not is_real(value)


# ---------------------------------------------------------------------------------------------- the places using it
@pytest.mark.parametrize("value, ok", [(8, True), (np.int32(8), True), (True, False), (np.bool_(True), False),
                                       (8.0, False), ("8", False)])
def test_feature_settings_take_integers_only(value, ok) -> None:
    if ok:
        assert FeatureConfig(chunk_size=value).validate().chunk_size == value
    else:
        with pytest.raises(ConfigError, match=r"^chunk_size must be a positive integer"):
            FeatureConfig(chunk_size=value).validate()


@pytest.mark.parametrize("value, ok", [(1.5, True), (2, True), (np.float32(0.5), True), (Fraction(1, 2), True),
                                       (True, False), ("1", False), (Decimal("1"), False)])
def test_feature_real_settings_take_reals_not_booleans(value, ok) -> None:
    if ok:
        FeatureConfig(llm_timeout=value).validate()
    else:
        with pytest.raises(ConfigError, match=r"^llm_timeout must be > 0 seconds"):
            FeatureConfig(llm_timeout=value).validate()


def test_prepare_config_takes_integers_and_reals_not_booleans() -> None:
    PrepareConfig(k_core=np.int64(3), seed=np.uint16(7), min_rating=np.float32(3.5))
    assert ratios_ok((Fraction(8, 10), 0.1, np.float64(0.1)))
    for bad in ({"k_core": True}, {"k_core": 2.0}, {"seed": np.bool_(False)}, {"min_rating": True},
                {"min_rating": "4"}):
        with pytest.raises(ConfigError):
            PrepareConfig(**bad)
    assert not ratios_ok((True, 0, 0)) and not ratios_ok((0.8, 0.1, np.bool_(False)))


@pytest.mark.parametrize("kind, kw", [("hnsw", {"hnsw_m": np.int64(8)}), ("hnsw-l2", {"hnsw_m": np.int32(4)}),
                                      ("ivf", {"nlist": np.int64(4), "nprobe": np.uint8(2)})])
def test_retrieval_index_takes_numpy_integers(kind, kw) -> None:
    """numpy integers passed the check but reached faiss's SWIG constructors, which refused them with a bare
    TypeError ("Wrong number or type of arguments")."""
    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    ids, _ = ItemIndex(x, kind, **kw).search(x[:2], np.int64(3))
    assert ids.shape == (2, 3)


@pytest.mark.parametrize("kw", [{"hnsw_m": True}, {"hnsw_m": 8.0}, {"hnsw_m": "8"}])
def test_retrieval_index_refuses_what_is_no_integer(kw) -> None:
    x = np.ones((10, 4), np.float32)
    with pytest.raises(ConfigError, match=r"^hnsw_m must be an integer >= 2"):
        ItemIndex(x, "hnsw", **kw)
    with pytest.raises(ConfigError, match=r"^k must be an integer >= 1"):
        ItemIndex(x).search(x[:1], kw["hnsw_m"])


def test_evaluator_cut_offs_are_integers_not_booleans() -> None:
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))
    assert Evaluator(m, m, ks=(np.int64(2), 1)).ks == (1, 2)
    for ks in ((True,), (np.bool_(True),), (2.0,), ("5",), (0,), ()):
        with pytest.raises(ValueError, match=r"^ks must be a non-empty list of integer cut-offs >= 1"):
            Evaluator(m, m, ks=ks)
