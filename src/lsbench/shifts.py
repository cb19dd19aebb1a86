"""Distribution shifts of test images: lsbench's own suite, seeded and offline.

A shift is a pure function of (uint8 images (N, C, H, W), severity 0..5, seed) -> uint8 images of
the same shape: severity 0 is the identity; the same seed gives the same bytes; a higher severity
moves the images further (a larger mean absolute pixel change, tested). Every length is given for
28 x 28 images and scaled by the image's size (`_scale`), so the suite works for 8 x 8 digits,
28 x 28 grey images and 32 x 32 x 3 CIFAR alike.

Sources of the severity constants (each `Shift.source` says which):
- Ovadia et al. 2019, "Can you trust your model's uncertainty?" (rotation 15°..180°, translation
  2..14 px on 28 x 28 MNIST);
- Mu & Gilmer 2019, "MNIST-C" (google-research/mnist-c, corruptions.py): shear, scale, shot and
  impulse noise, motion blur, brightness, fog, spatter, and the one-level corruptions stripe,
  zigzag, dotted line and canny edges, which lsbench spreads over five levels around MNIST-C's
  own (its level is severity 5 for stripe and canny, severity 1 for the line counts);
- Hendrycks & Dietterich 2019, "ImageNet-C" (the same noise, contrast and blur constants, which
  MNIST-C took over).

Randomness: one generator per (seed, shift), not per severity, and each transform draws the same
random numbers at every severity (common random numbers), so severity alone scales the change.
The suite's code is hashed into the results' paths (`suite_sha256`): editing a constant here
re-evaluates the shifts, and never retrains a model.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from lsbench.config import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
# The seed of every shifted test set (the subset of images and the shifts' draws): one fixed set of
# shifted images per dataset, the same for every run, so runs are compared on the same images.
SHIFT_SEED = 0
# The image side every length below is written for (MNIST-C's and Ovadia's 28 x 28).
REFERENCE_SIZE = 28

Transform = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


class ShiftError(ConfigError):
    """An unknown shift, a severity outside 0..5, or images that are not uint8 (N, C, H, W)."""


@dataclass(frozen=True)
class Shift:
    """One kind of shift: `levels[s - 1]` is severity s's constant (in `unit`), from `source`;
    `transform(x, level, rng)` maps float64 images (N, C, H, W) in [0, 1] to the same."""

    name: str
    family: str
    description: str
    levels: tuple
    unit: str
    source: str
    transform: Transform


def _scale(x: np.ndarray, length: float) -> float:
    """A length in pixels of a 28 x 28 image, at this image's size (the smaller side)."""
    return length * min(x.shape[2:]) / REFERENCE_SIZE


# ---------------------------------------------------------------- geometric: one warp per image

def _warp(x: np.ndarray, matrices: np.ndarray, offsets: np.ndarray, mode: str = "constant") -> np.ndarray:
    """Each image n sampled at source = matrices[n] @ (p - centre) + centre + offsets[n], p the
    output pixel (row, column); bilinear (order 1), zero outside (`mode`), all images in one
    `scipy.ndimage.map_coordinates` call. matrices (N, 2, 2), offsets (N, 2) in pixels."""
    n, c, h, w = x.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    p = np.stack([rows - centre[0], cols - centre[1]])  # (2, H, W)
    src = np.einsum("nij,jhw->nihw", matrices, p) + (centre + offsets)[:, :, None, None]  # (N, 2, H, W)
    src = np.repeat(src, c, axis=0)  # one per (image, channel)
    index = np.broadcast_to(np.arange(n * c, dtype=np.float64)[:, None, None], (n * c, h, w))
    coords = np.stack([index, src[:, 0], src[:, 1]])
    out = ndimage.map_coordinates(x.reshape(n * c, h, w), coords, order=1, mode=mode, cval=0.0)
    return out.reshape(n, c, h, w)


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=n)


