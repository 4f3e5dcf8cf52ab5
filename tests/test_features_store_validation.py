"""Feature-store validation: matrices and manifests, output folders and settings, each one clear error.

Feature-store QA pass 3, with a fake text encoder (a digest of each text, no model loaded): export_mmrec
checks a matrix and its manifest with the same helper (and messages) as load_features, so a manifest of another
kind is refused; a cached matrix that load_features refuses is encoded again, not reported up to date; an
output that is a file or a read-only folder is one DataError naming the file (the CLI: one line); settings of
the wrong type are a ConfigError, not a TypeError later; a matrix of a kind the dataset no longer has, left from
older data, is removed instead of making the whole folder unloadable."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
from recgoat.datasets import Dataset  # noqa: E402
from recgoat.errors import ConfigError, DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, export_mmrec, import_mmrec, load_features  # noqa: E402
import recgoat.features.text as text_mod  # noqa: E402

ENCODED: list[str] = []


def fake_vec(t: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(t.encode()).digest()[:6], np.uint8).astype(np.float32) / 255


class FakeText:
    """Stands in for the sentence-transformers encoder: one digest row per text, every text recorded."""

    def __init__(self, model=None, device="cpu", batch_size=64):
        self.name, self.dim = f"fake {model}", 6

    def encode(self, texts, on_progress=None):
        ENCODED.extend(texts)
        return np.stack([fake_vec(t) for t in texts]) if texts else np.zeros((0, 6), np.float32)


@pytest.fixture(autouse=True)
def fake_text(monkeypatch):
    monkeypatch.setattr(text_mod, "TextEncoder", FakeText)
    ENCODED.clear()


def toy(images: bool = False) -> Dataset:
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "title": [f"item number {i}" for i in range(6)]})
    if images:
        items["image"] = [f"/nowhere/{i}.jpg" for i in range(6)]
    return toy_dataset(items, [[0, 1, 2], [3, 4, 5], [1, 3, 5], [0, 2], [4]], held_out=[5, 0, 2, 1, 3])


def mmrec_mapping(src: Path, ds: Dataset) -> None:
    """MMRec's i_id_mapping.csv in ``src``, rows in ``ds``'s item order: without it import_mmrec cannot know
    which item each row of the feature files describes (the ids are not row numbers) and refuses."""
    pd.DataFrame({"asin": ds.item_ids, "itemID": range(ds.n_items)}).to_csv(src / "i_id_mapping.csv", sep="\t",
                                                                            index=False)


def encoded(tmp_path: Path, ds: Dataset | None = None) -> tuple[Dataset, Path]:
    """A feature folder with text (fake encoder) and image features (imported: no image model needed)."""
    ds = ds or toy(images=True)
    src = tmp_path / "mm"
    src.mkdir()
    np.save(src / "image_feat.npy", np.random.default_rng(0).normal(size=(ds.n_items, 6)).astype(np.float32))
    mmrec_mapping(src, ds)
    out = import_mmrec(ds, src, tmp_path / "f")
    encode_all(ds, out, FeatureConfig(), which=("text",), progress=False)
    return ds, out


def error(fn) -> str:
    with pytest.raises(DataError) as e:
        fn()
    return str(e.value)


# ---------------------------------------------------------------------------------------------- export checks
def test_export_refuses_a_manifest_of_another_kind_with_load_features_message(tmp_path):
    """image.json copied over text.json: export_mmrec checked the manifest without its kind and wrote the
    text matrix under an image manifest to text_feat.npy; load_features refused it."""
    ds, out = encoded(tmp_path)
    shutil.copy(out / "image.json", out / "text.json")
    want = f"{out / 'text.json'}: is the manifest of image features (image.npy), not of text.npy: files copied in " \
           f"their place; re-run `recgoat encode`"
    assert error(lambda: load_features(ds, out)) == want
    assert error(lambda: export_mmrec(out, tmp_path / "x")) == want
    assert error(lambda: export_mmrec(out, tmp_path / "x", ds)) == want
    assert not (tmp_path / "x").exists()


def test_export_fingerprint_message_is_load_features_message(tmp_path):
    ds, out = encoded(tmp_path)
    other = toy(images=True)
    other.items.loc[0, "title"] = "changed"
    loaded = error(lambda: load_features(other, out))
    assert "the data changed since encoding; re-run `recgoat encode text`" in loaded
    assert error(lambda: export_mmrec(out, tmp_path / "x", other)) == loaded.replace("re-run", "not exported: re-run")

    assert "encoded for dataset" not in loaded  # the same dataset: its data changed, as the store said


def test_features_of_another_dataset_are_named_as_such_not_as_changed_data(tmp_path):
    """Features encoded for ml100k-mm loaded with ml-latest-small said "the data changed since encoding; re-run
    `recgoat encode text`": nothing changed, it is another dataset, and re-encoding would overwrite its features."""
    import dataclasses

    from recgoat.features.loading import FingerprintMismatch

    ds, out = encoded(tmp_path)
    other = dataclasses.replace(toy(images=True), name="ml-latest-small")
    with pytest.raises(FingerprintMismatch) as e:
        load_features(other, out)
    fp, this = json.loads((out / "text.json").read_text())["dataset_fingerprint"], other.fingerprint()
    assert str(e.value) == (f"{out / 'text.json'}: features encoded for dataset toy, not for dataset ml-latest-small "
                            f"(dataset fingerprint {fp}, this dataset's is {this}): encode dataset ml-latest-small's "
                            f"own features, `recgoat encode all ml-latest-small --out DIR` (or use --features auto)")
    assert e.value.other_dataset and "data changed" not in str(e.value)
    assert error(lambda: export_mmrec(out, tmp_path / "x", other)) == \
        str(e.value).replace(": encode dataset", ": not exported: encode dataset")


