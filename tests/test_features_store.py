"""The feature store: encode_all end to end with the real models, reuse, resume after an injected
failure (also with another chunk_size), NaN refused when writing, validation in load_features, the image
cache key (files and weights), MMRec interop, URL images, file permissions, and the CLI."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import importlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from features_helpers import Reply, NanNet, ScriptedServer, TinyNet, chat_reply, mini_dataset  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import (FeatureConfig, encode_all, export_mmrec, import_mmrec,  # noqa: E402
                              load_features)
from recgoat.datasets import load  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.store import FeatureError, NothingToEncode, save_array  # noqa: E402
from recgoat.io import write_json  # noqa: E402

CALLS = {"n": 0, "fail_at": None}


class CountingNet(TinyNet):
    """The tiny plug-in image model, counting its batches; it can fail on one (an injected crash)."""

    def forward(self, x):
        CALLS["n"] += 1
        if CALLS["fail_at"] is not None and CALLS["n"] >= CALLS["fail_at"]:
            raise RuntimeError("injected crash")
        return super().forward(x)


def make_counting() -> nn.Module:
    return CountingNet()


TINY = "test_features_store:make_counting"


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    ds = mini_dataset()
    out = tmp_path_factory.mktemp("feat")
    encode_all(ds, out, FeatureConfig(max_chars=400, image_batch_size=5), progress=False)
    return ds, out


def test_encode_all_with_real_models(encoded):
    ds, out = encoded
    for name in ("text.npy", "text.json", "image.npy", "image.json", "image_mask.npy", "profile.npy",
                 "profile.json", "profiles.jsonl"):
        assert (out / name).exists(), name
    assert not (out / ".partial").exists()
    f = load_features(ds, out)
    assert f.text.shape == (ds.n_items, 384) and f.image.shape == (ds.n_items, 1280)
    assert f.profile.shape == (ds.n_users, 384) and f.image_mask.all()
    for m in f.manifests.values():
        assert m["dataset_fingerprint"] == ds.fingerprint() and m["created"] and m["encoder"]
    assert "all-MiniLM-L6-v2" in f.manifests["text"]["encoder"]
    assert f.manifests["text"]["text_template"].startswith("field: value lines over title")
    assert "efficientnet-lite0" in f.manifests["image"]["encoder"]
    assert f.manifests["image"]["images"] == {"ok": ds.n_items, "missing": 0, "unreadable": 0, "download_failed": 0}
    assert f.manifests["profile"]["template_made"] is True and f.manifests["profile"]["history_split"] == "train"


def test_reuse_when_nothing_changed(encoded, monkeypatch, tmp_path):
    ds, out = encoded
    import recgoat.features.image as image_mod
    import recgoat.features.text as text_mod

    def boom(*a, **k):
        raise AssertionError("recomputed although up to date")

    monkeypatch.setattr(text_mod.TextEncoder, "__init__", boom)
    monkeypatch.setattr(image_mod.ImageEncoder, "__init__", boom)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    encode_all(ds, out, FeatureConfig(max_chars=400), progress=False)
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    with pytest.raises(AssertionError, match="recomputed"):  # a new template is a change
        encode_all(ds, out, FeatureConfig(max_chars=400, text_template="{title}"), which=("text",), progress=False)


def test_load_features_validation(encoded, tmp_path):
    ds, out = encoded
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    text = np.load(bad / "text.npy")
    np.save(bad / "text.npy", text[:-1])
    with pytest.raises(DataError, match=rf"text.npy: shape .*expected {ds.n_items} rows"):
        load_features(ds, bad)
    text[2, 5] = np.nan
    np.save(bad / "text.npy", text)
    with pytest.raises(DataError, match="1 row holds NaN or inf"):
        load_features(ds, bad)
    shutil.copy(out / "text.npy", bad / "text.npy")
    other = mini_dataset(n_users=5)
    with pytest.raises(DataError, match="fingerprint"):
        load_features(other, bad)
    (bad / "image_mask.npy").unlink()
    with pytest.raises(DataError, match="image mask missing"):
        load_features(ds, bad)
    (bad / "profile.json").unlink()
    with pytest.raises(DataError, match="manifest missing"):
        load_features(ds, bad)
    with pytest.raises(DataError, match="no feature files"):
        load_features(ds, tmp_path)


def test_mmrec_export_import_roundtrip(encoded, tmp_path):
    ds, out = encoded
    written = export_mmrec(out, tmp_path / "mm")
    # the mapping records which item each row is, so the import below puts every row back on its item
    assert sorted(p.name for p in written) == ["i_id_mapping.csv", "image_feat.npy", "text_feat.npy"]
    img = np.load(tmp_path / "mm" / "image_feat.npy")
    img[1] = 0  # MMRec marks no image as a zero row
    np.save(tmp_path / "mm" / "image_feat.npy", img)
    import_mmrec(ds, tmp_path / "mm", tmp_path / "imported")
    f = load_features(ds, tmp_path / "imported")
    np.testing.assert_array_equal(f.text, np.load(out / "text.npy"))
    assert f.image_mask.tolist() == [i != 1 for i in range(ds.n_items)]
    assert "MMRec" in f.manifests["text"]["encoder"]
    np.save(tmp_path / "mm" / "text_feat.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match="expected 10 rows"):
        import_mmrec(ds, tmp_path / "mm", tmp_path / "imported2")


def test_image_resume_after_injected_failure(tmp_path):
    ds = mini_dataset()
    cfg = FeatureConfig(image_model=TINY, image_batch_size=2, chunk_size=4)
    CALLS.update(n=0, fail_at=4)  # model: dim probe (1) + chunk 0 (2 batches) ok; crash in chunk 1
    with pytest.raises(RuntimeError, match="injected crash"):
        encode_all(ds, tmp_path, cfg, which=("image",), progress=False)
    assert not (tmp_path / "image.npy").exists()
    assert len(list((tmp_path / ".partial").glob("*/00000.json"))) == 1
    CALLS.update(n=0, fail_at=None)
    encode_all(ds, tmp_path, cfg, which=("image",), progress=False)
    assert CALLS["n"] == 1 + 3  # dim probe + chunks 1 and 2 only (4 + 2 items in batches of 2: 2 + 1)
    f = load_features(ds, tmp_path)
    CALLS.update(n=0)
    fresh = tmp_path / "fresh"
    encode_all(ds, fresh, cfg, which=("image",), progress=False)
    np.testing.assert_allclose(load_features(ds, fresh).image, f.image, atol=1e-6)
    assert not (tmp_path / ".partial").exists()


def test_resume_with_another_chunk_size_recomputes(tmp_path):
    """Interrupted at chunk_size=2, resumed at chunk_size=4: saved chunks of other bounds are recomputed,
    not stitched (that gave 8 rows for 10 items)."""
    ds = mini_dataset()
    CALLS.update(n=0, fail_at=5)  # dim probe + chunks [0,2) [2,4) [4,6) saved; crash in [6,8)
    with pytest.raises(RuntimeError, match="injected crash"):
        encode_all(ds, tmp_path, FeatureConfig(image_model=TINY, image_batch_size=2, chunk_size=2),
                   which=("image",), progress=False)
    assert len(list((tmp_path / ".partial").glob("*/0000?.json"))) == 3
    CALLS.update(n=0, fail_at=None)
    cfg4 = FeatureConfig(image_model=TINY, image_batch_size=2, chunk_size=4)
    encode_all(ds, tmp_path, cfg4, which=("image",), progress=False)
    assert CALLS["n"] == 1 + 5  # no saved chunk has the bounds [0,4) [4,8) [8,10): all 5 batches again
    f = load_features(ds, tmp_path)
    assert f.image.shape == (ds.n_items, 4) and f.image_mask.all()
    encode_all(ds, tmp_path / "fresh", cfg4, which=("image",), progress=False)
    np.testing.assert_allclose(f.image, load_features(ds, tmp_path / "fresh").image, atol=1e-6)


def test_force_discards_the_checkpoints_of_an_interrupted_run(tmp_path):
    """--force is the way out when something outside the cache key changed: chunks saved under the same
    key are re-encoded, not resumed (without --force they are resumed: the test above)."""
    ds = mini_dataset()
    cfg = FeatureConfig(image_model=TINY, image_batch_size=2, chunk_size=4)
    CALLS.update(n=0, fail_at=4)  # chunk 0 saved, crash in chunk 1
    with pytest.raises(RuntimeError, match="injected crash"):
        encode_all(ds, tmp_path, cfg, which=("image",), progress=False)
    assert len(list((tmp_path / ".partial").glob("*/00000.json"))) == 1
    CALLS.update(n=0, fail_at=None)
    encode_all(ds, tmp_path, cfg, which=("image",), progress=False, force=True)
    assert CALLS["n"] == 1 + 5  # dim probe + every batch of the 3 chunks (2 + 2 + 1)
    assert not (tmp_path / ".partial").exists()


def test_finishing_a_kind_drops_its_checkpoints_under_other_keys(tmp_path):
    """An interrupted run under settings since changed left checkpoints no key will ask for again: the
    next successful encoding of that kind removes them (and leaves other kinds' checkpoints alone)."""
    ds = mini_dataset()
    CALLS.update(n=0, fail_at=4)
    with pytest.raises(RuntimeError, match="injected crash"):
        encode_all(ds, tmp_path, FeatureConfig(image_model=TINY, image_batch_size=2, chunk_size=4),
                   which=("image",), progress=False)
    stale = next((tmp_path / ".partial").glob("image-*"))
    other_kind = tmp_path / ".partial" / "text-0123456789abcdef0123"
    other_kind.mkdir()
    CALLS.update(n=0, fail_at=None)
    other_weights = TinyNet()
    with torch.no_grad():
        other_weights.conv.weight.mul_(2.0)  # another model: another key
    encode_all(ds, tmp_path, FeatureConfig(image_model=other_weights, image_batch_size=2, chunk_size=4),
               which=("image",), progress=False)
    assert (tmp_path / "image.npy").exists()
    assert not stale.exists()
    assert other_kind.exists()


def test_nan_features_refused_when_writing(tmp_path):
    ds = mini_dataset()
    cfg = FeatureConfig(image_model=NanNet(nan_call=3), image_batch_size=2, chunk_size=2)  # call 3: rows 2-3
    with pytest.raises(FeatureError, match=rf"^image: the encoder .* produced NaN or inf features for 1 of the 2 "
                                           rf"items in rows 2-3 \(first: row 2 \(item {ds.item_ids[2]}\)\)"):
        encode_all(ds, tmp_path, cfg, which=("image",), progress=False)
    assert not (tmp_path / "image.npy").exists()
    assert [p.name for p in (tmp_path / ".partial").glob("*/*.json")] == ["00000.json"]  # the good chunk kept
    fixed = NanNet(nan_call=None)  # same weights: same key, so the good chunk is reused
    encode_all(ds, tmp_path, FeatureConfig(image_model=fixed, image_batch_size=2, chunk_size=2), which=("image",),
               progress=False)
    assert fixed.calls == 1 + 4  # dim probe + the 4 chunks after the kept one
    assert np.isfinite(load_features(ds, tmp_path).image).all()


def test_image_problems_name_the_item(tmp_path, capsys):
    ds = mini_dataset()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds.items.loc[1, "image"] = None
    ds.items.loc[4, "image"] = str(tmp_path / "absent.jpg")
    ds.items.loc[6, "image"] = str(corrupt)
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TINY), which=("image",), progress=False)
    man = load_features(ds, tmp_path / "f").manifests["image"]
    assert man["images"] == {"ok": ds.n_items - 3, "missing": 2, "unreadable": 1, "download_failed": 0}
    ex = man["problem_examples"]
    assert ex["missing"] == [f"item {ds.item_ids[1]}: no image path or URL in the item metadata",
                             f"item {ds.item_ids[4]}: {tmp_path / 'absent.jpg'}: file not found"]
    assert ex["unreadable"][0].startswith(f"item {ds.item_ids[6]}: {corrupt}: ")  # then the decoder's complaint
    # said even without progress output (`recgoat benchmark -q` hid it), with an example of each kind
    err = " ".join(capsys.readouterr().err.split())
    assert "3 without one (zero rows, mask False)" in err
    assert f"e.g. item {ds.item_ids[1]}: no image path" in err and f"; item {ds.item_ids[6]}: {corrupt}: " in err