def rotate(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation by ± `degrees` about the centre (the sign drawn per image)."""
    theta = np.deg2rad(degrees) * _signs(rng, len(x))
    cos, sin = np.cos(theta), np.sin(theta)
    # The source of an output pixel is the pixel rotated back: R(-theta).
    m = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)
    return _warp(x, m, np.zeros((len(x), 2)))


def translate(x: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    """A shift by `pixels` (at 28 x 28) in a direction drawn per image, uniform on the circle."""
    angle = rng.uniform(0, 2 * np.pi, size=len(x))
    d = _scale(x, pixels) * np.stack([np.sin(angle), np.cos(angle)], -1)
    return _warp(x, np.broadcast_to(np.eye(2), (len(x), 2, 2)), -d)


def scale(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Shrinking about the centre by `factor` < 1 (MNIST-C's scale)."""
    return _warp(x, np.broadcast_to(np.eye(2) / factor, (len(x), 2, 2)), np.zeros((len(x), 2)))


def shear(x: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Horizontal shear by ± `angle` radians about the centre (the sign drawn per image), as
    MNIST-C's skimage `AffineTransform(shear=angle)`: a column offset of tan(angle) per row."""
    k = np.tan(angle) * _signs(rng, len(x))
    m = np.zeros((len(x), 2, 2))
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, 1, 0] = -k
    return _warp(x, m, np.zeros((len(x), 2)))


# ------------------------------------------------------------------------------- noise

def shot_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: Poisson(x * photons) / photons (fewer photons: more noise)."""
    return rng.poisson(x * photons) / photons


def impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise: a fraction `amount` of the pixel values set to 0 or 1 with equal
    odds, as `skimage.util.random_noise(mode="s&p", amount=amount)`; the pixels hit at a lower
    severity are hit at every higher one."""
    hit, salt = rng.random(x.shape), rng.random(x.shape) < 0.5
    return np.where(hit < amount, salt.astype(np.float64), x)


# -------------------------------------------------------------------------------- blur

def gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian blur of standard deviation `sigma` pixels at 28 x 28 (scipy.ndimage)."""
    # At least half a pixel per unit: on 8 x 8 images a scaled sigma of 0.3 px rounds back to the
    # image, and 0.5 and 0.6 px round to the same one.
    s = max(_scale(x, sigma), 0.5 * sigma)
    return ndimage.gaussian_filter(x, sigma=(0, 0, s, s), mode="nearest")


def motion_blur(x: np.ndarray, level: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A one-sided motion blur of (radius, sigma) pixels at 28 x 28 (ImageMagick's MotionBlur, as
    MNIST-C calls it): the image averaged with itself shifted by 0..radius pixels along a direction
    drawn per image in [-45°, 45°], weighted by a half-Gaussian of that sigma. One kernel per image
    (the line splatted bilinearly), applied by FFT (`scipy.fft`) to the image padded with its edge
    values; the padding covers the kernel's reach, so the circular convolution never wraps."""
    from scipy import fft

    n, c, h, w = x.shape
    radius, sigma = _scale(x, level[0]), _scale(x, level[1])
    angle = np.deg2rad(rng.uniform(-45, 45, size=n))
    steps = np.arange(int(math.ceil(radius)) + 1, dtype=np.float64)
    weights = np.exp(-steps**2 / (2 * sigma**2))
    reach = len(steps)
    size = fft.next_fast_len(max(h, w) + 2 * reach, real=True)
    rows = steps[None, :] * np.sin(angle)[:, None]  # (N, steps), offsets from the kernel's centre
    cols = steps[None, :] * np.cos(angle)[:, None]
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    image = np.broadcast_to(np.arange(n)[:, None], rows.shape)
    index, share = [], []
    for dr, dc, part in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)),
                         (1, 1, fr * fc)):
        index.append((image * size + (r0 + dr) % size) * size + (c0 + dc) % size)
        share.append(part * weights[None, :])
    kernel = np.bincount(np.concatenate(index).ravel(), np.concatenate(share).ravel(),
                         minlength=n * size * size).reshape(n, 1, size, size)
    kernel /= kernel.sum(axis=(2, 3), keepdims=True)
    padded = np.pad(x, ((0, 0), (0, 0), (reach, size - h - reach), (reach, size - w - reach)), mode="edge")
    out = fft.irfft2(fft.rfft2(padded) * fft.rfft2(kernel), s=(size, size))
    return out[:, :, reach:reach + h, reach:reach + w]