def test_a_run_preparing_the_data_its_own_way_names_another_datasets_features_too(tmp_path):
    """`train --set data.seed=7` replaced the store's advice with "prepare the data once with them": of no help
    for another dataset's features."""
    import dataclasses

    from recgoat.config import load_config
    from recgoat.training.run import load_side_features

    ds, out = encoded(tmp_path)
    cfg = load_config(None, ["data.name=ml-latest-small", "data.seed=7", "model.name=vbpr"])
    other = dataclasses.replace(toy(images=True), name="ml-latest-small")
    msg = error(lambda: load_side_features(other, str(out), cfg))
    assert "features encoded for dataset toy, not for dataset ml-latest-small" in msg and "prepare" not in msg
    changed = toy(images=True)
    changed.items.loc[0, "title"] = "changed"  # the same dataset's data changed: the run's own advice, as before
    assert "`recgoat encode` prepares the data with the default options" in \
        error(lambda: load_side_features(changed, str(out), cfg))


@pytest.mark.parametrize("edit, problem", [
    ("int", "text.npy: dtype int64 is not floating point"),
    ("dim", r"text.npy: shape \(6, 6\), but its manifest text.json says \(6, 9\)"),
])
def test_export_refuses_what_load_features_refuses(tmp_path, edit, problem):
    """An integer matrix, or one whose manifest names another width (a file swapped in): refused by
    load_features, exported as they were."""
    ds, out = encoded(tmp_path)
    if edit == "int":
        np.save(out / "text.npy", np.ones((6, 6), np.int64))
    else:
        man = json.loads((out / "text.json").read_text())
        (out / "text.json").write_text(json.dumps({**man, "dim": 9}))
    with pytest.raises(DataError, match=problem):
        load_features(ds, out)
    with pytest.raises(DataError, match=problem):
        export_mmrec(out, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- stale caches
@pytest.mark.parametrize("damage", ["nan row", "int dtype", "manifest rows", "manifest kind"])
def test_a_cached_matrix_load_features_refuses_is_encoded_again(tmp_path, damage):
    """encode said "text: up to date" for a text.npy holding a NaN row (or an integer copy, or under an edited
    manifest), which load_features then refused on every run until --force."""
    ds, out = toy(), tmp_path / "f"
    encode_all(ds, out, FeatureConfig(), which=("text",), progress=False)
    good = np.load(out / "text.npy")
    man = json.loads((out / "text.json").read_text())
    if damage == "nan row":
        bad = good.copy()
        bad[2, 0] = np.nan
        np.save(out / "text.npy", bad)
    elif damage == "int dtype":
        np.save(out / "text.npy", good.astype(np.int64))
    else:
        (out / "text.json").write_text(json.dumps({**man, **({"rows": 99} if damage == "manifest rows"
                                                              else {"kind": "users"})}))
    with pytest.raises(DataError):
        load_features(ds, out)
    ENCODED.clear()
    encode_all(ds, out, FeatureConfig(), which=("text",), progress=False)
    assert len(ENCODED) == ds.n_items
    np.testing.assert_array_equal(load_features(ds, out).text, good)
    ENCODED.clear()
    encode_all(ds, out, FeatureConfig(), which=("text",), progress=False)  # now it is up to date
    assert ENCODED == []


def test_a_matrix_of_an_input_the_dataset_no_longer_has_is_removed(tmp_path, capsys):
    """The dataset lost its images (or text): encode all skipped the kind and left image.npy of the old data,
    so load_features refused the folder ("re-run `recgoat encode image`", which has nothing to encode)."""
    _, out = encoded(tmp_path)
    now = toy(images=False)
    encode_all(now, out, FeatureConfig(), which=("text", "image", "users"), progress=False)
    assert f"image: removed {out / 'image.npy'}, made for other data" in " ".join(capsys.readouterr().err.split())
    f = load_features(now, out)
    assert f.image is None and f.text.shape == (6, 6) and f.profile.shape == (5, 6)
    assert not (out / "image_mask.npy").exists() and not (out / "image.json").exists()


def test_features_imported_for_this_dataset_are_kept_though_it_has_no_such_input(tmp_path):
    ds = toy(images=False)
    _, out = encoded(tmp_path, ds)  # image features imported for a dataset without images
    before = (out / "image.npy").read_bytes()
    encode_all(ds, out, FeatureConfig(), which=("text", "image"), progress=False)
    assert (out / "image.npy").read_bytes() == before and load_features(ds, out).image.shape == (6, 6)


# ---------------------------------------------------------------------------------------------- output folders
def test_an_output_that_is_a_file_is_one_data_error(tmp_path):
    """encode_all / export_mmrec / import_mmrec into a path that is a file (or under one) raised a bare
    FileExistsError / NotADirectoryError (a traceback from the benchmark runner and demo)."""
    ds, out = encoded(tmp_path)
    (tmp_path / "file").write_text("")
    want = f"{tmp_path / 'file'}: exists and is not a folder; the feature output must be a folder"
    assert error(lambda: encode_all(ds, tmp_path / "file", FeatureConfig(), which=("text",), progress=False)) == want
    assert error(lambda: encode_all(ds, tmp_path / "file" / "sub", FeatureConfig(), progress=False)) == want
    assert error(lambda: export_mmrec(out, tmp_path / "file" / "mm")) == \
        f"{tmp_path / 'file'}: exists and is not a folder; the export destination must be a folder"
    assert error(lambda: import_mmrec(ds, tmp_path / "mm", tmp_path / "file")) == \
        f"{tmp_path / 'file'}: exists and is not a folder; the import output must be a folder"
    assert (tmp_path / "file").read_text() == ""


def _as_unprivileged(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """``python -m recgoat.features.cli ARGS`` as a user a read-only folder binds: root ignores file modes,
    so as root it runs as nobody (uid 65534)."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only to the test")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(home), "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(prefix + [sys.executable, "-m", "recgoat.features.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=home)


def test_read_only_output_folder_is_one_line_naming_the_file():
    """A read-only --out (or --dest): a PermissionError traceback from mkdir(.partial) / profiles.jsonl /
    the export's temporary file; now one `error:` line naming the file. The paths hold spaces."""
    root = Path(tempfile.mkdtemp(prefix="recgoat qa3 ", dir="/tmp"))  # not under pytest's 0700 tmp folders
    try:
        ds = toy(images=True)
        ds.save(root / "my data")
        src = root / "mm"
        src.mkdir()
        np.save(src / "text_feat.npy", np.ones((ds.n_items, 4), np.float32))
        mmrec_mapping(src, ds)
        import_mmrec(ds, src, root / "feat")
        (root / "read only").mkdir()
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "read only").chmod(0o555)
        res = _as_unprivileged(["users", str(root / "my data"), "--out", str(root / "read only"), "--no-progress"],
                               root)
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr == f"error: {root / 'read only' / 'profiles.jsonl'}: Permission denied; the feature " \
                             f"output must be a folder this user can write to\n"
        res = _as_unprivileged(["users", str(root / "my data"), "--out", str(root / "read only" / "new"),
                                "--no-progress"], root)
        assert res.returncode == 1 and res.stderr.startswith(f"error: {root / 'read only' / 'new'}: Permission "
                                                             f"denied;"), res.stderr
        res = _as_unprivileged(["export-mmrec", str(root / "feat"), "--dest", str(root / "read only")], root)
        assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
        assert res.stderr.startswith(f"error: {root / 'read only' / 'text_feat.npy'}: cannot write in "
                                     f"{root / 'read only'} (Permission denied); the export destination must be")
        assert not any((root / "read only").iterdir())
    finally:
        (root / "read only").chmod(0o755)
        shutil.rmtree(root)


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("setting, value", [("max_chars", "300"), ("chunk_size", 2.5), ("chunk_size", True),
                                            ("text_batch_size", None), ("llm_retries", 1.5),
                                            ("llm_timeout", "x"), ("llm_backoff", float("nan"))])
def test_a_setting_of_the_wrong_type_is_a_config_error(tmp_path, setting, value):
    """max_chars="300" and chunk_size=2.5 passed validate (int() of them is fine) and then failed deep in
    truncate() / range() with a TypeError; True was read as 1; None and "x" raised a bare TypeError/ValueError."""
    with pytest.raises(ConfigError, match=rf"^{setting} must be .*got {value!r}"):
        FeatureConfig.from_dict({setting: value})
    with pytest.raises(ConfigError, match=rf"^{setting} must be"):
        encode_all(toy(), tmp_path / "f", FeatureConfig(**{setting: value}), which=("text",), progress=False)
    assert not (tmp_path / "f").exists()


def test_numpy_integers_are_still_settings(tmp_path):
    cfg = FeatureConfig(chunk_size=np.int64(4), max_chars=np.int32(50), llm_timeout=np.float32(3))
    encode_all(toy(), tmp_path / "f", cfg, which=("text",), progress=False)
    assert load_features(toy(), tmp_path / "f").text.shape == (6, 6)


def test_the_encode_summary_survives_a_damaged_manifest_and_names_unused_profile_lines(tmp_path, capsys):
    """`recgoat encode`'s closing summary read manifests unchecked (m['rows']: a KeyError traceback after a
    run that succeeded), and did not say when profiles.jsonl held lines another prompt/model wrote."""
    from recgoat.features.cli import _summary

    (tmp_path / "text.json").write_text('{"kind": "text"}')
    (tmp_path / "image.json").write_text("[1, 2]")
    (tmp_path / "profile.json").write_text(json.dumps({
        "rows": 5, "dim": 6, "encoder": "fake", "profile_backend": "openai", "llm_model": "m",
        "profiles": {"cache_records_not_used": 3}, "profiles_file": "profiles.jsonl"}))
    _summary(tmp_path, ("text", "image", "users"))
    out = capsys.readouterr().out
    assert "text: None x None (None)" in out and "image: " in out and "is not a manifest" in out
    assert "3 lines of profiles.jsonl (another prompt, model or server) not used" in out
