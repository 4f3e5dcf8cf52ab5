"""`recgoat encode` failures: bad rows named, missing model paths, no folder left behind, unread options refused.

Feature-stage audit (s15): non-finite rows named by row AND id, model paths that do not exist said
plainly, no empty feature folder left by a failed first encode, and `encode text|image|users` refusing
options they do not read. Small constructed datasets; nothing is downloaded."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from features_helpers import NanNet, toy_dataset  # noqa: E402
from recgoat.errors import ConfigError, DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, export_mmrec, import_mmrec, load_features  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.store import FeatureError, check_feature_matrix  # noqa: E402
from recgoat.features.text import resolve_text_model  # noqa: E402
from recgoat.io import LOCK_NAME  # noqa: E402
from test_features_store_validation import mmrec_mapping  # noqa: E402

# ids sorted as strings: row k is not item k (row 2 is item '1022')
IDS = ["1000", "1011", "1022", "1033", "1044", "1055"]


def shop(tmp_path, images: bool = False):
    items = pd.DataFrame({"item_id": IDS, "title": [f"thing {i}" for i in range(6)]})
    if images:
        folder = tmp_path / "img"
        folder.mkdir(exist_ok=True)
        paths = []
        for i in range(6):
            Image.new("RGB", (40, 50), (40 * i, 255 - 40 * i, 90)).save(folder / f"{i}.png")
            paths.append(str(folder / f"{i}.png"))
        items["image"] = paths
    return toy_dataset(items, [[0, 1, 2], [3, 4, 5], [1, 3, 5]])


def mmrec_src(tmp_path, ds, nan_row=None):
    src = tmp_path / "mm"
    src.mkdir(exist_ok=True)
    x = np.ones((6, 4), np.float32)
    if nan_row is not None:
        x[nan_row, 1] = np.nan
    np.save(src / "text_feat.npy", x)
    mmrec_mapping(src, ds)
    return src


# ---------------------------------------------------------------------------------------------- 1: row and id
def test_load_features_names_the_row_and_its_item_id(tmp_path):
    ds = shop(tmp_path)
    out = import_mmrec(ds, mmrec_src(tmp_path, ds), tmp_path / "f")
    x = np.load(out / "text.npy")
    x[2, 0] = np.nan
    np.save(out / "text.npy", x)
    with pytest.raises(DataError) as e:
        load_features(ds, out)
    assert str(e.value) == f"{out / 'text.npy'}: 1 row holds NaN or inf (first: row 2, item_id '1022')"
    # export without a dataset: no ids to name, and never "item 2"
    with pytest.raises(DataError, match=r"1 row holds NaN or inf \(first: row 2\)$"):
        export_mmrec(out, tmp_path / "x")
    with pytest.raises(DataError, match=r"\(first: row 2, item_id '1022'\)$"):
        export_mmrec(out, tmp_path / "x", ds)


def test_import_mmrec_cli_names_the_row_and_its_item_id(tmp_path):
    ds = shop(tmp_path)
    ds.save(tmp_path / "ds")
    src = mmrec_src(tmp_path, ds, nan_row=5)
    res = CliRunner().invoke(app, ["import-mmrec", str(src), str(tmp_path / "ds"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 1
    assert res.output == f"error: {src / 'text_feat.npy'}: 1 row holds NaN or inf (first: row 5, item_id '1055')\n"


def test_check_feature_matrix_user_rows():
    x = np.ones((3, 2), np.float32)
    x[1, 1] = np.inf
    with pytest.raises(ValueError, match=r"^1 row holds NaN or inf \(first: row 1, user_id 'u7'\)$"):
        check_feature_matrix(x, per="user", ids=np.array(["u0", "u7", "u9"], object))
    with pytest.raises(ValueError, match=r"^1 row holds NaN or inf \(first: row 1\)$"):
        check_feature_matrix(x, per="user")


# ---------------------------------------------------------------------------------------------- 2: model paths
@pytest.mark.parametrize("value", ["/nonexistent", "./no/model", "../no-model", "~/no-such-model-s15", "a/b/c"])
def test_llm_model_path_that_does_not_exist_is_said_plainly(value):
    from recgoat.features.profiles import TransformersBackend

    with pytest.raises(ConfigError) as e:
        TransformersBackend(value)
    assert str(e.value) == (f"--llm-model {value}: no such file or folder (a local model folder, or a hub name "
                            "when the hub is reachable)")


def test_text_model_path_that_does_not_exist_is_said_plainly():
    from recgoat.features.text import missing_local_model

    with pytest.raises(ConfigError, match=r"^--text-model models/sub/minilm: no such file or folder"):
        resolve_text_model("models/sub/minilm")  # was handed to the hub as a repo id
    assert missing_local_model("owner/name", "--text-model") is None  # may be a hub name: the hub decides
    assert missing_local_model(".", "--text-model") is None  # exists


def test_cli_users_transformers_nonexistent_model(tmp_path):
    ds = shop(tmp_path)
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, ["users", str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--backend",
                                   "transformers", "--llm-model", "/nonexistent", "--no-progress"])
    assert res.exit_code == 1
    assert res.output == ("error: --llm-model /nonexistent: no such file or folder (a local model folder, or a "
                          "hub name when the hub is reachable)\n")
    assert not (tmp_path / "f").exists()  # defect 3 too: no folder holding only the lock file


# ---------------------------------------------------------------------------------------------- 3: no empty folder
def test_failed_encode_removes_the_folders_it_created(tmp_path):
    ds = shop(tmp_path)
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, ["text", str(tmp_path / "ds"), "--out", str(tmp_path / "features" / "tpl"),
                                   "--template", "{titel}. {genres}", "--no-progress"])
    assert res.exit_code == 1 and "{titel}" in res.output
    assert not (tmp_path / "features").exists()
    with pytest.raises(ConfigError):
        encode_all(ds, tmp_path / "a" / "b", FeatureConfig(text_template="{nope}"), which=("text",), progress=False)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("out", ["features/tpl", "new/../feats"])
def test_failed_encode_removes_what_it_created_under_a_relative_path(tmp_path, monkeypatch, out):
    """As typed on a command line: relative, or through `..` (whose `new/..` is the working folder itself: the
    empty `new/` the run made was left behind)."""
    ds = shop(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError):
        encode_all(ds, out, FeatureConfig(text_template="{nope}"), which=("text",), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_failed_encode_keeps_a_folder_that_existed(tmp_path):
    ds, out = shop(tmp_path), tmp_path / "mine"
    out.mkdir()
    with pytest.raises(ConfigError):
        encode_all(ds, out, FeatureConfig(text_template="{nope}"), which=("text",), progress=False)
    assert out.is_dir()


def test_failed_encode_keeps_a_new_folder_holding_checkpoints(tmp_path):
    ds, out = shop(tmp_path, images=True), tmp_path / "new" / "f"
    cfg = FeatureConfig(image_model=NanNet(nan_call=3), image_batch_size=2, chunk_size=2)  # call 3: rows 2-3
    with pytest.raises(FeatureError, match=r"first: row 2 \(item 1022\)"):
        encode_all(ds, out, cfg, which=("image",), progress=False)
    assert [p.name for p in (out / ".partial").glob("*/*.json")] == ["00000.json"]  # kept: resumed next run
    assert (out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------- 4: options
def test_encode_text_refuses_options_it_does_not_read(tmp_path):
    ds = shop(tmp_path)
    ds.save(tmp_path / "ds")
    res = CliRunner().invoke(app, ["text", str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--backend", "openai",
                                   "--llm-base-url", "http://127.0.0.1:9/v1", "--image-batch-size", "7"])
    assert res.exit_code == 1
    assert res.output == ("error: `encode text` does not read --image-batch-size (it applies to `encode image` and "
                          "`encode all`), nor --backend, --llm-base-url (they apply to `encode users` and "
                          "`encode all`)\n")
    assert not (tmp_path / "f").exists()  # refused before any work


def test_encode_image_refuses_a_template_even_with_its_default_value(tmp_path):
    res = CliRunner().invoke(app, ["image", "no-such-dataset", "--out", str(tmp_path / "f"), "--template",
                                   "{title}", "--max-chars", "1200"])
    assert res.exit_code == 1
    assert res.output == ("error: `encode image` does not read --template, --max-chars (they apply to "
                          "`encode text` and `encode all`)\n")


@pytest.mark.parametrize("args", [["all", "--template", "{title}", "--image-batch-size", "3", "--backend", "openai"],
                                  ["users", "--text-model", "x", "--batch-size", "3", "--mmrec", "--force"],
                                  ["image", "--image-cache", "c", "--device", "cpu", "--no-progress"]])
def test_options_the_subcommand_reads_pass(tmp_path, args):
    res = CliRunner().invoke(app, [args[0], "no-such-dataset", *args[1:]])
    assert res.exit_code == 1 and "does not read" not in res.output and "no-such-dataset" in res.output


@pytest.mark.parametrize("sub", ["users", "all"])
def test_llm_options_with_the_template_backend_are_refused(tmp_path, sub):
    """The template backend (the default) asks no LLM: `--llm-model`/`--llm-base-url` were ignored silently,
    so a forgotten `--backend openai` gave template profiles the user took for an LLM's."""
    res = CliRunner().invoke(app, [sub, "no-such-dataset", "--out", str(tmp_path / "f"), "--llm-model", "m",
                                   "--llm-base-url", "http://127.0.0.1:9/v1"])
    assert res.exit_code == 1
    assert res.output == ("error: --llm-base-url, --llm-model: apply to an LLM profile backend (--backend openai "
                          "or transformers), not the template backend\n")
    res = CliRunner().invoke(app, [sub, "no-such-dataset", "--out", str(tmp_path / "f"), "--llm-model", "m",
                                   "--backend", "openai"])
    assert res.exit_code == 1 and "template backend" not in res.output and "no-such-dataset" in res.output