# ----------------------------------------------------------------------------- digital

def brightness(x: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """`delta` added to the HSV value (skimage.color), clipped; for grey images the pixel itself."""
    if x.shape[1] != 3:
        return x + delta
    from skimage import color

    hsv = color.rgb2hsv(np.moveaxis(x, 1, -1))
    hsv[..., 2] = np.clip(hsv[..., 2] + delta, 0, 1)
    return np.moveaxis(color.hsv2rgb(hsv), -1, 1)


def contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Each image's deviation from its own mean (per channel) scaled by `factor` < 1."""
    mean = x.mean(axis=(2, 3), keepdims=True)
    return (x - mean) * factor + mean


def stripe(x: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Pixels inverted in a band of `width` columns (at 28 x 28) at each side; the band's last
    column is inverted in proportion to its fraction, so a band grows continuously. MNIST-C's
    stripe inverts 7 of 28 columns a side: severity 5."""
    w = x.shape[3]
    band = _scale(x, width)
    j = np.arange(w, dtype=np.float64)
    edge = np.minimum(j, w - 1 - j)  # columns from the nearer side
    weight = np.clip(band - edge, 0, 1)[None, None, None, :]
    return x * (1 - weight) + (1 - x) * weight


# ---------------------------------------------------------------------------- weather

def _plasma(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """n diamond-square height maps (n, size, size) in [0, 1] (ImageNet-C's and MNIST-C's
    `plasma_fractal`, one per image, vectorised); `size` a power of two. The uniform draws are
    the same for every `decay` (common random numbers across severities)."""
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * wibble * rng.uniform(-1, 1, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        m[:, half:size:step, half:size:step] = wibbled(square)
        centres = m[:, half:size:step, half:size:step]
        corners = m[:, 0:size:step, 0:size:step]
        m[:, 0:size:step, half:size:step] = wibbled(centres + np.roll(centres, 1, axis=1) + corners
                                                    + np.roll(corners, -1, axis=2))
        m[:, half:size:step, 0:size:step] = wibbled(centres + np.roll(centres, 1, axis=2) + corners
                                                    + np.roll(corners, -1, axis=1))
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-12)


def fog(x: np.ndarray, level: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Fog (MNIST-C): x + strength * plasma fractal (wibble decay `level[1]`), rescaled by
    max / (max + strength). The fractal is drawn at twice the image's (power-of-two) side and
    cropped, one per image."""
    strength, decay = level
    n, c, h, w = x.shape
    size = 2 ** int(math.ceil(math.log2(max(h, w)))) * 2
    cloud = _plasma(rng, n, size, decay)[:, None, :h, :w]
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * cloud) * top / (top + strength)


def spatter(x: np.ndarray, level: tuple, rng: np.random.Generator) -> np.ndarray:
    """Mud spatter (MNIST-C): Gaussian noise N(loc, scale) smoothed by sigma, thresholded, the
    mask smoothed by sigma2 and cut below 0.8, then mud of grey 63/255 painted where it is.
    level = (loc, scale, sigma, threshold, sigma2). The mask is made at 28 x 28 and resized to the
    image (bilinear): smoothed at another size, the noise's variance and so the mud's area would
    change with the image's size."""
    loc, spread, sigma, threshold, sigma2 = level
    n, c, h, w = x.shape
    size = REFERENCE_SIZE
    liquid = ndimage.gaussian_filter(loc + spread * rng.standard_normal((n, size, size)), sigma=(0, sigma, sigma))
    mask = ndimage.gaussian_filter((liquid > threshold).astype(np.float64), sigma=(0, sigma2, sigma2))
    mask = np.where(mask < 0.8, 0.0, mask)
    if (h, w) != (size, size):
        mask = np.clip(ndimage.zoom(mask, (1, h / size, w / size), order=1, grid_mode=True, mode="nearest"), 0, 1)
    return x * (1 - mask[:, None]) + 63 / 255 * mask[:, None]


# ------------------------------------------------------------------------------ overlays

def _ink(h: int, w: int, ends: np.ndarray, width: float) -> np.ndarray:
    """Ink (N, H, W) in [0, 1] of segments ends (S, N, 4) = (r0, c0, r1, c1), S per image: MNIST-C's
    line profile log(1 - d / width) + 1 at distance d from the nearest segment, 0 beyond."""
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    d2 = np.full((ends.shape[1], h, w), np.inf, dtype=np.float32)
    for e in ends.astype(np.float32):  # one segment of every image at a time: (N, H, W) each
        r0, c0, r1, c1 = (e[:, i, None, None] for i in range(4))
        dr, dc = r1 - r0, c1 - c0
        t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / np.maximum(dr * dr + dc * dc, 1e-12), 0, 1)
        np.minimum(d2, (rows - r0 - t * dr) ** 2 + (cols - c0 - t * dc) ** 2, out=d2)
    with np.errstate(divide="ignore"):
        ink = np.log(np.clip(1 - np.sqrt(d2.astype(np.float64)) / width, 1e-12, None)) + 1
    return np.clip(ink, 0, 1)