def test_image_key_follows_image_files_and_model_weights(tmp_path):
    ds = mini_dataset()
    posters = tmp_path / "posters"
    posters.mkdir()
    for k, src in enumerate(ds.items["image"]):
        shutil.copyfile(src, posters / f"{k}.jpg")
    ds.items["image"] = [str(posters / f"{k}.jpg") for k in range(ds.n_items)]
    net = CountingNet()
    cfg = FeatureConfig(image_model=net)
    CALLS.update(n=0, fail_at=None)
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    first = np.load(tmp_path / "f" / "image.npy")
    assert "weights sha256:" in load_features(ds, tmp_path / "f").manifests["image"]["image_model"]
    CALLS.update(n=0)
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    assert CALLS["n"] == 0  # nothing changed: reused
    shutil.copyfile(posters / "0.jpg", posters / "3.jpg")  # a replaced poster, same path
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    second = np.load(tmp_path / "f" / "image.npy")
    assert CALLS["n"] > 0
    np.testing.assert_allclose(second[3], first[0], atol=1e-6)
    assert not np.allclose(second[3], first[3])
    with torch.no_grad():
        net.conv.weight.mul_(2.0)  # new weights, same module and class name
    CALLS.update(n=0)
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    assert CALLS["n"] > 0 and not np.allclose(np.load(tmp_path / "f" / "image.npy"), second)
    third = np.load(tmp_path / "f" / "image.npy")
    net.image_size = 48  # the same weights reading larger crops: other features
    CALLS.update(n=0)
    encode_all(ds, tmp_path / "f", cfg, which=("image",), progress=False)
    assert CALLS["n"] > 0 and not np.allclose(np.load(tmp_path / "f" / "image.npy"), third)