# ---------------------------------------------------------------------------------------------- nothing to encode
NOTHING = ("dataset ratings has nothing to encode: its items have no text or images (and user profiles are written "
           "from item text); give the dataset an items file with text or images")


def ratings_only(parent) -> "os.PathLike":
    """A dataset folder of interactions alone (MovieLens' columns), no items file: no text, no images."""
    data = parent / "ratings"
    data.mkdir(parents=True)
    rows = ["userId,movieId,rating,timestamp"] + [f"{u},{(u * 3 + j) % 8},4.0,{1000 + 10 * u + j}"
                                                  for u in range(15) for j in range(6)]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n")
    return data


def test_encode_all_with_nothing_to_encode_is_one_error_and_makes_no_folder(tmp_path):
    """It printed the profiles' "skipped" note and "features in feats/all2", exited 0 and left a folder holding
    only its lock file, which `train --features feats/all2` refused, advising the `encode all` just run."""
    data = ratings_only(tmp_path)
    out = tmp_path / "feats" / "all2"
    res = CliRunner().invoke(app, ["all", str(data), "--out", str(out)])  # progress on: still one line
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output == f"error: {data}: {NOTHING}\n"
    assert not (tmp_path / "feats").exists()  # neither the folder nor its parent made by this command


def test_encode_all_with_nothing_to_encode_keeps_a_folder_that_was_there(tmp_path):
    data = ratings_only(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["all", str(data), "--out", str(out), "--no-progress"])
    assert res.exit_code == 1 and res.output == f"error: {data}: {NOTHING}\n"
    assert (out / "notes.txt").read_text() == "mine"


def test_train_on_a_folder_without_feature_files_advises_what_can_help(tmp_path, monkeypatch, capsys):
    """`train --features DIR` of a folder with no feature file said "run `recgoat encode all`", which for a
    dataset without item text or images encodes nothing: it says what the dataset lacks instead."""
    from conftest import run_main

    data = ratings_only(tmp_path)
    (tmp_path / "empty").mkdir()
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "vbpr", "--features",
                         str(tmp_path / "empty"), "--out", str(tmp_path / "runs"))
    assert code == 1 and "Traceback" not in err
    assert err == (f"error: {tmp_path / 'empty'}: no feature files (text.npy, image.npy, profile.npy); {NOTHING}, "
                   f"or train a model that reads no features\n")
    # a dataset with item text: `recgoat encode all` is the way, told with the folder to fill
    ds = shop(tmp_path)
    with pytest.raises(DataError) as e:
        load_features(ds, tmp_path / "empty")
    assert str(e.value) == (f"{tmp_path / 'empty'}: no feature files (text.npy, image.npy, profile.npy); run "
                            f"`recgoat encode all DATASET --out {tmp_path / 'empty'}` (or use --features auto)")
