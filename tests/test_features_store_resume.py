"""Feature-store caches and resumed encodes (text and profile caches, interrupted runs); MMRec export checks.

Feature-store QA pass 2, with a fake text encoder (a digest of each text, no model loaded): the text and
profile caches follow each input and nothing else; a run interrupted at any chunk resumes to the result of an
uninterrupted one (an image encode interrupted inside a chunk keeps the rows it finished);
profiles regenerated after an interruption are not stitched to checkpoints of the old answers; the MMRec export refuses a matrix left from another dataset or without its manifest, and its rows
follow the item index through an MMRec round trip; load_features refuses matrices of the wrong kind and
turns other float dtypes and layouts into float32."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from PIL import Image  # noqa: E402

from features_helpers import TinyNet, toy_dataset  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, export_mmrec, import_mmrec, load_features  # noqa: E402
from recgoat.features import store  # noqa: E402
import recgoat.features.text as text_mod  # noqa: E402
from recgoat.features.image import ImageEncoder  # noqa: E402

LOG: dict = {"texts": [], "calls": 0, "fail_at": None}


def fake_vec(t: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(t.encode()).digest()[:6], np.uint8).astype(np.float32) / 255


class FakeText:
    """Stands in for the sentence-transformers encoder: one digest row per text; its ``fail_at``-th encode
    call raises KeyboardInterrupt (a kill in the middle of chunk fail_at - 1)."""

    def __init__(self, model=None, device="cpu", batch_size=64):
        self.name, self.dim = f"fake {model}", 6

    def encode(self, texts, on_progress=None):
        LOG["calls"] += 1
        if LOG["fail_at"] is not None and LOG["calls"] >= LOG["fail_at"]:
            raise KeyboardInterrupt
        LOG["texts"] += list(texts)
        return np.stack([fake_vec(t) for t in texts]) if texts else np.zeros((0, 6), np.float32)


@pytest.fixture(autouse=True)
def fake_text(monkeypatch):
    monkeypatch.setattr(text_mod, "TextEncoder", FakeText)
    LOG.update(texts=[], calls=0, fail_at=None)


def toy(titles=None, ids=None):
    titles = titles or [f"item number {i}" for i in range(6)]
    ids = ids or [f"i{i}" for i in range(len(titles))]
    items = pd.DataFrame({"item_id": ids, "title": titles})
    return toy_dataset(items, [[0, 1, 2], [3, 4, 5], [1, 3, 5], [0, 2], [4]], held_out=[5, 0, 2, 1, 3])


def run(ds, out, which=("text",), **cfg):
    LOG.update(texts=[], calls=0)
    encode_all(ds, out, FeatureConfig(**cfg), which=which, progress=False)
    return list(LOG["texts"])


# ---------------------------------------------------------------------------------------------- cache keys
def test_text_cache_follows_each_input_and_nothing_else(tmp_path):
    ds, out = toy(), tmp_path / "f"
    assert len(run(ds, out, max_chars=50)) == 6
    # batching and checkpoint size do not change the features: reused
    assert run(ds, out, max_chars=50, text_batch_size=2, chunk_size=3) == []
    titles = [f"item number {i}" for i in range(6)]
    titles[3] = "another title"
    changed = toy(titles)
    assert len(run(changed, out, max_chars=50)) == 6  # one item's text
    assert np.allclose(load_features(changed, out).text[3], fake_vec("title: another title"))
    assert len(run(changed, out, max_chars=16)) == 6  # max_chars
    assert len(run(changed, out, max_chars=16, text_template="{title}!")) == 6  # template
    assert load_features(changed, out).manifests["text"]["text_template"] == "{title}!"
    assert len(run(changed, out, max_chars=16, text_template="{title}!", text_model="other-model")) == 6
    assert load_features(changed, out).manifests["text"]["encoder"] == "fake other-model"
    assert run(changed, out, max_chars=16, text_template="{title}!", text_model="other-model") == []


def test_profile_cache_follows_the_backend_settings_and_the_data(tmp_path):
    ds, out = toy(), tmp_path / "f"
    assert len(run(ds, out, which=("users",))) == ds.n_users
    assert run(ds, out, which=("users",)) == []
    assert len(run(ds, out, which=("users",), profile_char_budget=40)) == ds.n_users
    ds2 = toy()
    ds2.interactions.loc[0, "timestamp"] = 5  # another training order: other histories, other profiles
    assert len(run(ds2, out, which=("users",), profile_char_budget=40)) == ds.n_users
    with pytest.raises(DataError, match="profile.json: made for dataset fingerprint"):
        load_features(ds, out)


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_kill_at_any_chunk_resumes_to_the_uninterrupted_result(tmp_path, fail_at):
    ds, out = toy(), tmp_path / "f"
    LOG.update(fail_at=fail_at)
    with pytest.raises(KeyboardInterrupt):
        encode_all(ds, out, FeatureConfig(chunk_size=2), which=("text",), progress=False)
    assert not (out / "text.npy").exists() and not (out / "text.json").exists()
    LOG.update(fail_at=None)
    again = run(ds, out, chunk_size=2)
    assert len(again) == 6 - 2 * (fail_at - 1)  # only the chunks not done before the kill
    run(ds, tmp_path / "fresh", chunk_size=2)
    np.testing.assert_array_equal(load_features(ds, out).text, load_features(ds, tmp_path / "fresh").text)
    assert not (out / ".partial").exists()


def test_kill_between_a_chunks_arrays_and_its_marker_recomputes_that_chunk(tmp_path, monkeypatch):
    ds, out = toy(), tmp_path / "f"
    real = store.write_json

    def killed_at_second_marker(path, obj):
        if path.name == "00001.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(store, "write_json", killed_at_second_marker)
    with pytest.raises(KeyboardInterrupt):
        run(ds, out, chunk_size=2)
    monkeypatch.setattr(store, "write_json", real)
    part = next((out / ".partial").iterdir())
    assert (part / "00001.x.npy").exists() and not (part / "00001.json").exists()
    np.save(part / "00001.x.npy", np.full((2, 6), 7, np.float32))  # whatever it holds is not trusted
    assert len(run(ds, out, chunk_size=2)) == 4  # chunks 1 and 2
    np.testing.assert_array_equal(load_features(ds, out).text[2], fake_vec(ds.items.loc[2].pipe(
        lambda r: f"title: {r['title']}")))


def pictures(tmp_path, n: int, without: set[int]):
    """A toy dataset of ``n`` items, each with its own coloured PNG but those in ``without`` (no image path)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        Image.new("RGB", (40, 50), (20 * i, 255 - 20 * i, 90)).save(tmp_path / "img" / f"{i}.png")
        paths.append(None if i in without else str(tmp_path / "img" / f"{i}.png"))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": [f"t{i}" for i in range(n)],
                          "image": paths})
    return toy_dataset(items, [[0, 1], [2, 3]])