PLUGIN = """
from features_helpers import TinyNet


class Net(TinyNet):
    def forward(self, x):
        return self.conv(x).{pool}(dim=(2, 3))


def make():
    return Net()
"""


def test_image_key_follows_a_plugin_models_code(tmp_path, monkeypatch):
    """A plug-in module edited in place (its forward pools by mean instead of max): same name, same
    weights, other features; the cache key followed the weights only and kept the old matrix."""
    ds = mini_dataset()
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = FeatureConfig(image_model="recgoat_test_plugin:make")
    out = tmp_path / "f"
    (tmp_path / "recgoat_test_plugin.py").write_text(PLUGIN.format(pool="amax"))
    encode_all(ds, out, cfg, which=("image",), progress=False)
    before = np.load(out / "image.npy")
    (tmp_path / "recgoat_test_plugin.py").write_text(PLUGIN.format(pool="mean"))
    monkeypatch.delitem(sys.modules, "recgoat_test_plugin")  # a new process would read the edited file
    importlib.invalidate_caches()
    encode_all(ds, out, cfg, which=("image",), progress=False)
    assert not np.allclose(np.load(out / "image.npy"), before)
    sys.modules.pop("recgoat_test_plugin", None)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_usual_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        save_array(tmp_path / "a.npy", np.zeros(3, np.float32))
        (tmp_path / "plain.txt").write_text("written the ordinary way")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == want
    for name in ("a.json", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_url_images_and_dataset_without_images(tmp_path, capsys):
    ds = mini_dataset()
    posters = ds.items["image"].tolist()
    gone = {2}

    def handler(method, path, body):
        k = int(path.strip("/").split(".")[0])
        if k in gone:
            return Reply(404, b"gone")
        return Reply(200, open(posters[k], "rb").read(), content_type="image/jpeg")

    srv = ScriptedServer(handler)
    try:
        ds.items["image"] = [f"{srv.url}/{k}.jpg" for k in range(ds.n_items)]
        ds.items.loc[5, "image"] = None
        encode_all(ds, tmp_path, FeatureConfig(image_model=TINY, download_retries=0), which=("image",),
                   progress=False)
        f = load_features(ds, tmp_path)
        assert f.image_mask.tolist() == [k not in (2, 5) for k in range(ds.n_items)]
        assert (f.image[[2, 5]] == 0).all()
        images = f.manifests["image"]["images"]
        assert images == {"ok": ds.n_items - 2, "missing": 1, "unreadable": 0, "download_failed": 1}
        failed = f.manifests["image"]["problem_examples"]["download_failed"]
        assert failed == [f"item {ds.item_ids[2]}: {srv.url}/2.jpg: download failed: HTTP 404"]
        assert len(list((tmp_path / "image_cache").iterdir())) == ds.n_items - 2
        # an up-to-date matrix does not retry by itself (offline, every run would wait again), but says how
        capsys.readouterr()
        encode_all(ds, tmp_path, FeatureConfig(image_model=TINY, download_retries=0), which=("image",))
        said = " ".join(capsys.readouterr().err.split())  # rich wraps lines at the terminal's width
        assert "; 1 image download had failed: --force retries them" in said
        gone.clear()
        encode_all(ds, tmp_path, FeatureConfig(image_model=TINY, download_retries=0), which=("image",),
                   progress=False, force=True)
        assert load_features(ds, tmp_path).image_mask.tolist() == [k != 5 for k in range(ds.n_items)]
    finally:
        srv.close()
    no_img = mini_dataset()
    no_img.items = no_img.items.drop(columns=["image"])
    with pytest.raises(NothingToEncode, match="has no item images"):  # asked for alone: `encode image`'s error
        encode_all(no_img, tmp_path / "none", FeatureConfig(), which=("image",), progress=False)
    assert not (tmp_path / "none").exists()


def test_cli_users_and_error(tmp_path):
    ds = mini_dataset(n_users=3)
    ds.save(tmp_path / "ds")
    runner = CliRunner()
    res = runner.invoke(app, ["users", str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "users: 3 x 384" in res.output and "TEMPLATE-MADE (no LLM)" in res.output
    assert np.load(tmp_path / "f" / "profile.npy").shape == (3, 384)
    res = runner.invoke(app, ["text", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.output.strip().startswith("error: ") and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["image", str(tmp_path / "ds"), "--out", str(tmp_path / "f"),
                              "--image-model", "resnet50", "--no-progress"])
    assert res.exit_code == 1 and "package.module:factory" in res.output


def test_cli_encode_all_and_mmrec_commands(tmp_path):
    ds = mini_dataset(n_users=3)
    ds.save(tmp_path / "ds")
    runner = CliRunner()
    CALLS.update(n=0, fail_at=None)
    res = runner.invoke(app, ["all", str(tmp_path / "ds"), "--out", str(tmp_path / "f"), "--image-model", TINY,
                              "--max-chars", "300", "--mmrec", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = res.stdout.strip().splitlines()  # stderr has the model-loading bars
    assert len(out) == 4 and out[-4].startswith("text: 10 x 384 (sentence-transformers/all-MiniLM-L6-v2")
    assert out[-3].startswith("image: 10 x 4 (" + TINY) and "'ok': 10" in out[-3]
    assert out[-2].startswith("users: 3 x 384") and out[-2].endswith("profiles TEMPLATE-MADE (no LLM)")
    assert out[-1] == f"features in {tmp_path / 'f'}"
    reloaded = load(str(tmp_path / "ds"))
    f = load_features(reloaded, tmp_path / "f")
    assert f.manifests["text"]["max_chars"] == 300
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "text_feat.npy"), f.text)  # --mmrec
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "image_feat.npy"), f.image)

    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "mm")])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == (f"wrote {tmp_path / 'mm' / 'text_feat.npy'}, {tmp_path / 'mm' / 'image_feat.npy'}, "
                                  f"{tmp_path / 'mm' / 'i_id_mapping.csv'}")
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "ds"),
                              "--out", str(tmp_path / "imp")])
    assert res.exit_code == 0, res.output
    g = load_features(reloaded, tmp_path / "imp")
    np.testing.assert_array_equal(g.text, f.text)
    np.testing.assert_array_equal(g.image, f.image)
    assert g.profile is None and "MMRec" in g.manifests["image"]["encoder"]

    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "empty"), str(tmp_path / "ds")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"error: {tmp_path / 'empty'}: no text_feat.npy or image_feat.npy")
    np.save(tmp_path / "mm" / "text_feat.npy", np.zeros((4, 8), np.float32))
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "ds"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "text_feat.npy: shape (4, 8), expected 10 rows" in res.output
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "empty")])  # nothing to export is an error
    assert res.exit_code == 1 and "holds no text.npy" in res.output


