"""Bad input to data preparation, the generic loader and the model API: one clear error naming the culprit.

Covers: invalid prepare options (split, ratios, k_core, seed) as a ConfigError; data errors that name the
dataset's folder; ids spelled ``nan``/``None`` read as ordinary ids; duplicated or missing rows of the
item table; ``recommend``/``score`` arguments; Field bounds of every model's hyper-parameters.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.config import load_config
from recgoat.datasets import PrepareConfig, load, prepare
from recgoat.datasets.generic import read_interactions
from recgoat.datasets.registry import load_raw, shared_root
from recgoat.errors import ConfigError, DataError

from conftest import run_main


def write_folder(root: Path, inter: pd.DataFrame, items: pd.DataFrame | None = None, fmt: str = "csv") -> Path:
    """A dataset folder in the generic layout (``interactions.{fmt}`` and optionally ``items.csv``)."""
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        inter.to_parquet(root / "interactions.parquet", index=False)
    else:
        inter.to_csv(root / f"interactions.{fmt}", sep="\t" if fmt == "tsv" else ",", index=False)
    if items is not None:
        items.to_csv(root / "items.csv", index=False)
    return root


def grid(n_users: int = 6, items: tuple[str, ...] = ("a", "b", "c", "d"), timestamps: bool = True) -> pd.DataFrame:
    """Every user interacts with every item (string ids), so any k-core up to len(items) keeps all."""
    rows = [(f"u{u}", it) for u in range(n_users) for it in items]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    df["rating"] = 4
    if timestamps:
        df["timestamp"] = 1_600_000_000 + np.arange(len(df))
    return df


# ------------------------------------------------------------------------------ 1. prepare options
@pytest.mark.parametrize("kwargs, message", [
    ({"split": "bogus"}, "unknown split 'bogus'; expected random, temporal, loo or none"),
    ({"ratios": (0.5, 0.5, 0.5)}, "ratios must be 3 non-negative numbers"),
    ({"ratios": (0.0, 0.5, 0.5)}, "positive train share"),
    ({"ratios": (1.1, -0.1, 0.0)}, "ratios must be"),
    ({"ratios": (0.8, 0.2)}, "ratios must be"),
    ({"ratios": (0.8, float("nan"), 0.1)}, "ratios must be"),
    ({"k_core": -1}, "k_core must be an integer >= 0"),
    ({"k_core": 2.5}, "k_core must be an integer >= 0"),
    ({"seed": -3}, "seed must be an integer >= 0"),
    ({"min_rating": "high"}, "min_rating must be a number or None"),
])
def test_invalid_prepare_option_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        PrepareConfig(**kwargs)


def test_valid_prepare_options_still_accepted(tmp_path):
    """Kept as given (numpy integers from a script included), and a dataset prepared with them records them in
    its saved manifest as plain JSON numbers."""
    from recgoat.datasets import Dataset

    a = PrepareConfig(split="none", ratios=[1, 0, 0], k_core=0, seed=0, min_rating=4)
    assert (a.split, tuple(a.ratios), a.k_core, a.seed, a.min_rating) == ("none", (1, 0, 0), 0, 0, 4)
    b = PrepareConfig(split="loo", ratios=(0.7, 0.15, 0.15), k_core=np.int64(3), seed=np.int32(7))
    assert (b.split, tuple(b.ratios), b.k_core, b.seed) == ("loo", (0.7, 0.15, 0.15), 3, 7)
    # 10 users × 8 of 12 items: every user and item has at least 3 interactions, so the 3-core keeps them all
    raw = pd.DataFrame([(f"u{u}", f"i{(u + j) % 12}", u * 10 + j) for u in range(10) for j in range(8)],
                       columns=["user", "item", "timestamp"])
    ds = prepare("opts", raw, config=b)
    ds.save(tmp_path / "opts")
    recorded = Dataset.load(tmp_path / "opts").info["prepare"]
    assert {k: recorded[k] for k in ("split", "ratios", "k_core", "seed")} == \
        {"split": "loo", "ratios": [0.7, 0.15, 0.15], "k_core": 3, "seed": 7}
    assert type(recorded["k_core"]) is int and type(recorded["seed"]) is int
    assert (ds.split_frame("valid").groupby("user").size() == 1).all() and ds.n_users == 10 and ds.n_items == 12


def test_prepare_revalidates_options_set_after_construction():
    cfg = PrepareConfig()
    cfg.split = "weekly"
    df = grid().rename(columns={"user_id": "user", "item_id": "item"})
    with pytest.raises(ConfigError, match="unknown split 'weekly'"):
        prepare("t", df, config=cfg)


def test_unknown_split_in_cli_and_train_config(tmp_path, monkeypatch, capsys):
    folder = write_folder(tmp_path / "cat", grid())
    for cmd in (["datasets", "info", str(folder), "--split", "bogus"],
                ["datasets", "prepare", str(folder), "--out", str(tmp_path / "out"), "--split", "bogus"]):
        code, err = run_main(monkeypatch, capsys, *cmd)
        assert code == 1 and "unknown split 'bogus'" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="data.split: unknown split 'bogus'"):  # before any data is read
        load_config(None, [f"data.name={folder}", "data.split=bogus"])


# ------------------------------------------------------------------------------ 2. errors name the data
def test_temporal_split_without_timestamps_names_the_folder(tmp_path, monkeypatch, capsys):
    folder = write_folder(tmp_path / "bare", grid(timestamps=False))
    with pytest.raises(DataError, match="a temporal split needs a timestamp column") as e:
        load(folder, PrepareConfig(split="temporal"))
    assert e.value.path == str(folder.resolve())
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(folder), "--split", "temporal")
    assert code == 1 and "bare: a temporal split needs a timestamp column" in err


def test_nothing_left_after_filtering_names_the_folder(tmp_path):
    folder = write_folder(tmp_path / "tiny", grid(n_users=2))
    with pytest.raises(DataError, match=r"no interactions left after filtering \(8 raw, k_core=5") as e:
        load(folder)
    assert e.value.path == str(folder.resolve())
    # the Python API without provenance names the dataset instead
    df = grid(n_users=2).rename(columns={"user_id": "user", "item_id": "item"})
    with pytest.raises(DataError, match="dataset 'mine': no interactions left"):
        prepare("mine", df, config=PrepareConfig(k_core=5))


def test_bad_timestamp_is_one_error_without_pandas_warning(tmp_path):
    path = tmp_path / "interactions.csv"
    # a first value that is no date makes pandas warn that it cannot infer the format
    path.write_text("user,item,timestamp\na,x,100\na,y,yesterday\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=r"unparseable timestamps \(first at data row 2: 'yesterday'\)") as e:
            read_interactions(path)
    assert e.value.path == str(path)
    assert not [w for w in caught if "infer format" in str(w.message)]


# ------------------------------------------------------------------------------ 3. ids spelled like NA
NA_LIKE = ("nan", "None", "NA", "null", "N/A", "x")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_na_spelled_ids_are_ordinary_ids(tmp_path, fmt):
    folder = write_folder(tmp_path / fmt, grid(n_users=3, items=NA_LIKE), fmt=fmt)
    ds = load(folder, PrepareConfig(k_core=0))
    assert sorted(ds.item_ids) == sorted(NA_LIKE) and ds.n_users == 3


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_really_empty_ids_are_still_refused(tmp_path, fmt):
    df = grid(n_users=2)
    df["item_id"] = df["item_id"].astype(object)
    df.loc[3, "item_id"] = None  # an empty cell in CSV/TSV, a null in Parquet
    folder = write_folder(tmp_path / fmt, df, fmt=fmt)
    with pytest.raises(DataError, match=r"column 'item_id' has 1 empty item ids \(first at data row 4\)") as e:
        load(folder)
    assert e.value.path == str(folder / f"interactions.{fmt}")


def test_item_table_row_for_an_id_called_nan(tmp_path):
    items = pd.DataFrame({"item_id": ["nan", "None", "a"], "title": ["Not a number", "Nothing", "A"]})
    folder = write_folder(tmp_path / "cat", grid(n_users=3, items=("nan", "None", "a")), items)
    ds = load(folder, PrepareConfig(k_core=0))
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    assert titles == {"nan": "Not a number", "None": "Nothing", "a": "A"}


def test_item_table_empty_id_is_refused(tmp_path):
    folder = write_folder(tmp_path / "cat", grid())
    (folder / "items.csv").write_text("item_id,title\na,A\n,Nameless\n")
    with pytest.raises(DataError, match=r"column 'item_id' has 1 empty item ids \(first at data row 2\)") as e:
        load(folder)
    assert e.value.path == str(folder / "items.csv")


# ------------------------------------------------------------------------------ 4. the item table
def test_duplicated_item_rows_are_refused(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b", "a", "c", "c", "d"], "title": list("ABXCYD")})
    folder = write_folder(tmp_path / "cat", grid(), items)
    with pytest.raises(DataError, match=r"2 duplicated item ids \('a', 'c'\)") as e:
        load(folder)
    assert e.value.path == str(folder / "items.csv")


def test_items_missing_from_the_table_warn_once_with_the_count(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b", "unused"], "title": ["A", "B", "U"]})
    folder = write_folder(tmp_path / "cat", grid(), items)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(folder, PrepareConfig(k_core=0))
    msgs = [str(w.message) for w in caught if "no row in this table" in str(w.message)]
    assert msgs == [f"{folder / 'items.csv'}: 2 of the 4 items in interactions.csv have no row in this table "
                    "(e.g. 'c', 'd'); they get no text or image features"]
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    assert titles["a"] == "A" and pd.isna(titles["c"]) and pd.isna(titles["d"])


def test_real_datasets_unchanged():
    """Reading ids without NA conversion must not move a benchmark: same fingerprints as before the fix."""
    assert load("ml-latest-small").fingerprint() == "028eecad9dad0c92"
    root = shared_root()
    if root is None or not (root / "ml100k-mm").is_dir():
        pytest.skip("shared dataset ml100k-mm not found")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every item of ml100k-mm has a row: no warning
        name, inter, items, fields, info = load_raw("ml100k-mm")
    # image paths are hashed relative to the dataset folder (see the test below), so this value holds
    # wherever the shared folder sits; an absolute path made CI (another checkout path) see another dataset
    assert prepare(name, inter, items, fields, PrepareConfig(), info).fingerprint() == "9d9a84bab200b200"


def _folder_with_images(root: Path) -> Path:
    from PIL import Image

    folder = write_folder(root, grid(), pd.DataFrame({"item_id": list("abcd"), "title": list("ABCD")}))
    (folder / "images").mkdir()
    for i, it in enumerate("abcd"):
        Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(folder / "images" / f"{it}.jpg")
    return folder


def _prepared(folder: Path):
    name, inter, items, fields, info = load_raw(str(folder))
    return prepare(name, inter, items, fields, PrepareConfig(k_core=0), info)


def test_moving_a_dataset_folder_keeps_its_fingerprint_and_images(tmp_path):
    """Caches and run folders are keyed on the fingerprint: moving the data must not make them stale,
    while pointing an item at another image must."""
    import shutil

    first = _folder_with_images(tmp_path / "here" / "shop")
    moved = tmp_path / "elsewhere" / "deeper" / "shop"
    shutil.copytree(first, moved)
    a, b = _prepared(first), _prepared(moved)
    assert a.fingerprint() == b.fingerprint()
    # the moved copy reads its own images, not the first folder's
    assert all(p is not None and p.startswith(str(moved.resolve())) and Path(p).is_file()
               for p in b.image_sources())
    (moved / "images" / "a.jpg").rename(moved / "images" / "z.jpg")
    (moved / "images" / "b.jpg").rename(moved / "images" / "a.jpg")
    assert _prepared(moved).fingerprint() != a.fingerprint()


def test_relative_image_paths_resolve_against_the_dataset_folder(tmp_path):
    """An item table may name images relative to its folder: encoding and the exported artefact's
    web page both find them there (export used to look in the working directory and drop them)."""
    from recgoat.serving.artifacts import _display_items

    folder = _folder_with_images(tmp_path / "shop")
    ds = _prepared(folder)
    ds.items["image"] = [f"images/{it}.jpg" for it in ds.items["item_id"]]
    ds.items.loc[ds.items["item_id"] == "d", "image"] = "https://example.com/d.jpg"
    sources = ds.image_sources()
    by_id = dict(zip(ds.item_ids, sources))
    assert by_id["a"] == str(folder.resolve() / "images" / "a.jpg") and by_id["d"] == "https://example.com/d.jpg"
    out = tmp_path / "artefact"
    out.mkdir()
    table = _display_items(ds, out)
    shown = dict(zip(table["item_id"], table["image"]))
    assert shown["d"] == "https://example.com/d.jpg"
    for it in "abc":
        assert (out / shown[it]).read_bytes() == (folder / "images" / f"{it}.jpg").read_bytes()


# ------------------------------------------------------------------------------ 5. recommend / score
@pytest.fixture(scope="module")
def tiny_model():
    from recgoat.models import LightGCN

    df = grid(n_users=6, items=tuple("abcdefgh")).rename(columns={"user_id": "user", "item_id": "item"})
    ds = prepare("t", df, config=PrepareConfig(k_core=0))
    torch.manual_seed(0)
    model = LightGCN.build(ds, {"embedding_dim": 4, "n_layers": 1})
    model.eval()
    return model


@pytest.mark.parametrize("user", ["u1", 1.5, None, True, np.float64(2.0)])
def test_recommend_refuses_non_integer_users(tiny_model, user):
    with pytest.raises(TypeError, match=r"user must be an integer user index \(0\.\.5\).*dataset\.user_index"):
        tiny_model.recommend(user=user)


@pytest.mark.parametrize("k, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError), ("3", TypeError)])
def test_recommend_refuses_bad_k(tiny_model, k, error):
    with pytest.raises(error, match="k must be an integer >= 1"):
        tiny_model.recommend(0, k=k)


def test_recommend_accepts_numpy_integers_and_keeps_key_error(tiny_model):
    items, scores = tiny_model.recommend(np.int64(2), k=np.int32(3), remove_seen=False)
    want_items, want_scores = tiny_model.recommend(2, k=3, remove_seen=False)
    assert np.array_equal(items, want_items) and np.array_equal(scores, want_scores) and len(items) == 3
    for bad in (-1, 6):
        with pytest.raises(KeyError, match=f"unknown user index {bad}"):
            tiny_model.recommend(bad)


def test_score_checks_its_indices(tiny_model):
    assert tiny_model.score(np.array([0, 5])).shape == (2, 8)
    # the same products, but a 2-column and an 8-column matmul may sum in another order (AVX2 MKL kernels do:
    # 2.4e-7 apart), so equal to float32 rounding, not bit for bit
    torch.testing.assert_close(tiny_model.score(torch.tensor([1, 2]), items=[0, 7]),
                               tiny_model.score([1, 2])[:, [0, 7]], rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match=r"users must be integer user indices \(0\.\.5\), got float values"):
        tiny_model.score([1.5])
    with pytest.raises(TypeError, match="got str values .*dataset.user_index"):
        tiny_model.score(["u1"])
    with pytest.raises(KeyError, match=r"unknown user index -1 \(expected 0\.\.5\)"):
        tiny_model.score([0, -1])  # torch would silently read the last user
    with pytest.raises(KeyError, match="unknown item index 8"):
        tiny_model.score([0], items=[8])


# ------------------------------------------------------------------------------ 6. model hyper-parameters
EMBEDDING_MODELS = ["lightgcn", "bprmf", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]


@pytest.mark.parametrize("name", EMBEDDING_MODELS)
@pytest.mark.parametrize("dim", [-4, 0])
def test_embedding_dim_must_be_positive(name, dim):
    with pytest.raises(ConfigError, match=rf"model\.params\.embedding_dim: .*greater than or equal to 1 \(got {dim}\)"):
        load_config(None, [f"model.name={name}", f"model.params.embedding_dim={dim}"])


@pytest.mark.parametrize("name, key, value", [
    ("lightgcn", "n_layers", -1), ("lightgcn", "reg_weight", -1e-4), ("bprmf", "reg_weight", -1.0),
    ("recgoat", "n_layers", -1), ("recgoat", "gat_heads", 0), ("recgoat", "gat_layers", -1),
    ("recgoat", "gat_dropout", 1.0), ("recgoat", "view_dropout", 1.0), ("recgoat", "tau", 0.0),
    ("recgoat", "ot_eps", 0.0), ("recgoat", "item_k", 0), ("recgoat", "user_k", 0),
    ("recgoat", "ot_iters", 0), ("recgoat", "lambda_cl", -0.1), ("recgoat", "gamma_t", 1.5),
])
def test_model_param_bounds_name_the_key(name, key, value):
    with pytest.raises(ConfigError, match=rf"model\.params\.{key}: .*\(got {value}\)"):
        load_config(None, [f"model.name={name}", f"model.params.{key}={value}"])


def test_python_api_build_with_bad_params_is_a_config_error():
    from recgoat.models import BPRMF, LightGCN

    for cls in (LightGCN, BPRMF):
        with pytest.raises(ConfigError, match=rf"{cls.name}: model\.params\.embedding_dim: .*\(got -4\)"):
            cls(6, 8, {"embedding_dim": -4})


def test_default_params_unchanged():
    from recgoat.models.base import get_model_class

    assert get_model_class("lightgcn").Config().model_dump() == {"embedding_dim": 64, "n_layers": 3,
                                                                  "reg_weight": 1e-4}
    assert get_model_class("bprmf").Config().model_dump() == {"embedding_dim": 64, "reg_weight": 1e-4}
    c = get_model_class("recgoat").Config()
    assert (c.embedding_dim, c.gat_dropout, c.gamma_t, c.tau, c.ot_eps, c.cl_max_points) == (64, 0.0, None, 0.2,
                                                                                              0.05, 1024)


def test_an_items_image_column_is_kept_beside_an_images_folder(tmp_path):
    """A generic folder with both an `image` column and images/: the column was overwritten by the folder's
    item-id stems (NaN for every item whose file is named otherwise); the column now wins, the folder fills
    the rows it leaves empty."""
    from PIL import Image

    folder = write_folder(tmp_path / "shop", grid(), pd.DataFrame({
        "item_id": list("abcd"), "title": list("ABCD"),
        "image": ["pics/first.png", "https://example.com/b.jpg", "", None]}))
    (folder / "pics").mkdir()
    (folder / "images").mkdir()
    Image.new("RGB", (4, 4)).save(folder / "pics" / "first.png")
    Image.new("RGB", (4, 4)).save(folder / "images" / "c.jpg")
    Image.new("RGB", (4, 4)).save(folder / "images" / "a.jpg")  # the column names another file for a
    ds = _prepared(folder)
    got = dict(zip(ds.item_ids, ds.image_sources()))
    assert got == {"a": str(folder / "pics" / "first.png"), "b": "https://example.com/b.jpg",
                   "c": str((folder / "images" / "c.jpg").resolve()), "d": None}


def test_python_load_of_a_split_folder_refuses_preparation_options_it_would_ignore(tmp_path):
    """`recgoat datasets info FOLDER --k-core 3` refused options an already split folder ignores; Python's
    load(FOLDER, PrepareConfig(k_core=3)) ignored them silently. Options at their defaults are nothing given."""
    mmrec = Path(__file__).parent / "fixtures" / "mmrec_tiny"
    with pytest.raises(ConfigError, match=r"mmrec_tiny: a MMRec dataset folder is already split and keeps its "
                                          r"split; k_core=3, seed=7 would be ignored"):
        load(mmrec, PrepareConfig(k_core=3, seed=7))
    assert load(mmrec, PrepareConfig()).n_users == load(mmrec).n_users
    # a prepared folder: the options it was prepared with are fine, others refused naming them
    load("ml-latest-small", PrepareConfig(k_core=3)).save(tmp_path / "p")
    assert load(tmp_path / "p", PrepareConfig(k_core=3)).info["prepare"]["k_core"] == 3
    with pytest.raises(ConfigError, match=r"\(it was prepared with k_core=3\); k_core=4 would be ignored"):
        load(tmp_path / "p", PrepareConfig(k_core=4))