@pytest.mark.parametrize("without, kills, encoded", [
    # batches of 2: [0,1] [2,4] (the gap windows' images packed) [6,7] [8,9] [10,11]; killed in the 3rd batch, rows
    # 0-5 are kept; the resumed run killed in its 2nd keeps rows 6-7 too; the last run encodes only 8-11
    ({3, 5}, [3, 2], [[0, 1, 2, 4], [6, 7], [8, 9, 10, 11]]),
    # [0,1] [4,5] ... [2] (image 2 waits for a batch partner until the chunk's end): killed in the 2nd batch, only
    # rows 0-1 are final
    ({3}, [2], [[0, 1], [2, 4, 5, 6, 7, 8, 9, 10, 11]]),
    # killed in the first batch: nothing kept
    (set(), [1], [[], list(range(12))]),
])
def test_an_image_encode_killed_inside_a_chunk_keeps_the_rows_it_finished(tmp_path, monkeypatch, without, kills,
                                                                           encoded):
    """Ctrl-C during an image chunk (512 rows by default) lost every row of it; the rows finished (whole batch
    windows) are checkpointed as the chunk's head, and the resumed run encodes only the rest, to the very matrix
    an uninterrupted run makes."""
    ds = pictures(tmp_path, 12, without)
    cfg = dict(image_model=TinyNet(), image_batch_size=2, chunk_size=12)
    real, real_encode = ImageEncoder._encode_batch, ImageEncoder.encode
    runs: list[list[int]] = []
    kill = {"at": None, "first": 0}

    def counted(self, good, feats, mask, nchw):
        if len(runs[-1]) // 2 + 1 == kill["at"]:
            raise KeyboardInterrupt
        real(self, good, feats, mask, nchw)
        runs[-1] += [kill["first"] + i for i, _ in good]

    def encode(self, paths, on_progress=None):  # one chunk: the rows resumed from are the last len(paths)
        kill["first"] = 12 - len(paths)
        return real_encode(self, paths, on_progress)

    monkeypatch.setattr(ImageEncoder, "_encode_batch", counted)
    monkeypatch.setattr(ImageEncoder, "encode", encode)
    out = tmp_path / "f"
    for at in [*kills, None]:
        runs.append([])
        kill["at"] = at
        if at is None:
            encode_all(ds, out, FeatureConfig(**cfg), which="image", progress=False)
        else:
            with pytest.raises(KeyboardInterrupt):
                encode_all(ds, out, FeatureConfig(**cfg), which="image", progress=False)
            assert not (out / "image.npy").exists()
    assert [sorted(rows) for rows in runs] == encoded  # the killed runs: the rows of their finished batches
    assert not (out / ".partial").exists()
    kill["at"] = None
    encode_all(ds, tmp_path / "fresh", FeatureConfig(**cfg), which="image", progress=False)
    got, fresh = load_features(ds, out), load_features(ds, tmp_path / "fresh")
    np.testing.assert_array_equal(got.image, fresh.image)
    assert got.image_mask.tolist() == [i not in without for i in range(12)] == fresh.image_mask.tolist()
    assert got.manifests["image"]["images"] == fresh.manifests["image"]["images"]
    assert got.manifests["image"]["problem_examples"] == fresh.manifests["image"]["problem_examples"]


