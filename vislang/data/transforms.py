"""Image transforms without torchvision: resize, crop, augment, tensor conversion, normalisation.

Geometric and colour transforms act on PIL images; :class:`ToTensor` and :class:`Normalize` produce the
``(3, H, W)`` float tensors the models take. Randomness comes from torch's default RNG, or inside
``with seeded(seed):`` from a generator of its own (the data loader gives every sample its own seed, so a
seeded run is reproducible with any number of workers). Horizontal flips are off by default: they swap "left of" and
"right of" in captions and questions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageChops, ImageEnhance, ImageFilter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


_RNG: ContextVar[torch.Generator | None] = ContextVar("vislang_transform_rng", default=None)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random transforms inside the block draw from a generator seeded with ``seed`` (cheaper than
    re-seeding torch's global RNG, and leaves it untouched)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    token = _RNG.set(gen)
    try:
        yield
    finally:
        _RNG.reset(token)


def _rand() -> float:
    return torch.rand((), generator=_RNG.get()).item()


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * _rand()


def _randint(lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi)``."""
    return int(torch.randint(lo, hi, (), generator=_RNG.get()).item())


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Resize:
    """Resize so the shorter side is ``size`` (int), or to exactly ``(h, w)``.

    Large downscales first use Pillow's ``reduce`` (box filter), which is much faster on big images and
    keeps the result anti-aliased.
    """

    def __init__(self, size: int | tuple[int, int], interpolation: str = "bicubic"):
        self.size, self.interpolation = size, interpolation

    def target(self, w: int, h: int) -> tuple[int, int]:
        if isinstance(self.size, int):
            s = self.size
            return (s, max(1, round(h * s / w))) if w <= h else (max(1, round(w * s / h)), s)
        return (self.size[1], self.size[0])

    def __call__(self, im: Image.Image) -> Image.Image:
        tw, th = self.target(*im.size)
        if (tw, th) == im.size:
            return im
        return im.resize((tw, th), _RESAMPLE[self.interpolation], reducing_gap=2.0)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """Crop the centre ``size`` x ``size`` (padding with the edge colour never happens: resize first)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, im: Image.Image) -> Image.Image:
        w, h = im.size
        if w == h == self.size:
            return im
        left, top = max(0, (w - self.size) // 2), max(0, (h - self.size) // 2)
        return im.crop((left, top, left + self.size, top + self.size))

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random area fraction ``scale`` and aspect ratio ``ratio``, resized to ``size`` x ``size``
    (Szegedy et al. 2015, as in Inception training)."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.6, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = "bicubic"):
        self.size, self.scale, self.ratio, self.interpolation = size, scale, ratio, interpolation

    def box(self, w: int, h: int) -> tuple[int, int, int, int]:
        area = w * h
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(log_lo, log_hi))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = _randint(0, w - cw + 1), _randint(0, h - ch + 1)
                return left, top, left + cw, top + ch
        s = min(w, h)  # fall back to the centre square
        return (w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s

    def __call__(self, im: Image.Image) -> Image.Image:
        return im.resize((self.size, self.size), _RESAMPLE[self.interpolation], box=self.box(*im.size),
                         reducing_gap=2.0)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale})"


class ColorJitter:
    """Random brightness, contrast and saturation factors in ``[1 - x, 1 + x]`` and a hue shift in
    ``[-hue, hue]`` (fraction of the colour wheel), applied in random order."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, im: Image.Image) -> Image.Image:
        ops = []
        for amount, enhancer in ((self.brightness, ImageEnhance.Brightness),
                                 (self.contrast, ImageEnhance.Contrast),
                                 (self.saturation, ImageEnhance.Color)):
            if amount > 0:
                ops.append((enhancer, _uniform(max(0.0, 1 - amount), 1 + amount)))
        if self.hue > 0:
            ops.append((None, _uniform(-self.hue, self.hue)))
        for i in torch.randperm(len(ops), generator=_RNG.get()).tolist():
            enhancer, factor = ops[i]
            im = _shift_hue(im, factor) if enhancer is None else enhancer(im).enhance(factor)
        return im

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


def _shift_hue(im: Image.Image, shift: float) -> Image.Image:
    h, s, v = im.convert("HSV").split()
    h = h.point(lambda x: (x + round(shift * 255)) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


class RandomGrayscale:
    """Convert to grey (kept 3-channel) with probability ``p``: teaches shape over palette."""

    def __init__(self, p: float = 0.1):
        self.p = p

    def __call__(self, im: Image.Image) -> Image.Image:
        return im.convert("L").convert("RGB") if _rand() < self.p else im

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


class RandomGaussianBlur:
    """Gaussian blur with probability ``p``, radius uniform in ``radius`` (pixels of the input image)."""

    def __init__(self, p: float = 0.1, radius: tuple[float, float] = (0.1, 1.5)):
        self.p, self.radius = p, radius

    def __call__(self, im: Image.Image) -> Image.Image:
        if _rand() >= self.p:
            return im
        return im.filter(ImageFilter.GaussianBlur(_uniform(*self.radius)))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, radius={self.radius})"


