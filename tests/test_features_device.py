"""Device checks of the feature stage: one check (recgoat.features.device) behind the store's settings, the
text encoder and the image encoder, each refusing a device torch cannot use with a ConfigError before any
model is loaded. The image encoder did not check at all: torch failed inside ``.to(device)`` with a bare
RuntimeError ("nonsense"), or, for ``meta``, only when the first batch was copied back."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from features_helpers import TinyNet, toy_dataset  # noqa: E402
import recgoat.features.image as image_mod  # noqa: E402
import recgoat.features.store as store  # noqa: E402
import recgoat.features.text as text_mod  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features.device import check_device  # noqa: E402
from recgoat.features.image import ImageEncoder  # noqa: E402
from recgoat.features.store import FeatureConfig, encode_all  # noqa: E402

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
SEVEN_GPUS = pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")

# (device, the start of the ConfigError's message)
BAD = [
    pytest.param("nonsense", "device 'nonsense' is not a torch device to encode on", id="nonsense"),
    pytest.param("CPU", "device 'CPU' is not a torch device to encode on", id="CPU"),
    pytest.param("meta", "device 'meta' is not a torch device to encode on", id="meta"),
    pytest.param("cuda", "device 'cuda': no CUDA GPU is available to torch here; use --device cpu",
                 marks=NO_GPU, id="cuda"),
    pytest.param("cuda:7", "device 'cuda:7': ", marks=SEVEN_GPUS, id="cuda:7"),
]


class Loaded(AssertionError):
    """Raised by a stand-in for model loading: the device was not checked first."""


def no_loading(*args, **kwargs):
    raise Loaded("a model was loaded before the device was checked")


@pytest.mark.parametrize("device, message", BAD)
def test_check_device_refuses_what_torch_cannot_encode_on(device: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        check_device(device)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "cpu:0"])
def test_check_device_lets_the_cpu_pass(device) -> None:
    assert check_device(device) is None


def test_store_text_and_image_share_the_one_check() -> None:
    """The check lives in a module of its own: text.py no longer imports it from the store (which uses
    text.py), and the image encoder uses it too."""
    assert text_mod.check_device is check_device and image_mod.check_device is check_device
    assert store.check_device is check_device
    assert not hasattr(store, "_check_device")


def test_the_text_module_does_not_need_the_store() -> None:
    # the package __init__ imports the store: load text.py by path so only its own imports count
    code = ("import importlib.util, sys, recgoat; "
            "spec = importlib.util.spec_from_file_location('recgoat.features.text', "
            "recgoat.__path__[0] + '/features/text.py'); m = importlib.util.module_from_spec(spec); "
            "sys.modules['recgoat.features'] = type(sys)('recgoat.features'); "
            "sys.modules['recgoat.features'].__path__ = [recgoat.__path__[0] + '/features']; "
            "spec.loader.exec_module(m); "
            "assert 'recgoat.features.store' not in sys.modules, 'text.py imported the store'; "
            "assert m.check_device.__module__ == 'recgoat.features.device'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------------------------- image encoder
@pytest.mark.parametrize("device, message", BAD)
def test_image_encoder_refuses_a_bad_device_before_loading_its_model(monkeypatch, device: str,
                                                                     message: str) -> None:
    monkeypatch.setattr(image_mod, "load_image_backbone", no_loading)
    with pytest.raises(ConfigError, match="^" + message):
        ImageEncoder(None, device=device)
    with pytest.raises(ConfigError, match="^" + message):
        ImageEncoder("some.module:factory", device)


@pytest.mark.parametrize("device, message", BAD)
def test_image_encoder_with_a_plugin_module_refuses_a_bad_device(tmp_path, device: str, message: str) -> None:
    """A module given as is: "nonsense" was a bare RuntimeError from .to(), "meta" was taken and failed at the
    first batch ("Cannot copy out of meta tensor")."""
    with pytest.raises(ConfigError, match="^" + message):
        enc = ImageEncoder(TinyNet(), device=device)
        Image.new("RGB", (40, 50), (10, 200, 90)).save(tmp_path / "a.png")
        enc.encode([str(tmp_path / "a.png")])


def test_image_encoder_on_the_cpu_still_encodes(tmp_path) -> None:
    Image.new("RGB", (40, 50), (10, 200, 90)).save(tmp_path / "a.png")
    for device in ("cpu", torch.device("cpu"), None):
        x, mask, problems = ImageEncoder(TinyNet(), device=device).encode([str(tmp_path / "a.png"), None])
        assert x.shape == (2, 4) and mask.tolist() == [True, False] and problems.counts()["missing"] == 1
        assert np.isfinite(x).all() and np.abs(x[0]).sum() > 0


# ---------------------------------------------------------------------------------------------- text encoder
@pytest.mark.parametrize("device, message", BAD)
def test_text_encoder_refuses_a_bad_device_before_loading_its_model(monkeypatch, device: str,
                                                                    message: str) -> None:
    monkeypatch.setattr(text_mod, "resolve_text_model", no_loading)
    with pytest.raises(ConfigError, match="^" + message):
        text_mod.TextEncoder(device=device)


# ---------------------------------------------------------------------------------------------- the store
def toy(tmp_path):
    (tmp_path / "img").mkdir()
    paths = []
    for i in range(3):
        Image.new("RGB", (40, 50), (60 * i, 90, 90)).save(tmp_path / "img" / f"{i}.png")
        paths.append(str(tmp_path / "img" / f"{i}.png"))
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["one", "two", "three"], "image": paths})
    return toy_dataset(items, [[0, 1], [1, 2], [0, 2]])


@pytest.mark.parametrize("device, message", BAD)
def test_store_refuses_a_bad_device_before_any_model_loads(tmp_path, monkeypatch, device: str,
                                                           message: str) -> None:
    monkeypatch.setattr(image_mod, "load_image_backbone", no_loading)
    monkeypatch.setattr(text_mod, "TextEncoder", no_loading)
    with pytest.raises(ConfigError, match="^" + message):
        FeatureConfig(device=device).validate()
    ds = toy(tmp_path)
    for which in (("text",), ("image",), ("text", "image", "users")):
        with pytest.raises(ConfigError, match="^" + message):
            encode_all(ds, tmp_path / "f", FeatureConfig(device=device), which=which, progress=False)
    assert not (tmp_path / "f" / "text.npy").exists() and not (tmp_path / "f" / "image.npy").exists()


@pytest.mark.parametrize("device", ["cuda:7", "nonsense", "meta"])
def test_the_transformers_profile_backend_refuses_a_bad_device_before_loading(device, monkeypatch):
    """Direct use of the backend (the store checks its config's device first): it moved the model with
    ``.to(device)`` unchecked."""
    import transformers

    from recgoat.features.profiles import TransformersBackend

    def loaded(*a, **k):
        raise AssertionError("the model was loaded before the device was checked")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", loaded)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loaded)
    with pytest.raises(ConfigError, match="device"):
        TransformersBackend("some/model", device=device)