def test_regenerated_profiles_are_not_stitched_to_checkpoints_of_the_old_answers(tmp_path):
    """Profiles are embedded from profiles.jsonl, which the cache key does not see: a run killed while
    embedding, then resumed after the cached answers changed (profiles.jsonl deleted to ask the LLM again,
    or edited), kept the checkpointed rows of the old answers beside rows of the new ones."""
    ds, out = toy(), tmp_path / "f"
    LOG.update(fail_at=2)  # chunk 0 (users 0-1) embedded and saved, killed in chunk 1
    with pytest.raises(KeyboardInterrupt):
        encode_all(ds, out, FeatureConfig(chunk_size=2), which=("users",), progress=False)
    LOG.update(fail_at=None)
    recs = [json.loads(line) for line in (out / "profiles.jsonl").read_text().splitlines()]
    for r in recs:
        r["answer"] = "NEW " + r["answer"]
    (out / "profiles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    run(ds, out, which=("users",), chunk_size=2)
    answers = {r["user"]: r["answer"] for r in recs}
    want = np.stack([fake_vec(answers[u]) for u in ds.user_ids])
    np.testing.assert_array_equal(load_features(ds, out).profile, want)


# ---------------------------------------------------------------------------------------------- MMRec export
def test_encode_with_mmrec_refuses_to_export_a_matrix_left_from_another_dataset(tmp_path):
    """`encode users --mmrec` on a folder holding text.npy of another dataset (or of this one before its
    data changed) wrote that stale matrix to text_feat.npy without a word."""
    out = tmp_path / "f"
    run(toy(), out)
    other = toy([f"other {i}" for i in range(6)])
    with pytest.raises(DataError, match=r"text.json: made for dataset fingerprint .*not exported: "
                                        r"re-run `recgoat encode text`"):
        encode_all(other, out, FeatureConfig(export_mmrec=True), which=("users",), progress=False)
    assert not (out / "text_feat.npy").exists()
    encode_all(other, out, FeatureConfig(export_mmrec=True), which=("text", "users"), progress=False)
    np.testing.assert_array_equal(np.load(out / "text_feat.npy"), load_features(other, out).text)


def test_export_refuses_a_matrix_without_its_manifest(tmp_path):
    """A matrix whose manifest is gone (write_matrix drops it first: a replacement cut short) is refused
    by load_features; the export handed it on to MMRec."""
    ds, out = toy(), tmp_path / "f"
    run(ds, out)
    (out / "text.json").unlink()
    with pytest.raises(DataError, match=r"text.json: manifest missing for text.npy"):
        export_mmrec(out, tmp_path / "mm")
    assert not (tmp_path / "mm" / "text_feat.npy").exists()


def test_mmrec_rows_follow_the_item_index_through_a_round_trip(tmp_path):
    """Item ids not in sorted order: text_feat.npy row k is item k of the dataset, and an MMRec folder
    written by save_mmrec, read back and imported gives every item id its own text's features."""
    from recgoat.datasets.mmrec import load_mmrec, save_mmrec

    titles = [f"film {c}" for c in "qwerty"]
    ds = toy(titles, ids=["z9", "a1", "m5", "b2", "y8", "c3"])
    out = tmp_path / "f"
    run(ds, out)
    save_mmrec(ds, tmp_path / "mm")
    export_mmrec(out, tmp_path / "mm")
    back = load_mmrec(tmp_path / "mm", name="toy")
    f = load_features(back, import_mmrec(back, tmp_path / "mm", tmp_path / "imp"))
    by_id = dict(zip(ds.item_ids, titles))
    want = np.stack([fake_vec(f"title: {by_id[i]}") for i in back.item_ids])
    np.testing.assert_array_equal(f.text, want)


# ---------------------------------------------------------------------------------------------- load_features
def test_load_features_refuses_a_matrix_of_another_kind_in_its_place(tmp_path):
    """text.npy and text.json copied over image.npy and image.json: same dataset, rows and a manifest
    that matches its array, but not image features."""
    ds = toy()
    ds.items["image"] = None
    out = tmp_path / "f"
    run(ds, out)
    shutil.copy(out / "text.npy", out / "image.npy")
    shutil.copy(out / "text.json", out / "image.json")
    np.save(out / "image_mask.npy", np.ones(ds.n_items, bool))
    with pytest.raises(DataError, match=r"image.json: is the manifest of text features \(text.npy\), not of image.npy"):
        load_features(ds, out)


@pytest.mark.parametrize("how", ["float64", "float16", "fortran"])
def test_load_features_reads_other_float_layouts_as_float32(tmp_path, how):
    ds, out = toy(), tmp_path / "f"
    run(ds, out)
    x = np.load(out / "text.npy")
    y = {"float64": x.astype(np.float64), "float16": x.astype(np.float16), "fortran": np.asfortranarray(x)}[how]
    np.save(out / "text.npy", y)
    man = json.loads((out / "text.json").read_text())
    (out / "text.json").write_text(json.dumps(man))
    got = load_features(ds, out).text
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, x, atol=1e-3 if how == "float16" else 0)


def test_load_features_names_the_file_for_an_overflowing_float64_and_an_integer_matrix(tmp_path):
    ds, out = toy(), tmp_path / "f"
    run(ds, out)
    x = np.load(out / "text.npy").astype(np.float64)
    x[4, 0] = 1e300  # finite in float64, inf in float32
    np.save(out / "text.npy", x)
    with pytest.raises(DataError, match=r"text.npy: 1 row holds NaN or inf \(first: row 4, item_id \'i4\'\)"):
        load_features(ds, out)
    np.save(out / "text.npy", np.ones(x.shape, np.int64))
    with pytest.raises(DataError, match=r"text.npy: dtype int64 is not floating point"):
        load_features(ds, out)