def _lines(x: np.ndarray, ends: list[np.ndarray], mask: Callable[[np.ndarray], np.ndarray] | None = None
           ) -> np.ndarray:
    n, c, h, w = x.shape
    width = 2.3 * min(h, w) / REFERENCE_SIZE  # MNIST-C's 2.3 px half width at 28 x 28
    ink = _ink(h, w, np.stack(ends), width)
    if mask is not None:
        ink = ink * mask(np.arange(w))[None, None, :]
    return x + ink[:, None]


def _random_lines(x: np.ndarray, count: int, rng: np.random.Generator, max_count: int = 5) -> list[np.ndarray]:
    """`count` of `max_count` lines across the image per image, left edge to right edge at rows
    drawn uniformly; the first k lines are the same at every count (common random numbers)."""
    n, _, h, w = x.shape
    rows = rng.uniform(0, h - 1, size=(max_count, n, 2))
    return [np.stack([r[:, 0], np.zeros(n), r[:, 1], np.full(n, w - 1.0)], -1) for r in rows[:count]]


def dotted_line(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` dotted lines across the image (MNIST-C's dotted_line: on 2 columns, off 2, at 28 x 28)."""
    period = max(2.0, _scale(x, 4))

    def dots(cols: np.ndarray) -> np.ndarray:
        return ((cols % period) < period / 2).astype(np.float64)

    return _lines(x, _random_lines(x, count, rng), dots)


def zigzag(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` zigzag lines (MNIST-C's zigzag: teeth 2 px long and 2 px high at 28 x 28, along a
    line from column 2 to 25 whose end rows differ by under 5 px)."""
    n, _, h, w = x.shape
    a = _scale(x, 2.0)
    c0, c1 = _scale(x, 2.0), (w - 1) - _scale(x, 2.0)
    segments = []
    for k in range(5):
        r0 = rng.uniform(0, h - 1, size=n)
        r1 = r0 + rng.uniform(-_scale(x, 5.0), _scale(x, 5.0), size=n)
        if k >= count:
            continue
        teeth = max(2, int((c1 - c0) // (2 * a)))
        t = np.linspace(0, 1, teeth + 1)
        cols = c0 + t[None, :] * (c1 - c0)
        rows = r0[:, None] + t[None, :] * (r1 - r0)[:, None] + a * (-1.0) ** np.arange(teeth + 1)[None, :]
        segments += [np.stack([rows[:, i], np.broadcast_to(cols[0, i], n), rows[:, i + 1],
                               np.broadcast_to(cols[0, i + 1], n)], -1) for i in range(teeth)]
    return _lines(x, segments)


def canny_edges(x: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """The image blended towards its Canny edge map (skimage.feature.canny, sigma 1 at 28 x 28,
    per channel) with `weight`; MNIST-C's canny_edges is the edge map alone (weight 1)."""
    from skimage import feature

    sigma = _scale(x, 1.0)
    edges = np.stack([np.stack([feature.canny(ch, sigma=sigma).astype(np.float64) for ch in img]) for img in x])
    return (1 - weight) * x + weight * edges


OVADIA = "Ovadia et al. 2019 (rotated / translated MNIST)"
MNIST_C = "Mu & Gilmer 2019, MNIST-C"
IMAGENET_C = "Hendrycks & Dietterich 2019, ImageNet-C (as MNIST-C)"
_SPREAD = "spread over 5 levels by lsbench"

SHIFTS: dict[str, Shift] = {s.name: s for s in (
    Shift("rotation", "geometric", "rotated by ± the angle", (15, 45, 90, 135, 180), "degrees", OVADIA, rotate),
    Shift("translation", "geometric", "moved by the distance in a random direction", (2, 5, 8, 11, 14),
          "pixels at 28 × 28", OVADIA, translate),
    Shift("scale", "geometric", "shrunk about the centre", (0.9, 0.8, 0.7, 0.6, 0.5), "factor", MNIST_C, scale),
    Shift("shear", "geometric", "sheared horizontally by ± the angle", (0.2, 0.4, 0.6, 0.8, 1.0), "radians",
          MNIST_C, shear),
    Shift("shot_noise", "noise", "Poisson noise", (60, 25, 12, 5, 3), "photons per unit intensity", IMAGENET_C,
          shot_noise),
    Shift("impulse_noise", "noise", "salt-and-pepper noise", (0.03, 0.06, 0.09, 0.17, 0.27), "fraction of pixels",
          IMAGENET_C, impulse_noise),
    Shift("gaussian_blur", "blur", "Gaussian blur", (1, 2, 3, 4, 6), "sigma, pixels at 28 × 28", IMAGENET_C,
          gaussian_blur),
    Shift("motion_blur", "blur", "one-sided motion blur", ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
          "(radius, sigma), pixels at 28 × 28", MNIST_C, motion_blur),
    Shift("brightness", "digital", "brighter (HSV value + delta)", (0.1, 0.2, 0.3, 0.4, 0.5), "added value",
          MNIST_C, brightness),
    Shift("contrast", "digital", "lower contrast", (0.4, 0.3, 0.2, 0.1, 0.05), "factor", IMAGENET_C, contrast),
    Shift("fog", "weather", "plasma-fractal fog", ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.75, 1.5), (3.0, 1.4)),
          "(strength, wibble decay)",
          f"{MNIST_C}; severity 4's strength 2.75 by lsbench (MNIST-C's 2.5, its severity 3's, does not move "
          "the images further than 3 does)", fog),
    Shift("spatter", "weather", "mud spatter",
          ((0.65, 0.3, 2, 0.71, 0.6), (0.65, 0.3, 2, 0.70, 0.6), (0.65, 0.3, 2, 0.69, 0.6),
           (0.65, 0.3, 2, 0.68, 0.6), (0.65, 0.3, 2, 0.67, 0.6)),
          "(loc, scale, sigma, threshold, sigma2)",
          f"{MNIST_C}'s procedure; sigma 2 and the thresholds by lsbench, so the mud grows with severity "
          "(MNIST-C's own constants are not monotone: its severity 4 spatters less than its 3)", spatter),
    Shift("stripe", "digital", "inverted bands at both sides", (1, 2, 3.5, 5, 7), "columns a side at 28 × 28",
          f"{MNIST_C} (7 columns), {_SPREAD}", stripe),
    Shift("zigzag", "overlay", "zigzag lines drawn over", (1, 2, 3, 4, 5), "lines", f"{MNIST_C} (1 line), {_SPREAD}",
          zigzag),
    Shift("dotted_line", "overlay", "dotted lines drawn over", (1, 2, 3, 4, 5), "lines",
          f"{MNIST_C} (1 line), {_SPREAD}", dotted_line),
    Shift("canny_edges", "digital", "blended towards its Canny edges", (0.2, 0.4, 0.6, 0.8, 1.0), "weight",
          f"{MNIST_C} (weight 1), {_SPREAD}", canny_edges),
)}


