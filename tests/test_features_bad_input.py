"""Bad input to the feature stage gives one DataError/ConfigError naming the file and the problem, never a
traceback from numpy/torch/PIL: edited or swapped feature files, manifests that are not JSON objects,
MMRec matrices of the wrong dtype or shape (and no half import/export), unusable devices, 16-bit images;
and a run killed while a matrix is being replaced never leaves a new array under its old manifest."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import re  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from features_helpers import TinyNet, toy_dataset  # noqa: E402
from recgoat.errors import ConfigError, DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, export_mmrec, import_mmrec, load_features  # noqa: E402
from recgoat.features import store  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.image import ImagePreprocessor  # noqa: E402
from test_features_store_validation import mmrec_mapping  # noqa: E402


def small(tmp_path, n_items: int = 6):
    """A toy dataset with one coloured PNG per item (absolute paths)."""
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n_items):
        p = folder / f"{i}.png"
        Image.new("RGB", (40, 50), (40 * i, 255 - 40 * i, 90)).save(p)
        paths.append(str(p))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                          "title": [f"item number {i}" for i in range(n_items)], "image": paths})
    return toy_dataset(items, [[0, 1, 2], [3, 4, 5], [1, 3, 5]])


def imported(tmp_path, ds, dim: int = 8):
    """A feature folder made by import_mmrec (no model needed): text and image matrices with manifests."""
    rng = np.random.default_rng(0)
    src = tmp_path / "mm"
    src.mkdir()
    np.save(src / "text_feat.npy", rng.normal(size=(ds.n_items, dim)).astype(np.float32))
    np.save(src / "image_feat.npy", rng.normal(size=(ds.n_items, dim + 2)).astype(np.float32))
    mmrec_mapping(src, ds)
    return import_mmrec(ds, src, tmp_path / "f")


# ---------------------------------------------------------------------------------------------- load_features
@pytest.mark.parametrize("content, problem", [("[1, 2]", "manifest is a JSON list, not an object"),
                                              ('"text"', "manifest is a JSON str, not an object"),
                                              (None, "manifest is not readable JSON: [Errno 21] Is a directory")])
def test_manifest_that_is_not_a_json_object(tmp_path, content, problem):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    man = folder / "text.json"
    man.unlink()
    if content is None:
        man.mkdir()
    else:
        man.write_text(content)
    with pytest.raises(DataError, match="^" + re.escape(f"{man}: {problem}")):
        load_features(ds, folder)


def test_array_replaced_after_encoding_is_refused(tmp_path):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    shutil.copyfile(folder / "text.npy", folder / "image.npy")  # same rows, another matrix
    with pytest.raises(DataError) as err:
        load_features(ds, folder)
    assert str(err.value) == (f"{folder / 'image.npy'}: shape (6, 8), but its manifest image.json says (6, 10): "
                              "the file was replaced or edited after encoding; re-run `recgoat encode`")


def test_image_mask_must_be_boolean(tmp_path):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    np.save(folder / "image_mask.npy", np.full(ds.n_items, 0.5))  # bool(0.5) would read as "has an image"
    with pytest.raises(DataError, match=r"image_mask.npy: dtype float64, expected bool"):
        load_features(ds, folder)


def test_a_file_that_is_not_npy_is_named_as_such(tmp_path):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    (folder / "text.npy").write_text("hello")
    with pytest.raises(DataError) as err:
        load_features(ds, folder)
    assert str(err.value) == f"{folder / 'text.npy'}: not a .npy file (no NumPy header); save it with numpy.save"


# ---------------------------------------------------------------------------------------------- MMRec
@pytest.mark.parametrize("arr, problem", [
    (np.array([["a"] * 4] * 6), "dtype <U1 is not a number type (expected float32)"),
    (np.ones((6, 4), bool), "dtype bool is not a number type (expected float32)"),
    (np.ones((6, 4), np.complex64), "dtype complex64 is not a number type (expected float32)"),
    (np.zeros((6, 0), np.float32), "shape (6, 0): no feature columns"),
    (np.full((6, 4), 1e39), "6 rows hold NaN or inf (first: row 0, item_id 'i0')"),  # overflows float32
    # one value per item: its 6 entries were told "expected 6 rows"; what it lacks is the second axis
    (np.ones(6, np.float32), "shape (6,) is 1-D, expected a 2-D matrix: 6 rows (one per item) x feature dimensions"),
    (np.ones((6, 2, 2), np.float32),
     "shape (6, 2, 2) is 3-D, expected a 2-D matrix: 6 rows (one per item) x feature dimensions"),
])
def test_import_mmrec_refuses_bad_matrices_with_one_error(tmp_path, arr, problem):
    ds = small(tmp_path)
    src = tmp_path / "mm"
    src.mkdir()
    np.save(src / "image_feat.npy", arr)
    mmrec_mapping(src, ds)
    with pytest.raises(DataError, match="^" + re.escape(f"{src / 'image_feat.npy'}: {problem}") + "$"):
        import_mmrec(ds, src, tmp_path / "f")


def test_load_features_1d_matrix_is_told_to_be_2d(tmp_path):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    np.save(folder / "text.npy", np.ones(ds.n_items, np.float32))
    with pytest.raises(DataError) as err:
        load_features(ds, folder)
    assert str(err.value) == (f"{folder / 'text.npy'}: shape (6,) is 1-D, expected a 2-D matrix: 6 rows (one per "
                              "item) x feature dimensions")


def test_import_mmrec_writes_nothing_when_one_file_is_bad(tmp_path):
    ds = small(tmp_path)
    src = tmp_path / "mm"
    src.mkdir()
    np.save(src / "text_feat.npy", np.ones((ds.n_items, 4), np.float32))  # good
    np.save(src / "image_feat.npy", np.ones((ds.n_items - 1, 4), np.float32))  # one row short
    with pytest.raises(DataError, match=r"image_feat.npy: shape \(5, 4\), expected 6 rows"):
        import_mmrec(ds, src, tmp_path / "f")
    assert not (tmp_path / "f" / "text.npy").exists()


@pytest.mark.parametrize("make, problem", [
    # a 1-D array was told "shape (6,), expected 6 rows", which it has
    (lambda n: np.ones(n, np.float32), "shape (6,) is 1-D, expected a 2-D matrix: 6 rows (one per item) x "
                                        "feature dimensions"),
    (lambda n: np.array([["x"] * 3] * n), "dtype <U1 is not a number type (expected float32)"),
])
def test_cli_import_mmrec_bad_matrix_is_one_line(tmp_path, make, problem):
    ds = small(tmp_path)
    ds.save(tmp_path / "ds")
    (tmp_path / "mm").mkdir()
    np.save(tmp_path / "mm" / "text_feat.npy", make(ds.n_items))
    res = CliRunner().invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "ds"),
                                   "--out", str(tmp_path / "f")])
    assert res.exit_code == 1
    assert res.output == f"error: {tmp_path / 'mm' / 'text_feat.npy'}: {problem}\n"


def test_export_mmrec_refuses_nan_and_writes_nothing(tmp_path):
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    img = np.load(folder / "image.npy")
    img[3, 1] = np.nan  # an edited or damaged matrix must not be handed on to MMRec
    np.save(folder / "image.npy", img)
    with pytest.raises(DataError, match=r"image.npy: 1 row holds NaN or inf \(first: row 3\)"):
        export_mmrec(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "text_feat.npy").exists()
    np.save(folder / "image.npy", img[:-1])  # fewer rows than its manifest says
    with pytest.raises(DataError, match=r"image.npy: shape \(5, 10\), expected 6 rows"):
        export_mmrec(folder, tmp_path / "out")


def test_python_export_and_import_of_no_features_are_the_clis_errors(tmp_path):
    """export_mmrec of a folder that is not there, or holds neither matrix, returned [] having written nothing
    (only `recgoat encode export-mmrec` refused it), and import_mmrec of a folder that is not there said it held
    no feature files: the Python functions raise what the CLI prints."""
    ds = small(tmp_path)
    ds.save(tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    for folder, problem in (("nope", "no such feature folder"),
                            ("empty", "holds no text.npy or image.npy to export; run `recgoat encode text` or "
                                      "`recgoat encode image` first")):
        with pytest.raises(DataError) as err:
            export_mmrec(tmp_path / folder, tmp_path / "dest", ds)
        assert str(err.value) == f"{tmp_path / folder}: {problem}"
        res = CliRunner().invoke(app, ["export-mmrec", str(tmp_path / folder), "--dest", str(tmp_path / "dest")])
        assert res.exit_code == 1 and res.output == f"error: {err.value}\n"
    assert not (tmp_path / "dest").exists() and list((tmp_path / "empty").iterdir()) == []
    with pytest.raises(DataError) as err:
        import_mmrec(ds, tmp_path / "nope", tmp_path / "out")
    assert str(err.value) == f"{tmp_path / 'nope'}: no such folder"
    res = CliRunner().invoke(app, ["import-mmrec", str(tmp_path / "nope"), str(tmp_path / "ds"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and res.output == f"error: {err.value}\n"
    assert not (tmp_path / "out").exists()


def test_encode_with_mmrec_and_nothing_to_export_says_so(tmp_path, capsys):
    """`encode users --mmrec` writes no item matrix: the export has nothing to write, said, not an error."""
    ds = small(tmp_path)
    out = encode_all(ds, tmp_path / "f", FeatureConfig(export_mmrec=True), which="users")
    assert (out / "profile.npy").is_file() and not list(out.glob("*_feat.npy"))
    assert "MMRec layout: nothing to write" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device, problem", [
    ("foo", "device 'foo' is not a torch device to encode on"),
    ("meta", "device 'meta' is not a torch device to encode on"),
    pytest.param("cuda", "device 'cuda': no CUDA GPU is available to torch here; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_unusable_device_is_a_config_error_before_any_model_loads(tmp_path, device, problem):
    with pytest.raises(ConfigError, match=problem):
        FeatureConfig(device=device).validate()
    ds = small(tmp_path)
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, ["image", str(tmp_path / "ds"), "--out", str(tmp_path / "f"),
                                   "--device", device, "--no-progress"])
    assert res.exit_code == 1 and res.output.startswith(f"error: {problem}") and len(res.output.splitlines()) == 1


# ---------------------------------------------------------------------------------------------- images
def test_16_bit_grayscale_image_is_scaled_not_clipped_to_white(tmp_path):
    ramp = np.linspace(0, 65535, 120 * 90).reshape(90, 120)
    Image.fromarray(ramp.astype(np.uint16)).save(tmp_path / "g16.png")  # mode I;16
    Image.fromarray(np.rint(ramp / 257).astype(np.uint8)).save(tmp_path / "g8.png")
    pre = ImagePreprocessor(32)
    wide, narrow = pre.load(tmp_path / "g16.png"), pre.load(tmp_path / "g8.png")
    assert wide.min() < 100 < 150 < wide.max()  # was 255 everywhere
    assert np.abs(wide.astype(int) - narrow.astype(int)).max() <= 2


# ---------------------------------------------------------------------------------------------- kills
def test_kill_while_replacing_a_matrix_never_pairs_new_arrays_with_the_old_manifest(tmp_path, monkeypatch):
    ds = small(tmp_path)
    out = tmp_path / "f"
    encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    old = load_features(ds, out)
    assert old.image_mask.all()
    os.remove(ds.items.loc[2, "image"])  # a poster gone: new mask, new key
    real_save = store.save_array

    def killed_at_image_npy(path, arr):  # the mask is written, then the process dies
        if path.name == "image.npy":
            raise KeyboardInterrupt
        real_save(path, arr)

    monkeypatch.setattr(store, "save_array", killed_at_image_npy)
    with pytest.raises(KeyboardInterrupt):
        encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    monkeypatch.setattr(store, "save_array", real_save)
    # the new mask must not be served beside the old image.npy under the old manifest
    with pytest.raises(DataError, match="image.json: manifest missing for image.npy"):
        load_features(ds, out)
    encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)  # resumes
    f = load_features(ds, out)
    assert f.image_mask.tolist() == [True, True, False, True, True, True] and not f.image[2].any()


def test_a_manifest_that_is_not_an_object_is_stale_not_a_crash(tmp_path):
    ds = small(tmp_path)
    out = tmp_path / "f"
    encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    (out / "image.json").write_text("[]")
    encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)  # recomputed
    assert load_features(ds, out).image.shape == (ds.n_items, 4)


@pytest.mark.parametrize("command, problem", [("text", "has no item text"), ("image", "has no item images")])
def test_cli_single_kind_on_a_dataset_without_it_is_an_error(tmp_path, command, problem):
    """`encode text` / `encode image` asked for what the dataset lacks: an error, not exit 0 with nothing written
    (silent under --no-progress)."""
    ds = small(tmp_path)
    ds.items = ds.items.drop(columns=["image", "title"])
    ds.text_fields = []
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, [command, str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--no-progress"])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert res.output.startswith("error: ") and f"dataset toy {problem}" in res.output
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())


@pytest.mark.parametrize("kind, problem", [("text", "has no item text (an items table"),
                                           ("image", "has no item images"),
                                           ("users", "has no item text: a user profile written from item ids")])
def test_python_single_kind_on_a_dataset_without_it_is_the_clis_error_and_makes_no_folder(tmp_path, kind, problem):
    """encode_all(ds, out, which=KIND) on a dataset without it returned quietly, leaving a folder that held only
    .recgoat.lock; it raises the error `recgoat encode KIND` prints, before the folder is made. Among several kinds
    the absent ones are still skipped (`encode all`: whatever the dataset has), but none of them is one error too."""
    ds = small(tmp_path)
    ds.items = ds.items.drop(columns=["image", "title"])
    ds.text_fields = []
    out = tmp_path / "new" / "f"
    with pytest.raises(store.NothingToEncode) as err:
        encode_all(ds, out, FeatureConfig(image_model=TinyNet()), which=kind, progress=False)
    assert f"dataset toy {problem}" in str(err.value) and "; nothing to encode" in str(err.value)
    assert not (tmp_path / "new").exists()
    ds.save(tmp_path / "ds")  # no items file to name: the CLI names the dataset as given where the file is meant
    res = CliRunner().invoke(app, [kind, str(tmp_path / "ds"), "--out", str(out), "--no-progress"])
    named = f"{tmp_path / 'ds'}: " if err.value.of_items_file else ""
    assert res.exit_code == 1 and res.output == f"error: {named}{err.value}\n"
    with pytest.raises(store.NothingToEncode, match="^dataset toy has nothing to encode: its items have no text or "
                                                    "images"):
        encode_all(ds, out, FeatureConfig(), which=("text", "image", "users"), progress=False)
    assert not (tmp_path / "new").exists()


def test_image_cache_that_is_a_file_is_named(tmp_path):
    ds = small(tmp_path)
    ds.items.loc[0, "image"] = "http://127.0.0.1:9/0.jpg"  # a URL: the cache folder is needed
    (tmp_path / "cache").write_text("")
    with pytest.raises(DataError) as err:
        encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet(), image_cache_dir=str(tmp_path / "cache")),
                   which=("image",), progress=False)
    assert str(err.value) == f"{tmp_path / 'cache'}: exists and is not a folder; the image cache must be a folder"
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, ["image", str(tmp_path / "ds"), "--out", str(tmp_path / "f"),
                                   "--image-cache", str(tmp_path / "cache" / "sub"), "--no-progress"])
    assert res.exit_code == 1
    assert res.output == f"error: {tmp_path / 'cache'}: exists and is not a folder; the image cache must be a folder\n"


def test_encode_all_keeps_imported_features_unless_forced(tmp_path, capsys):
    """`encode all` after `encode import-mmrec` (for the profiles) silently replaced the features the user
    brought with freshly encoded ones; they are kept, and --force re-encodes."""
    ds = small(tmp_path)
    folder = imported(tmp_path, ds)
    before = {n: (folder / n).read_bytes() for n in ("text.npy", "image.npy", "image_mask.npy")}
    encode_all(ds, folder, FeatureConfig(image_model=TinyNet()), which=("text", "image"))
    said = " ".join(capsys.readouterr().err.split())
    assert f"text: kept the features imported from {(tmp_path / 'mm' / 'text_feat.npy').resolve()}" in said
    assert "image: kept the features imported from" in said
    assert {n: (folder / n).read_bytes() for n in before} == before
    encode_all(ds, folder, FeatureConfig(image_model=TinyNet()), which=("image",), progress=False, force=True)
    f = load_features(ds, folder)
    assert f.image.shape == (ds.n_items, 4) and "MMRec" in f.manifests["text"]["encoder"]