def content_mask(im: Image.Image, tolerance: int) -> Image.Image:
    """``L`` mask, 255 where a pixel differs by more than ``tolerance`` (0-255, any channel) from the
    top-left pixel's colour (the background of icons and emoji), else 0."""
    diff = ImageChops.difference(im, Image.new(im.mode, im.size, im.getpixel((0, 0)))).convert("L")
    return diff.point(lambda v: 255 if v > tolerance else 0)


class TrimBackground:
    """Crop to the square around the content: the pixels differing by more than ``tolerance`` (0-255, any
    channel) from the top-left pixel's colour, plus a ``margin`` (fraction of the content side) on each side.
    A blank image is returned as it is."""

    def __init__(self, tolerance: int = 24, margin: float = 0.04):
        self.tolerance, self.margin = tolerance, margin

    def __call__(self, im: Image.Image) -> Image.Image:
        background = im.getpixel((0, 0))
        box = content_mask(im, self.tolerance).getbbox()
        if box is None:
            return im
        left, top, right, bottom = box
        side = round(max(right - left, bottom - top) * (1 + 2 * self.margin))
        cx, cy = (left + right) / 2, (top + bottom) / 2
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        if (x0, y0, side) == (0, 0, im.width) and im.width == im.height:
            return im
        canvas = Image.new(im.mode, (side, side), background)
        canvas.paste(im.crop((max(0, x0), max(0, y0), min(im.width, x0 + side), min(im.height, y0 + side))),
                     (max(0, -x0), max(0, -y0)))
        return canvas

    def __repr__(self) -> str:
        return f"TrimBackground(tolerance={self.tolerance}, margin={self.margin})"


class RandomZoomOut:
    """With probability ``p``, shrink the image to a random fraction ``scale`` of its side and paste it at a
    random place on a canvas of the original size filled with its top-left pixel's colour (the background of
    icons and emoji). Randomness follows :func:`seeded`."""

    def __init__(self, p: float, scale: tuple[float, float] = (0.6, 1.0)):
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"zoom-out scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
        self.p, self.scale = p, tuple(scale)

    def __call__(self, im: Image.Image) -> Image.Image:
        if self.p <= 0 or _rand() >= self.p:
            return im
        w, h = im.size
        s = _uniform(*self.scale)
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        canvas = Image.new(im.mode, (w, h), im.getpixel((0, 0)))
        canvas.paste(im.resize((sw, sh), Image.Resampling.BICUBIC),
                     (_randint(0, w - sw + 1), _randint(0, h - sh + 1)))
        return canvas

    def __repr__(self) -> str:
        return f"RandomZoomOut(p={self.p}, scale={self.scale})"


class RandomFlatten:
    """With probability ``p``, paint the image in flat colours: reduce it to a random number of colours in
    ``colors`` (median cut), which removes shading and gradients as flat-fill icon styles (OpenMoji) have none.
    Randomness follows :func:`seeded`."""

    def __init__(self, p: float, colors: tuple[int, int] = (6, 16)):
        if not 2 <= colors[0] <= colors[1] <= 256:
            raise ValueError(f"flatten colours must satisfy 2 <= low <= high <= 256, got {tuple(colors)}")
        self.p, self.colors = p, tuple(colors)

    def __call__(self, im: Image.Image) -> Image.Image:
        if self.p <= 0 or _rand() >= self.p:
            return im
        im = im if im.mode == "RGB" else im.convert("RGB")
        n = _randint(self.colors[0], self.colors[1] + 1)
        return im.quantize(colors=n, method=Image.Quantize.MEDIANCUT).convert("RGB")

    def __repr__(self) -> str:
        return f"RandomFlatten(p={self.p}, colors={self.colors})"


class RandomOutline:
    """With probability ``p``, ink the image in the line-art style of icon sets such as OpenMoji: a dark line
    along the silhouette (the pixels differing by more than ``tolerance`` from the top-left pixel's colour) and
    along its strong inner colour edges. Line width (1-2 px) and ink grey level (0-``max_ink``) are drawn at
    random; randomness follows :func:`seeded`."""

    def __init__(self, p: float, tolerance: int = 24, edge_threshold: int = 48, max_ink: int = 60):
        self.p, self.tolerance, self.edge_threshold, self.max_ink = p, tolerance, edge_threshold, max_ink

    def __call__(self, im: Image.Image) -> Image.Image:
        if self.p <= 0 or _rand() >= self.p:
            return im
        im = im if im.mode == "RGB" else im.convert("RGB")
        width = _randint(1, 3)
        ink = round(_uniform(0, self.max_ink))
        content = content_mask(im, self.tolerance)
        border = ImageChops.subtract(content, content.filter(ImageFilter.MinFilter(2 * width + 1)))
        edges = im.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > self.edge_threshold else 0)
        if width > 1:
            edges = edges.filter(ImageFilter.MaxFilter(3))
        lines = ImageChops.lighter(border, ImageChops.multiply(edges, content))
        return Image.composite(Image.new("RGB", im.size, (ink, ink, ink)), im, lines)

    def __repr__(self) -> str:
        return f"RandomOutline(p={self.p}, tolerance={self.tolerance}, edge_threshold={self.edge_threshold})"