def markdown_table() -> str:
    """The registry as docs/shifts.md shows it (a test keeps the two equal)."""
    rows = ["| shift | family | what it does | severity 1 … 5 | unit | source |", "|---|---|---|---|---|---|"]
    for s in SHIFTS.values():
        levels = " · ".join(str(level).replace(" ", "") for level in s.levels)
        rows.append(f"| `{s.name}` | {s.family} | {s.description} | {levels} | {s.unit} | {s.source} |")
    return "\n".join(rows)


def get_shift(name: str) -> Shift:
    if name not in SHIFTS:
        raise ShiftError(f"unknown shift {name!r}. Allowed: {', '.join(SHIFTS)}")
    return SHIFTS[name]


def _generator(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def apply_shift(name: str, images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """`images` uint8 (N, C, H, W) under shift `name` at `severity` (0 = unchanged, 1..5), drawn
    from `seed`: uint8 (N, C, H, W), rounded from the float result clipped to [0, 255]. The random
    draws are made for the whole batch in order, so the same seed and the same images give the
    same bytes, but an image shifted within another batch (another `shift_images`) may draw other
    noise.

    Raises ShiftError for an unknown name, a severity outside 0..5, a seed that is not an integer
    >= 0, or images that are not uint8 (N, C, H, W) with 1 or 3 channels."""
    shift = get_shift(name)
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ShiftError(f"shift {name!r}: severity {severity!r} is not an integer in 0..5")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ShiftError(f"shift {name!r}: images must be uint8 (N, C, H, W) with C = 1 or 3 (channels first), got "
                         f"{images.dtype} {images.shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ShiftError(f"shift {name!r}: seed {seed!r} is not an integer >= 0")
    if severity == 0 or len(images) == 0:
        return images.copy()
    x = images.astype(np.float64) / 255
    out = shift.transform(x, shift.levels[severity - 1], _generator(name, seed))
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def suite_order(names) -> list[str]:
    """`names` (any iterable of shift names, "none" left out) in the suite's order, names that are
    not in the suite (tables of another lsbench) after them, sorted: the order of every figure,
    table and finding over shifts."""
    present = {n for n in names if n != "none"}
    return [s for s in SHIFTS if s in present] + sorted(present - set(SHIFTS))


def shift_subset(n_test: int, images: int) -> np.ndarray:
    """Indices (sorted, int64) of the `images` test images every shift is applied to, of `n_test`:
    drawn once from SHIFT_SEED (all of them when `images` >= n_test)."""
    if images >= n_test:
        return np.arange(n_test, dtype=np.int64)
    return np.sort(np.random.default_rng(SHIFT_SEED).permutation(n_test)[:images]).astype(np.int64)


def suite_sha256(names: list[str] | None = None) -> str:
    """A hash of this module's code and the shifts chosen: what the shifted images depend on
    (besides the images, the seed and the subset), so a changed constant changes the paths."""
    code = Path(__file__).read_bytes()
    return hashlib.sha256(code + repr(sorted(names or SHIFTS)).encode()).hexdigest()