@pytest.mark.slow
def test_killed_cli_resumes_without_repeating_llm_calls(tmp_path):
    """Kill `recgoat encode users` (openai backend) halfway; the re-run asks only for the rest."""
    ds = mini_dataset()
    ds.save(tmp_path / "ds")
    seen = []

    def handler(method, path, body):
        seen.append(json.loads(body)["messages"][-1]["content"])
        return Reply(**{**chat_reply(f"<answer>profile {len(seen)}</answer>").__dict__, "delay": 0.4})

    srv = ScriptedServer(handler)
    cmd = [sys.executable, "-m", "recgoat.features.cli", "users", str(tmp_path / "ds"), "--out",
           str(tmp_path / "f"), "--backend", "openai", "--llm-base-url", srv.url + "/v1", "--llm-model", "m",
           "--llm-concurrency", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while len(seen) < 4 and time.time() < deadline:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        assert (tmp_path / "f" / "profiles.jsonl").exists(), (len(seen), proc.stdout.read().decode()[-2000:])
        lines = (tmp_path / "f" / "profiles.jsonl").read_text().splitlines()
        done = len(lines)
        assert 3 <= done < ds.n_users and not (tmp_path / "f" / "profile.npy").exists()
        before = len(seen)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(seen) - before == ds.n_users - done  # only the missing profiles were requested
        assert np.load(tmp_path / "f" / "profile.npy").shape == (ds.n_users, 384)
    finally:
        srv.close()


def test_encode_summary_counts_items_without_text(tmp_path, capsys):
    """Items with no text all get the empty string's embedding (so they neighbour each other): the
    command's summary says how many, not only the manifest."""
    from recgoat.features.cli import _summary

    (tmp_path / "text.json").write_text(json.dumps({"rows": 24, "dim": 384, "encoder": "minilm", "empty_texts": 2}))
    _summary(tmp_path, ("text",))
    assert capsys.readouterr().out.splitlines()[0] == "text: 24 x 384 (minilm); 2 items with no text"
    (tmp_path / "text.json").write_text(json.dumps({"rows": 24, "dim": 384, "encoder": "minilm", "empty_texts": 0}))
    _summary(tmp_path, ("text",))
    assert capsys.readouterr().out.splitlines()[0] == "text: 24 x 384 (minilm)"
