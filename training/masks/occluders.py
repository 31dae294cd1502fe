"""Hard negatives for the segmenter: a hand at the face or a collar at the neck, drawn over the photo
(and over its mask, which they hide) and never part of the truth. Real photos show both beside
masks, and a segmenter that never saw one took a dark collar or a hand for mask."""

from __future__ import annotations

import cv2
import numpy as np

from qmask.align import mesh_eyes
from training.masks.fabrics import CLOTH_COLORS, pick
from training.masks.filters import soft
from training.masks.renderer import RenderedMask

# Drawn at this many times the photo's size, then shrunk: smooth, anti-aliased outlines.
SUPERSAMPLE = 4
# Skin between the eyes and on the forehead (MediaPipe indices): the hand takes the face's tone.
FOREHEAD = (9, 8, 107, 336, 151, 108, 337)
CHIN = 152


def occlude(drawn: RenderedMask, mesh: np.ndarray, rng: np.random.Generator) -> RenderedMask:
    """`drawn` with a hand or a collar over it; the mask's coverage loses what they hide."""
    mesh = np.asarray(mesh, np.float64)[:, :2]  # image pixels
    eyes = mesh_eyes(mesh)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    shape = drawn.alpha.shape
    if rng.random() < 0.5:
        cover, colour = _hand(mesh, iod, drawn.image, rng, shape)
    else:
        cover, colour = _collar(mesh, iod, rng, shape)
    cover[cover < 1 / 512] = 0  # below half a grey level: untouched, the photo's bytes kept
    cover[cover > 1 - 1 / 512] = 1
    a = cover[..., None]
    image = np.clip(np.rint(a * colour + (1 - a) * drawn.image), 0, 255).astype(np.uint8)
    return RenderedMask(image=image, alpha=(drawn.alpha * (1 - cover)).astype(np.float32), kind=drawn.kind)


def _canvas(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros((shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE), np.uint8)


def _shrunk(canvas: np.ndarray, shape: tuple[int, int], blur: float) -> np.ndarray:
    cover = cv2.resize(canvas.astype(np.float32) / 255, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return np.clip(soft(cover, blur), 0, 1).astype(np.float32)


def _pts(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * SUPERSAMPLE).astype(np.int32)


def _hand(
    mesh: np.ndarray, s: float, rgb: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A hand reaching up to the cheek, jaw or chin from below or beside (`s`: the eyes' distance,
    a hand's length is about three of them): palm and four fingers in the face's own skin tone,
    shaded along its length, the fingers' middles lighter."""
    side = 1 if rng.random() < 0.5 else -1
    # Where the fingertips reach: the jaw, the cheek or the chin, never over the eyes.
    chin = mesh[CHIN]
    target = chin + np.array([side * rng.uniform(0.3, 1.1), rng.uniform(-1.0, 0.1)]) * s
    # The hand comes from below and out to the side.
    angle = np.radians(rng.uniform(-80, -20)) if side > 0 else np.radians(rng.uniform(-160, -100))
    direction = np.array([np.cos(angle), np.sin(angle)])  # from the wrist to the fingertips, up
    length, width = rng.uniform(1.4, 1.8) * s, rng.uniform(1.1, 1.4) * s  # the palm
    fingers = rng.uniform(0.9, 1.25) * s
    knuckles = target - direction * fingers
    across = np.array([-direction[1], direction[0]])
    canvas, gaps = _canvas(shape), _canvas(shape)
    palm_centre = knuckles - direction * length * 0.45
    cv2.ellipse(
        canvas,
        tuple(_pts(palm_centre)),
        tuple(int(v) for v in _pts(np.array([length * 0.6, width * 0.55]))),
        float(np.degrees(angle)),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
    )
    # The forearm, out past the photo's edge.
    elbow = tuple(_pts(palm_centre - direction * 3 * s))
    cv2.line(canvas, tuple(_pts(palm_centre)), elbow, 255, int(width * 0.8 * SUPERSAMPLE), cv2.LINE_AA)
    finger = width / 4
    for k, reach in enumerate(rng.uniform(0.7, 1.0, 4) * np.array([0.85, 1.0, 0.95, 0.75])):
        base = knuckles + across * (k - 1.5) * finger
        tip = base + direction * reach * fingers
        thickness = max(1, int(finger * 0.92 * SUPERSAMPLE))
        cv2.line(canvas, tuple(_pts(base)), tuple(_pts(tip)), 255, thickness, cv2.LINE_AA)
        cv2.line(gaps, tuple(_pts(base)), tuple(_pts(tip)), 255, max(1, thickness // 5), cv2.LINE_AA)
    blur = rng.uniform(0.3, 1.0)
    cover = _shrunk(canvas, shape, blur)
    skin = np.median(rgb[tuple(_inside(mesh[list(FOREHEAD)], shape).T[::-1])], axis=0)
    tone = skin * rng.uniform(0.85, 1.1) * rng.uniform(0.96, 1.04, 3)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    along = ((xx - target[0]) * direction[0] + (yy - target[1]) * direction[1]) / s
    shade = 1.0 + 0.12 * np.tanh(along) * rng.choice([-1, 1])
    # Each finger's middle catches the light; between the fingers it is darker.
    shade *= 0.9 + 0.15 * _shrunk(gaps, shape, 1.0)
    colour = np.clip(tone[None, None] * shade[..., None], 0, 255)
    colour += rng.normal(0, 2.0, colour.shape)
    return cover, colour.astype(np.float32)


def _collar(
    mesh: np.ndarray, s: float, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A collar, a turtleneck or a jacket at the neck: cloth from a little under the chin down out of
    the photo, a V or a curve at its top, mostly dark."""
    chin = mesh[CHIN]
    top = chin[1] + rng.uniform(-0.05, 0.5) * s  # a turtleneck reaches the jaw
    half = rng.uniform(0.9, 2.0) * s
    dip = rng.uniform(0.0, 0.6) * s  # V-neck or open collar: the middle lower than the sides
    xs = np.linspace(chin[0] - half, chin[0] + half, 24)
    t = (xs - chin[0]) / half
    ys = top + dip * np.clip(1 - np.abs(t), 0, 1) ** rng.uniform(0.6, 1.5)
    below = shape[0] + 2 * s
    outline = np.concatenate([np.stack([xs, ys], 1), [[xs[-1], below], [xs[0], below]]])
    canvas = _canvas(shape)
    cv2.fillPoly(canvas, [_pts(outline)], 255, cv2.LINE_AA)
    cover = _shrunk(canvas, shape, rng.uniform(0.3, 1.0))
    dark = rng.random() < 0.6
    base = rng.uniform(15, 70, 3) if dark else pick(rng, CLOTH_COLORS)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    folds = 1.0 + 0.08 * np.sin(xx / (rng.uniform(0.1, 0.3) * s) + rng.uniform(0, 6.3))
    shade = folds * (1.0 - 0.15 * np.clip((yy - top) / (2 * s), 0, 1))
    colour = np.clip(base[None, None] * shade[..., None] + rng.normal(0, 3.0, (*shape, 3)), 0, 255)
    return cover, colour.astype(np.float32)


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Integer (x, y) points, clamped into the image."""
    pts = np.round(points).astype(int)
    pts[:, 0] = np.clip(pts[:, 0], 0, shape[1] - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, shape[0] - 1)
    return pts
