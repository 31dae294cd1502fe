"""What a drawn mask's fabric shows before lighting: colour tables, printed patterns, big graphics
(a printed mouth, lettering) and photo textures."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from training.masks.filters import sample_tiled, smoothstep

SURGICAL_COLORS = (
    ((150, 195, 228), 0.42),  # light blue
    ((236, 238, 240), 0.22),  # white
    ((140, 205, 190), 0.1),  # green
    ((232, 182, 200), 0.06),  # pink
    ((40, 40, 44), 0.12),  # black
    ((165, 168, 172), 0.08),  # grey
)
N95_COLORS = (((238, 238, 232), 0.6), ((205, 205, 205), 0.2), ((120, 124, 130), 0.1), ((170, 195, 220), 0.1))
KN95_COLORS = (
    ((240, 240, 238), 0.6),
    ((40, 40, 44), 0.15),
    ((160, 162, 168), 0.1),
    ((165, 200, 230), 0.08),
    ((232, 185, 200), 0.07),
)
CLOTH_COLORS = (
    ((28, 28, 30), 0.24),  # black
    ((30, 38, 70), 0.1),  # navy
    ((70, 72, 78), 0.08),  # charcoal
    ((225, 220, 208), 0.08),  # white / cream
    ((195, 175, 145), 0.06),  # beige
    ((165, 35, 45), 0.06),  # red
    ((70, 100, 145), 0.07),  # denim
    ((225, 170, 185), 0.05),  # pink
    ((150, 185, 215), 0.06),  # light blue
    ((90, 105, 65), 0.05),  # olive
    ((95, 60, 110), 0.04),  # purple
    ((215, 185, 60), 0.04),  # mustard
    ((40, 120, 110), 0.04),  # teal
    ((130, 130, 135), 0.03),  # grey
    ((232, 70, 150), 0.04),  # hot pink
    ((240, 200, 30), 0.02),  # bright yellow
    ((235, 110, 35), 0.02),  # orange
    ((60, 170, 80), 0.02),  # bright green
)
BENCH_COLORS = (
    ((208, 210, 218), 0.35),
    ((150, 190, 230), 0.2),
    ((60, 85, 150), 0.12),
    ((150, 40, 45), 0.1),
    ((32, 32, 35), 0.13),
    ((85, 175, 185), 0.1),
)


RESPIRATOR_COLORS = (
    ((125, 128, 132), 0.2),  # grey
    ((70, 72, 76), 0.16),  # dark grey
    ((34, 34, 37), 0.16),  # black
    ((55, 90, 160), 0.1),  # blue
    ((40, 115, 120), 0.08),  # teal
    ((140, 95, 150), 0.06),  # purple
    ((205, 130, 165), 0.06),  # pink
    ((228, 224, 210), 0.18),  # white / cream
)

# Clear masks: the film (faintly grey or blue before lighting), and the trim of a clear mask's rim or
# the cloth of a mask with a clear window over the mouth.
CLEAR_FILM_COLORS = (((232, 236, 240), 0.7), ((215, 228, 240), 0.3))
CLEAR_TRIM_COLORS = (
    ((236, 238, 240), 0.35),  # white
    ((228, 218, 196), 0.15),  # cream
    ((32, 32, 35), 0.2),  # black
    ((150, 190, 225), 0.15),  # light blue
    ((228, 180, 196), 0.08),  # pink
    ((120, 122, 128), 0.07),  # grey
)


def pick(rng: np.random.Generator, options: tuple) -> np.ndarray:
    colors, weights = zip(*options, strict=True)
    w = np.array(weights, np.float64)
    return np.array(colors[rng.choice(len(colors), p=w / w.sum())], np.float32)


LETTERS = "ABCDEFGHIJKLMNOPRSTUVWXYZ0123456789!#&"


def draw_graphic(
    rng: np.random.Generator, print_faces: Callable[[np.random.Generator], np.ndarray] | None
) -> tuple[np.ndarray, str]:
    """A picture (float32 RGB, 0..255) printed over a whole mask, and what it shows."""
    if print_faces is not None and rng.random() < 0.6:
        photo = print_faces(rng)
        h, w = photo.shape[:2]
        mouth = photo[int(h * 0.5) :, int(w * 0.1) : int(w * 0.9)].astype(np.float32)
        style = str(rng.choice(["photo", "poster", "skull"], p=[0.2, 0.45, 0.35]))
        if style == "poster":  # a printed cartoon of a mouth: few flat colours, saturated
            levels = float(rng.integers(3, 6))
            mouth = np.round(mouth / 255 * (levels - 1)) / (levels - 1) * 255
            hsv = cv2.cvtColor(mouth.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1.2, 2.0), 0, 255)
            mouth = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        elif style == "skull":  # bone on black: the grey face inverted, hard contrast
            grey = mouth.mean(axis=2, keepdims=True)
            grey = np.clip((255 - grey - 128) * rng.uniform(1.5, 2.5) + 128, 0, 255)
            mouth = np.repeat(grey, 3, axis=2)
        return np.ascontiguousarray(mouth), f"mouth_{style}"
    canvas = np.empty((160, 240, 3), np.uint8)
    ground = pick(rng, CLOTH_COLORS)
    canvas[:] = ground.astype(np.uint8)
    ink = 255 - ground if rng.random() < 0.7 else rng.uniform(0, 255, 3)
    lines = int(rng.integers(1, 4))
    for line in range(lines):
        word = "".join(rng.choice(list(LETTERS), int(rng.integers(3, 8))))
        scale = rng.uniform(1.0, 2.2) / lines**0.5
        y = int((line + 0.75) * 160 / lines)
        cv2.putText(canvas, word, (int(rng.uniform(0, 40)), y), cv2.FONT_HERSHEY_DUPLEX, scale,
                    tuple(float(c) for c in ink), int(rng.integers(2, 6)), cv2.LINE_AA)  # fmt: skip
    return canvas.astype(np.float32), "text"


def print_pattern(
    tx: np.ndarray, ty: np.ndarray, iod: float, smooth: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A printed fabric: stripes, dots, checks or noise (camouflage / tie-dye), in random colours."""
    # Fabric dyes: any hue, rarely fully saturated.
    hsv = np.stack([rng.uniform(0, 180, 4), rng.uniform(40, 200, 4), rng.uniform(50, 240, 4)], -1)
    palette = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)
    if rng.random() < 0.5:  # a light or dark ground under a contrasting print is the common case
        palette[0] = pick(rng, CLOTH_COLORS)
    px = 1.0 / iod
    angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]) + rng.normal(0, 0.05))
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    a, b = tx * ca + ty * sa, -tx * sa + ty * ca
    pattern = str(rng.choice(["stripes", "dots", "checks", "noise"]))
    if pattern == "stripes":
        period = rng.uniform(0.1, 0.35)
        duty = rng.uniform(0.25, 0.6)
        f = np.abs((a / period) % 1.0 - 0.5) * 2  # 0 at stripe centres
        mix = smoothstep(duty, 2 * px / period, f)[..., None]
        return palette[1] * (1 - mix) + palette[0] * mix
    if pattern == "dots":
        period = rng.uniform(0.12, 0.3)
        radius = rng.uniform(0.18, 0.35) * period
        row = np.floor(b / period)
        shift = 0.5 * (row % 2) * period  # staggered rows
        dx = ((a + shift) / period) % 1.0 - 0.5
        dy = (b / period) % 1.0 - 0.5
        d = np.hypot(dx, dy) * period
        mix = smoothstep(radius, 1.5 * px, d)[..., None]
        return palette[1] * (1 - mix) + palette[0] * mix
    if pattern == "checks":
        period = rng.uniform(0.12, 0.35)
        sx = smoothstep(0.5, 2 * px / period, np.abs((a / period) % 1.0 - 0.5) * 2)
        sy = smoothstep(0.5, 2 * px / period, np.abs((b / period) % 1.0 - 0.5) * 2)
        mix = ((sx + sy) / 2)[..., None]  # gingham: ground, half and full tone
        out = palette[0] * (1 - mix) + palette[1] * mix
        if rng.random() < 0.4:  # plaid: a thin cross line in a third colour
            line = smoothstep(0.93, 2 * px / period, np.abs(((a / period) + 0.25) % 1.0 - 0.5) * 2)
            out = out * (1 - line[..., None]) + palette[2] * line[..., None]
        return out
    scale = rng.uniform(25, 60)
    n = sample_tiled(smooth, a * scale + rng.uniform(0, 128), b * scale + rng.uniform(0, 128))
    if rng.random() < 0.6:  # camouflage: a few flat colour levels
        levels = np.digitize(n, [-0.6, 0.0, 0.6])
        return palette[levels]
    mix = np.clip(0.5 + 0.35 * n, 0, 1)[..., None]
    return palette[0] * (1 - mix) + palette[1] * mix


