"""Mask-shaped holes for training the inpainter, made from a face's mesh, no mask drawn.

The inpainter never sees a mask, only the hole the pipeline erases (the predicted mask region,
grown), so its training pairs are bare faces with holes shaped like that region: from the nose
bridge or the nose tip down to the chin or under it, cheek to cheek or out to the ears, with
jittered, irregular edges, and grown like the pipeline grows the region.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.align import CROP_SIZE, mesh_eyes, transform_points
from qmask.blend import mask_region
from qmask.mesh_points import CHIN, LOWER_OUTLINE, NOSE_LINE


@dataclass(frozen=True)
class HoleConfig:
    """Ranges the holes are drawn from, in eye distances unless said otherwise."""

    # The ranges follow the holes the pipeline erases. Model 2.1's holes on the real masked photos
    # cover a median 28% of the crop (90th percentile 40%), begin at row 95 (median) and most reach
    # the crop's bottom; model 2.0's inpainter was trained on holes of median 16%, rarely below row
    # 232, and it painted the larger holes greyer. These ranges give a median of 26%, from row 103 to 246.
    # Where the top edge crosses the nose: 0 the top of the bridge, 1 the tip, above 1 under it.
    top_on_nose: tuple[float, float] = (0.0, 0.9)
    # How far below the crossing the top edge meets the outline on the cheeks.
    side_drop: tuple[float, float] = (0.0, 0.35)
    # The sides pushed out (towards the ears) or in; the bottom pushed below the chin.
    widen: tuple[float, float] = (-0.05, 0.45)
    below_chin: tuple[float, float] = (0.0, 1.6)
    vertex_jitter: float = 0.03
    # Irregular edges: blur radius (px) and the strength of the noise added before thresholding.
    edge_blur_px: tuple[float, float] = (1.0, 5.0)
    edge_noise: tuple[float, float] = (0.0, 0.35)
    # Growth in crop pixels, as the pipeline grows the predicted region (5 px at full weight; the 2 px
    # feather beyond it stays unerased, as here).
    grow_px: tuple[float, float] = (5.0, 14.0)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _along(points: np.ndarray, t: float) -> np.ndarray:
    """The point at fraction t of a polyline's length (t > 1 continues its last segment)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    total = seg.sum()
    target = t * total
    if target >= total:
        direction = (points[-1] - points[-2]) / max(seg[-1], 1e-6)
        return points[-1] + direction * (target - total)
    i = int(np.searchsorted(np.cumsum(seg), target))
    before = np.concatenate([[0.0], np.cumsum(seg)])[i]
    return points[i] + (points[i + 1] - points[i]) * (target - before) / max(seg[i], 1e-6)


def mask_shaped_hole(
    mesh: np.ndarray, matrix: np.ndarray, rng: np.random.Generator, config: HoleConfig | None = None
) -> np.ndarray:
    """A (256, 256) float32 hole (1 inside) in the crop that `matrix` maps the photo onto."""
    cfg = config or HoleConfig()
    pts = transform_points(np.asarray(mesh, np.float64)[:, :2], matrix)
    eyes = transform_points(mesh_eyes(mesh), matrix)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    # The face's own frame: `across` along the eye line, `down` towards the chin.
    across = (eyes[1] - eyes[0]) / iod
    down = np.array([-across[1], across[0]])
    if np.dot(down, pts[CHIN] - eyes.mean(axis=0)) < 0:
        down = -down
    top = _along(pts[list(NOSE_LINE)], _uniform(rng, cfg.top_on_nose))
    outline = pts[list(LOWER_OUTLINE)]
    centre = outline.mean(axis=0)
    # Push the outline sideways (out to the ears or in) and below the chin.
    side = (outline - centre) @ across
    depth = (outline - top) @ down
    chin_weight = np.clip(depth / max(depth.max(), 1e-6), 0, 1) ** 2
    outline = (
        outline
        + np.outer(side / max(np.abs(side).max(), 1e-6), across) * _uniform(rng, cfg.widen) * iod
        + np.outer(chin_weight, down) * _uniform(rng, cfg.below_chin) * iod
    )
    # Keep the outline below the line where the top edge meets the cheeks.
    cut = float((top @ down) + _uniform(rng, cfg.side_drop) * iod)
    below = outline[outline @ down >= cut]
    if len(below) < 3:
        below = outline
    # The top edge: from the outline's last point over the nose crossing back to its first.
    ends = below[[-1, 0]]
    sag = rng.uniform(-0.1, 0.15) * iod
    arc = [
        (1 - s) ** 2 * ends[0] + 2 * s * (1 - s) * (top - down * sag) + s**2 * ends[1]
        for s in np.linspace(0.1, 0.9, 7)
    ]
    polygon = np.concatenate([below, np.array(arc)])
    polygon += rng.normal(0, cfg.vertex_jitter * iod, polygon.shape)
    hole = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    cv2.fillPoly(hole, [np.rint(polygon * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
    # Irregular edges: blur, add smooth noise, threshold.
    hole = cv2.GaussianBlur(hole, (0, 0), _uniform(rng, cfg.edge_blur_px))
    noise = cv2.GaussianBlur(rng.normal(0, 1, hole.shape).astype(np.float32), (0, 0), 6)
    hole += noise / max(float(noise.std()), 1e-6) * _uniform(rng, cfg.edge_noise) * 0.5
    # The noise leaves islands anywhere in the crop; the pipeline keeps only the solid region that
    # reaches the mouth, so do the same.
    hard = mask_region(hole)
    grow = _uniform(rng, cfg.grow_px)
    if hard.any():
        # Within `grow` of the region, where the pipeline's blend weight is 1 (`blend_weight`).
        hard = (cv2.distanceTransform(1 - hard, cv2.DIST_L2, 5) <= grow).astype(np.uint8)
    return hard.astype(np.float32)