class RandomHorizontalFlip:
    """Mirror with probability ``p``. Off in the default pipelines: it changes "left of"."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, im: Image.Image) -> Image.Image:
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if _rand() < self.p else im

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ToTensor:
    """RGB PIL image to a float tensor in [0, 1], shape ``(3, H, W)``."""

    def __call__(self, im: Image.Image) -> torch.Tensor:
        a = np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """Subtract ``mean`` and divide by ``std`` per channel of a ``(3, H, W)`` or ``(B, 3, H, W)`` tensor."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


@dataclass
class TransformConfig:
    """Image pipeline settings (read only by :func:`build_transform`).

    Attributes:
        image_size: Output side in pixels.
        interpolation: Resampling filter ("bicubic", "bilinear", "nearest", "lanczos").
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation.
        augment: Use random resized crops and colour jitter when training.
        crop_scale: Area range of random resized crops.
        jitter: Brightness/contrast/saturation jitter amount (0 disables).
        hue: Hue jitter amount (0 disables).
        grayscale: Probability of converting a training image to grey.
        blur: Probability of a Gaussian blur (radius 0.1-1.5 px) on a training image.
        hflip: Probability of a horizontal flip when training (0 by default: flips change "left of").
        trim: Crop every image (training and evaluation) to the square around its content, i.e. the pixels
            that differ from its top-left pixel's colour: icons drawn with wide margins (OpenMoji) and ones
            that fill the frame (Google, Twitter) then come at the same scale.
        zoom_out: Probability of shrinking a training image onto a canvas of its background colour, before
            the other augmentations.
        zoom_out_scale: Range of the shrunk image's side as a fraction of the canvas side.
        outline: Probability of inking a training image's silhouette and inner edges with a dark line (line-art
            icon styles such as OpenMoji), before the random crop.
        flatten: Probability of reducing a training image to a few flat colours (no shading), before the
            outline.
    """

    image_size: int = 64
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    jitter: float = 0.2
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    hflip: float = 0.0
    trim: bool = False
    zoom_out: float = 0.0
    zoom_out_scale: tuple[float, float] = (0.6, 1.0)
    outline: float = 0.0
    flatten: float = 0.0

    def evaluation_settings(self) -> tuple:
        """What the evaluation pipeline of :func:`build_transform` reads: two configs with equal settings
        preprocess an image for evaluation identically."""
        return self.image_size, self.interpolation, tuple(self.mean), tuple(self.std), self.trim

    @classmethod
    def from_dict(cls, d: dict) -> TransformConfig:
        """From its saved JSON form (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def build_transform(cfg: TransformConfig | None = None, train: bool = False) -> Compose:
    """The standard pipeline: PIL RGB image -> normalised ``(3, S, S)`` tensor.

    Evaluation: resize the shorter side to ``S`` and centre-crop. Training with ``augment``: random resized
    crop, colour jitter, optional grey / blur / flip. With ``trim`` every image is first cropped to its
    content; with ``zoom_out`` a training image may then be shrunk onto its background, and with
    ``flatten`` / ``outline`` be repainted in flat colours / inked with outlines before the crop.
    """
    cfg = cfg or TransformConfig()
    steps: list[Callable] = [TrimBackground()] if cfg.trim else []
    if train and cfg.augment:
        if cfg.zoom_out > 0:
            steps.append(RandomZoomOut(cfg.zoom_out, cfg.zoom_out_scale))
        if cfg.flatten > 0:
            steps.append(RandomFlatten(cfg.flatten))
        if cfg.outline > 0:
            steps.append(RandomOutline(cfg.outline))
        steps.append(RandomResizedCrop(cfg.image_size, cfg.crop_scale,
                                       interpolation=cfg.interpolation))
        if cfg.jitter > 0 or cfg.hue > 0:
            steps.append(ColorJitter(cfg.jitter, cfg.jitter, cfg.jitter, cfg.hue))
        if cfg.grayscale > 0:
            steps.append(RandomGrayscale(cfg.grayscale))
        if cfg.blur > 0:
            steps.append(RandomGaussianBlur(cfg.blur))
        if cfg.hflip > 0:
            steps.append(RandomHorizontalFlip(cfg.hflip))
    else:
        steps += [Resize(cfg.image_size, cfg.interpolation), CenterCrop(cfg.image_size)]
    return Compose([*steps, ToTensor(), Normalize(cfg.mean, cfg.std)])
