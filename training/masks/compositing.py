"""Layers of premultiplied colour and coverage, and putting the finished mask on the photo."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.masks.light import Light


@dataclass
class Layer:
    """The mask as premultiplied colour and coverage over a region of interest at (x0, y0)."""

    x0: int
    y0: int
    color: np.ndarray  # (h, w, 3) float32, premultiplied by alpha, 0..255
    alpha: np.ndarray  # (h, w) float32: how much the layer hides of what lies under it
    # (h, w) float32: how much of the mask is there (the truth the networks learn), where that is
    # not `alpha`: clear plastic shows the face through it and is mask all the same. None: `alpha`.
    coverage: np.ndarray | None = None

    @property
    def truth(self) -> np.ndarray:
        return self.alpha if self.coverage is None else self.coverage

    @staticmethod
    def empty() -> Layer:
        return Layer(0, 0, np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32))

    def over(self, below: Layer) -> Layer:
        """Put this layer over `below`, whose region contains this one's; returns `below`, changed."""
        h, w = self.alpha.shape
        sl = np.s_[self.y0 - below.y0 : self.y0 - below.y0 + h, self.x0 - below.x0 : self.x0 - below.x0 + w]
        if below.coverage is not None:
            below.coverage[sl] = self.truth + below.coverage[sl] * (1.0 - self.truth)
        keep = 1.0 - self.alpha
        below.color[sl] = self.color + below.color[sl] * keep[..., None]
        below.alpha[sl] = self.alpha + below.alpha[sl] * keep
        return below


def bounding_box(points: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around the points, padded and cut to the image; None if empty."""
    x0, y0 = np.floor(np.maximum(points.min(0) - pad, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(points.max(0) + pad, [shape[1], shape[0]])).astype(int)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def stack_layers(layers: list[Layer]) -> Layer:
    """Layers, bottom to top, flattened onto one layer that covers them all."""
    layers = [layer for layer in layers if layer.alpha.size]
    if len(layers) <= 1:
        return layers[0] if layers else Layer.empty()
    x0, y0 = min(layer.x0 for layer in layers), min(layer.y0 for layer in layers)
    x1 = max(layer.x0 + layer.alpha.shape[1] for layer in layers)
    y1 = max(layer.y0 + layer.alpha.shape[0] for layer in layers)
    h, w = y1 - y0, x1 - x0
    out = Layer(x0, y0, np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32))
    if any(layer.coverage is not None for layer in layers):
        out.coverage = np.zeros((h, w), np.float32)
    for layer in layers:
        layer.over(out)
    return out


def _patch(tile: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random window of a precomputed noise tile (fresh normal draws cost more than the rest)."""
    h, w = shape
    if h > tile.shape[0] or w > tile.shape[1]:
        tile = np.tile(tile, (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1))
    oy, ox = rng.integers(0, tile.shape[0] - h + 1), rng.integers(0, tile.shape[1] - w + 1)
    return tile[oy : oy + h, ox : ox + w]


def _jpeg(mask_rgb: np.ndarray, color: np.ndarray, alpha: np.ndarray, quality: int) -> np.ndarray:
    """The mask colour through a JPEG round trip: photos carry compression artefacts, and a mask
    without them would be told apart by that alone. Outside the mask the colour is first filled
    from the nearby mask, so its edge does not ring against black."""
    spread = cv2.blur(color, (7, 7)) / np.maximum(cv2.blur(alpha, (7, 7)), 1e-4)[..., None]
    filled = np.where((alpha > 0.5)[..., None], mask_rgb, np.clip(spread, 0, 255))
    ok, buf = cv2.imencode(".jpg", filled.astype(np.uint8)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) if ok else mask_rgb


def put_on(
    rgb: np.ndarray, layer: Layer, light: Light, sensor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blur and noise the mask like the photo, then image = alpha * mask + (1 - alpha) * input;
    returns the image and the mask's coverage (the layer's `truth`, blurred the same way)."""
    h, w = rgb.shape[:2]
    image, alpha_full = rgb.copy(), np.zeros((h, w), np.float32)
    lh, lw = layer.alpha.shape
    if lh == 0 or lw == 0:
        return image, alpha_full
    # Crop the layer to the image (templates may reach outside).
    x0, y0 = max(layer.x0, 0), max(layer.y0, 0)
    x1, y1 = min(layer.x0 + lw, w), min(layer.y0 + lh, h)
    if x1 <= x0 or y1 <= y0:
        return image, alpha_full
    sl = np.s_[y0 - layer.y0 : y1 - layer.y0, x0 - layer.x0 : x1 - layer.x0]
    color, alpha = layer.color[sl], layer.alpha[sl]
    # The photo's softness blurs the mask's edge too (premultiplied, so edges stay clean).
    color = cv2.GaussianBlur(color, (0, 0), light.blur)
    alpha = cv2.GaussianBlur(alpha, (0, 0), light.blur)
    truth = None if layer.coverage is None else cv2.GaussianBlur(layer.coverage[sl], (0, 0), light.blur)
    mask_rgb = color / np.maximum(alpha, 1e-6)[..., None]
    mask_rgb += _patch(sensor, mask_rgb.shape[:2], rng) * np.float32(light.noise)
    mask_rgb = np.clip(mask_rgb, 0, 255)
    if rng.random() < 0.6:
        mask_rgb = _jpeg(mask_rgb, color, alpha, int(rng.integers(50, 96)))
    alpha = _snapped(alpha)
    a = alpha[..., None]
    roi = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.clip(np.rint(a * mask_rgb + (1 - a) * roi), 0, 255).astype(np.uint8)
    alpha_full[y0:y1, x0:x1] = alpha if truth is None else _snapped(truth)
    return image, alpha_full


def _snapped(alpha: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1], exactly 0 below half a grey level (not mask) and exactly 1 above."""
    alpha = np.clip(alpha, 0, 1)
    alpha[alpha < 1 / 512] = 0
    alpha[alpha > 1 - 1 / 512] = 1
    return alpha
