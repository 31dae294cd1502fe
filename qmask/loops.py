"""Ear loops beside the mask, in the canonical crop.

The segmenter seldom takes a mask's ear loops: a line one or two photo pixels wide that leaves the
mask's side and runs over the cheek to the ear. Left in place, it is the remnant seen most often on
real photos once the mask itself is gone. A loop leaves from one of the mask's side corners and ends
at the ear, whose place the face mesh gives, so it is looked for as the path between the two that
follows the strongest thin bright (white elastic) or dark (black loops) line, and kept only where
such a line runs along nearly all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.align import CANONICAL_EYES

# Mesh points by the ears (the face outline at the tragus), left and right in the crop.
EAR_POINTS = (234, 454)
EYE_DISTANCE = float(CANONICAL_EYES[1, 0] - CANONICAL_EYES[0, 0])
# Ridge scale in crop pixels: the loops of real photos are 2-5 crop pixels wide.
RIDGE_SIGMA = 1.5
# A path's pixels whose ridge strength is below this are where no line runs; a loop's path has a
# line along 80% of its part beyond the edit, at least `MIN_RIDGE` strong on average, over at least
# `MIN_LENGTH` pixels. Measured on the real photos and the frozen bench's (docs/results.md, "Ear
# loops"): the loops of real photos 60-140; the edges of hair, ears and jaws beside the mask reach as
# much, which the line's contrast with both its sides tells apart (`line_contrast`).
RIDGE_FLOOR = 4.0
MIN_RIDGE = 30.0
MIN_LENGTH = 12


@dataclass(frozen=True)
class LoopSearch:
    """Where a loop is looked for: from the mask's side corner on rows `rows` (shares of the mask
    region's height from its top) to the ear point moved by `to_ear` (eye distances; x away from
    the face)."""

    rows: tuple[float, float]
    to_ear: tuple[float, float]


SEARCHES = (
    LoopSearch(rows=(0.0, 0.3), to_ear=(0.1, -0.25)),  # to the top of the ear
    LoopSearch(rows=(0.5, 0.9), to_ear=(0.05, 0.45)),  # to the lobe
)


def ridge_strength(crop: np.ndarray, sigma: float = RIDGE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """How strongly a thin bright and a thin dark line run through each pixel of the RGB crop: the
    Hessian's eigenvalues of the blurred grey image, scale-normalised (grey levels)."""
    grey = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), sigma)
    dxx = cv2.Sobel(grey, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(grey, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(grey, cv2.CV_32F, 1, 1, ksize=3)
    root = np.sqrt((dxx - dyy) ** 2 + 4 * dxy**2)
    bright = np.maximum(-(dxx + dyy - root) / 2, 0) * sigma**2
    dark = np.maximum((dxx + dyy + root) / 2, 0) * sigma**2
    return bright, dark


def line_contrast(grey: np.ndarray, path: np.ndarray, bright: bool, offset: float = 3.0) -> np.ndarray:
    """How much brighter (`bright`) or darker than the pixels `offset` px to either side, across the
    path, each of its pixels is (grey levels; negative where it is not): a line stands out from both
    sides, while the edge of hair or of a jaw stands out from one side only."""
    points = path.astype(np.float32)
    along = np.gradient(cv2.GaussianBlur(points[:, None], (1, 5), 0)[:, 0], axis=0)
    length = np.maximum(np.linalg.norm(along, axis=1), 1e-6)
    normal = np.stack([-along[:, 1], along[:, 0]], 1) / length[:, None]

    def sample(at: np.ndarray) -> np.ndarray:
        return cv2.remap(grey, at[:, None, 0].copy(), at[:, None, 1].copy(), cv2.INTER_LINEAR)[:, 0]

    centre, one, other = sample(points), sample(points + offset * normal), sample(points - offset * normal)
    return centre - np.maximum(one, other) if bright else np.minimum(one, other) - centre


def strongest_path(
    strength: np.ndarray, start: np.ndarray, end: np.ndarray, band_end: float, band_start: float = 3.0
) -> np.ndarray | None:
    """The path (N, 2) of (x, y) pixels from `start` to `end` with the greatest total `strength`,
    one pixel per step along the axis the two are furthest apart on, moving at most two pixels
    across it per step, within a band around the straight line that widens from `band_start` to
    `band_end` pixels (the ear's end is the less sure); None where the two are under 5 px apart."""
    if abs(end[1] - start[1]) > abs(end[0] - start[0]):
        path = strongest_path(strength.T, start[::-1], end[::-1], band_end, band_start)
        return None if path is None else path[:, ::-1]
    x0, x1 = round(float(start[0])), round(float(end[0]))
    step = 1 if x1 >= x0 else -1
    xs = np.arange(x0, x1 + step, step)
    xs = xs[(xs >= 0) & (xs < strength.shape[1])]
    if len(xs) < 5:
        return None
    height = strength.shape[0]
    along = (xs - x0) / (x1 - x0)
    centre = start[1] + along * (end[1] - start[1])
    band = band_start + along * (band_end - band_start)
    ys = np.arange(height)
    allowed = np.abs(ys[None] - centre[:, None]) <= band[:, None]
    allowed[0] &= np.abs(ys - start[1]) <= 2  # it leaves from the corner
    gain = np.where(allowed, strength[:, xs].T, -np.inf)
    total = gain[0].copy()
    came_from = np.zeros((len(xs), height), int)
    for i in range(1, len(xs)):
        best, origin = np.full(height, -np.inf), np.zeros(height, int)
        for shift in range(-2, 3):
            moved = np.full(height, -np.inf)
            if shift >= 0:
                moved[shift:] = total[: height - shift]
            else:
                moved[:shift] = total[-shift:]
            better = moved > best
            best[better], origin[better] = moved[better], ys[better] - shift
        total, came_from[i] = best + gain[i], origin
    y = int(np.argmax(total))
    rows = [y]
    for i in range(len(xs) - 1, 0, -1):
        y = int(came_from[i, y])
        rows.append(y)
    return np.stack([xs, rows[::-1]], axis=1)


def ear_loops(
    crop: np.ndarray,
    mask_region: np.ndarray,
    erased: np.ndarray,
    crop_mesh: np.ndarray,
    min_contrast: float,
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) uint8: the ear loops found beside the mask, 5 px wide, where they lie outside the
    `erased` pixels (bool). A loop is looked for from each side corner of the segmenter's
    `mask_region` to the ear (`SEARCHES`, mesh points `EAR_POINTS` of `crop_mesh`, crop pixels), as
    a bright and as a dark line, and kept where its part outside the edit is a line (`MIN_RIDGE`,
    `MIN_LENGTH`) that stands out from both its sides by at least `min_contrast` grey levels (the
    median; at least 2 along 80% of it), all within the photo (`inside` > 0.5, away from its edge:
    the seam with the crop's mirrored surroundings is a line too)."""
    loops = np.zeros(mask_region.shape, np.uint8)
    if np.count_nonzero(mask_region.any(axis=1)) < 2:
        return loops
    photo = np.ones(mask_region.shape, bool)
    if inside is not None:
        photo = cv2.erode((inside > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    strengths = ridge_strength(crop)
    grey = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
    for side, ear in enumerate(EAR_POINTS):
        outward = 1 if side else -1
        for search in SEARCHES:
            start = _side_corner(mask_region, search.rows, side)
            if start is None:
                continue
            end = crop_mesh[ear] + np.array([outward * search.to_ear[0], search.to_ear[1]]) * EYE_DISTANCE
            if (end[0] - start[0]) * outward < 0.15 * EYE_DISTANCE:  # the mask reaches the ear
                continue
            best, best_contrast = None, min_contrast
            for strength in strengths:
                path = strongest_path(strength, start, end, 0.3 * EYE_DISTANCE)
                if path is None:
                    continue
                outside = ~erased[path[:, 1], path[:, 0]]
                beyond = path[outside]
                if len(beyond) < MIN_LENGTH or not photo[beyond[:, 1], beyond[:, 0]].all():
                    continue
                values = strength[beyond[:, 1], beyond[:, 0]]
                if (values > RIDGE_FLOOR).mean() < 0.8 or values.mean() < MIN_RIDGE:
                    continue
                contrast = line_contrast(grey, path, strength is strengths[0])[outside]
                if (contrast > 2).mean() >= 0.8 and np.median(contrast) >= best_contrast:
                    best, best_contrast = beyond, float(np.median(contrast))
            for x, y in best if best is not None else ():
                cv2.circle(loops, (int(x), int(y)), 2, 1, -1)
    return loops


def _side_corner(mask_region: np.ndarray, rows: tuple[float, float], side: int) -> np.ndarray | None:
    """(x, y) of the region's outermost pixel on the left (`side` 0) or right (1) within `rows`
    (shares of its height from its top); None where the region has none there."""
    filled = np.flatnonzero(mask_region.any(axis=1))
    top, height = filled[0], filled[-1] - filled[0]
    first, last = top + round(rows[0] * height), top + round(rows[1] * height)
    best = None
    for y in range(first, last + 1):
        xs = np.flatnonzero(mask_region[y])
        if len(xs) and (best is None or (xs[-1] > best[0] if side else xs[0] < best[0])):
            best = (xs[-1] if side else xs[0], y)
    return None if best is None else np.array(best, float)