def sample_texture(
    pyramid: list[np.ndarray], tx: np.ndarray, ty: np.ndarray, iod: float, rng: np.random.Generator
) -> np.ndarray:
    """A photo texture printed on the fabric: tiled, at a random scale, offset and small rotation.

    `pyramid`: the texture halved level by level; sampling uses the level whose texels are about
    pixel-sized, so bilinear sampling does not alias."""
    # A mask (about 1.6 iod wide) shows this fraction of the texture's width.
    texels_per_iod = pyramid[0].shape[1] * rng.uniform(0.25, 0.7) / 1.6
    level = 0
    while level + 1 < len(pyramid) and texels_per_iod > 1.2 * iod:
        level, texels_per_iod = level + 1, texels_per_iod / 2
    tex = pyramid[level]
    angle = rng.normal(0, 0.08)
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    ox, oy = rng.uniform(0, tex.shape[1]), rng.uniform(0, tex.shape[0])
    mx = (tx * ca + ty * sa) * texels_per_iod + ox
    my = (-tx * sa + ty * ca) * texels_per_iod + oy
    return sample_tiled(tex, mx, my)


def clear_plastic(
    lit: np.ndarray, film: np.ndarray, attrs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A clear mask from a drawn body: its colour (h, w, 3) and how much of the photo it hides
    (h, w). `lit` is the body lit as the film colour `film` (so `lit / film` is the light on it);
    the film lets most of the face through, more opaque where the light glints on it; an opaque
    trim runs round its rim, or (half of them) the mask is cloth with a clear window over the mouth.
    The mask covers the whole body all the same: the face behind it is seen through plastic, and
    real ones (a face window, a clear respirator) were left on by segmenters that never saw one."""
    u, v = attrs[..., 0], attrs[..., 1]
    light = lit / np.maximum(film, 1.0)
    glint = light.mean(axis=-1) / max(float(np.median(light.mean(axis=-1))), 1e-3)
    film_opacity = np.clip(rng.uniform(0.05, 0.2) * np.clip(glint, 0.3, 3.0) ** 2, 0.0, 0.9)
    trim = pick(rng, CLEAR_TRIM_COLORS) * rng.uniform(0.95, 1.05, 3)
    if rng.random() < 0.5:  # a cloth mask with a clear window over the mouth
        cu, cv, ru, rv = 0.5, rng.uniform(0.5, 0.62), rng.uniform(0.2, 0.32), rng.uniform(0.17, 0.27)
        inside = np.hypot((u - cu) / ru, (v - cv) / rv)
        solid = smoothstep(1.0, 0.08, inside)
    else:  # clear all over, an opaque rim
        rim = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v))
        solid = 1.0 - smoothstep(rng.uniform(0.03, 0.07), 0.02, rim)
    opacity = solid + (1.0 - solid) * film_opacity
    color = solid[..., None] * light * trim + (1.0 - solid[..., None]) * lit
    return np.clip(color, 0, 255).astype(np.float32), opacity.astype(np.float32)
