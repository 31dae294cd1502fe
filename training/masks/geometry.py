"""The shape of a drawn mask on the face: its fit, the grid from the nose to under the chin, the
surface attributes shading reads, and rasterizing the grid to coverage and attributes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.mesh_points import BETWEEN_EYES, CHIN, NOSE_TIP
from training.masks.face import EYE_CONTOURS, MOUTH_CORNERS, MOUTH_COVER, NOSE_COVER, Face


@dataclass
class Fit:
    """How a drawn mask sits on the face; lengths in inter-ocular distances (iod). Each style's
    ranges are its `fit` in styles.yaml."""

    height: float  # top edge at the nose: 0 low on the nose (tip still covered) .. 1 under the eyes
    drop: float  # top corners below the top edge at the nose
    peak_round: float  # 0.02 a sharp fold (KN95) .. 0.4 a soft nose wire
    top_exp: float  # 1 straight top edges, < 1 bulging up, > 1 sagging
    cup: bool  # N95: top and bottom are arcs that round into short sides
    below: float  # bottom edge below the chin
    corner: float  # bottom corners below the mouth corners
    bottom_exp: float  # 1 V-shaped (KN95) .. 3 a flat U
    ext: tuple[float, float]  # sides beyond the visible contour (left, right); ~0.2 reaches the ears
    half_width: float = 0.0  # if set, no wider than this from the nose (a cup has its own size)
    min_half_width: float = 0.0  # if set, at least this wide from the nose (a scarf round the neck)
    jag: float = 0.0  # bench masks: a jagged top edge


def _profile(t: np.ndarray, fit_round: float, exp: float, cup: bool) -> np.ndarray:
    """0 at the middle (t = 0) to 1 at the corners (t = 1): the shape of a top or bottom edge."""
    t = np.clip(t, 0.0, 1.0)
    if cup:
        return 1.0 - np.sqrt(np.clip(1.0 - t**exp, 0.0, 1.0))
    e = fit_round
    return ((np.sqrt(t**2 + e**2) - e) / (np.sqrt(1 + e**2) - e)) ** exp


def _tents(x: np.ndarray, pts: np.ndarray, offset: float, curve: float) -> np.ndarray:
    """(len(x), len(pts)): each point's height plus `offset`, bent by `curve` times the squared
    sideways distance from it (limits that an edge meets smoothly)."""
    return pts[None, :, 1] + offset + curve * (x[:, None] - pts[None, :, 0]) ** 2


def mask_grid(face: Face, fit: Fit, rng: np.random.Generator, nu: int = 20, nv: int = 10) -> np.ndarray:
    """The mask as a (nv+1, nu+1, 2) grid in the upright frame: rows top to bottom edge."""
    p, true, s = face.pts, face.true, face.iod
    nose_cover, mouth_cover = true[list(NOSE_COVER)], true[list(MOUTH_COVER)]
    y_tip = p[NOSE_TIP, 1]
    y_low = y_tip - 0.12 * (y_tip - p[BETWEEN_EYES, 1])
    y_high = p[list(EYE_CONTOURS), 1].max() + 0.14 * s
    y_top = y_low + fit.height * (y_high - y_low)
    y_mouth = p[list(MOUTH_CORNERS), 1].max()
    if fit.cup:
        # A cup is widest at its middle: the "corners" are where its outline turns downwards.
        y_tc = y_tip + (fit.drop + rng.normal(0, 0.02, 2)) * (y_mouth - y_tip)
        y_bc = y_tc + fit.corner * s
    else:
        y_tc = np.minimum(y_top + (fit.drop + rng.normal(0, 0.02, 2)) * s, y_mouth - 0.15 * s)
        y_bc = np.maximum(y_mouth + (fit.corner + rng.normal(0, 0.02, 2)) * s, y_tc + 0.35 * s)
    # The sides follow the visible contour (plus `ext`), no wider than `half_width` from the nose,
    # and never come in past the mouth corners and nostrils.
    x_nose = p[NOSE_TIP, 0]
    x_in = (
        min(nose_cover[:, 0].min(), mouth_cover[:, 0].min()) - 0.08 * s,
        max(nose_cover[:, 0].max(), mouth_cover[:, 0].max()) + 0.08 * s,
    )

    def side_x(ys: np.ndarray, end: int) -> np.ndarray:
        sign = 1 if end else -1
        xs = face.span(ys)[end] + sign * fit.ext[end] * s
        if fit.half_width:
            xs = x_nose + sign * np.minimum(sign * (xs - x_nose), fit.half_width * s)
        if fit.min_half_width:
            xs = x_nose + sign * np.maximum(sign * (xs - x_nose), fit.min_half_width * s)
        return x_nose + sign * np.maximum(sign * (xs - x_nose), sign * (x_in[end] - x_nose))

    tl, tr = np.array([side_x(y_tc[0], 0), y_tc[0]]), np.array([side_x(y_tc[1], 1), y_tc[1]])
    bl, br = np.array([side_x(y_bc[0], 0), y_bc[0]]), np.array([side_x(y_bc[1], 1), y_bc[1]])

    u = np.linspace(0.0, 1.0, nu + 1)

    # Top edge: from the corners up to the nose, where the nose wire or fold makes a peak.
    x = tl[0] + u * (tr[0] - tl[0])
    w = tr[0] - tl[0]
    x_peak = np.clip((p[195, 0] + p[NOSE_TIP, 0]) / 2, tl[0] + 0.2 * w, tr[0] - 0.2 * w)
    left = x < x_peak
    t = np.where(left, (x_peak - x) / (x_peak - tl[0]), (x - x_peak) / (tr[0] - x_peak))
    y_corner = np.where(left, tl[1], tr[1])
    y = y_top + _profile(t, fit.peak_round, fit.top_exp, fit.cup) * (y_corner - y_top)
    if fit.jag:
        knots = rng.normal(0.0, fit.jag * s, 8)
        y = y + np.interp(u, np.linspace(0, 1, 8), knots)
    # Smooth limits, so a clamped edge bends instead of stepping: above each nose point and below
    # each eye point, relaxing with the square of the sideways distance.
    y = np.minimum(y, _tents(x, nose_cover, -0.06 * s - 1.0, 4.0 / s).min(1))
    y = np.maximum(y, _tents(x, true[list(EYE_CONTOURS)], 0.1 * s + 1.0, -1.5 / s).max(1))
    top = np.stack([x, y], 1)

    # Bottom edge: from the corners down to under the chin, never above the jaw line.
    x = bl[0] + u * (br[0] - bl[0])
    w = br[0] - bl[0]
    x_chin = np.clip(p[CHIN, 0], bl[0] + 0.2 * w, br[0] - 0.2 * w)
    left = x < x_chin
    t = np.where(left, (x_chin - x) / (x_chin - bl[0]), (x - x_chin) / (br[0] - x_chin))
    y_corner = np.where(left, bl[1], br[1])
    y_bot = p[CHIN, 1] + fit.below * s
    y = y_bot + _profile(t, 0.05, fit.bottom_exp, fit.cup) * (y_corner - y_bot)
    if not fit.cup:  # a cup keeps its round shape; its lower corners sit on the cheeks
        y = np.maximum(y, face.jaw(x) + 0.02 * s)
    y = np.maximum(y, _tents(x, mouth_cover, 0.08 * s + 1.0, -4.0 / s).max(1))
    bottom = np.stack([x, y], 1)

    # Sides between the corners (which the clamps above may have moved).
    v = np.linspace(0.0, 1.0, nv + 1)
    sides = []
    for end, (top_end, bot_end) in enumerate(((top[0], bottom[0]), (top[-1], bottom[-1]))):
        ys = top_end[1] + v * (bot_end[1] - top_end[1])
        xs = side_x(ys, end)
        xs += (1 - v) * (top_end[0] - xs[0]) + v * (bot_end[0] - xs[-1])
        sides.append(np.stack([xs, ys], 1))
    left_side, right_side = sides

    # Coons patch: a smooth grid whose boundary is exactly the four edges.
    uu, vv = u[None, :, None], v[:, None, None]
    edges = (
        (1 - vv) * top[None] + vv * bottom[None] + (1 - uu) * left_side[:, None] + uu * right_side[:, None]
    )
    corners = (1 - uu) * (1 - vv) * top[0] + uu * (1 - vv) * top[-1]
    corners = corners + (1 - uu) * vv * bottom[0] + uu * vv * bottom[-1]
    return edges - corners


def surface_attrs(face: Face, grid: np.ndarray) -> np.ndarray:
    """Per grid vertex (nv+1, nu+1, 6): u, v, theta (the surface's sideways angle towards the
    camera, from a cylinder fitted to the head), the fabric coordinates tx, ty (iod) along the
    curved surface (tx = 0 on the nose line), and vf, the height between the straight lines that
    join the corners (pleats run along it, not along the nose's peak)."""
    nv1, nu1 = grid.shape[:2]
    x, y = grid[..., 0], grid[..., 1]
    xl, xr = face.span(y)
    mid, radius = (xl + xr) / 2, np.maximum((xr - xl) / 2 * 1.1, 0.3 * face.iod)
    theta = np.arcsin(np.clip((x - mid) / radius, -0.97, 0.97))
    nose_x = face.pts[NOSE_TIP, 0]
    theta_nose = np.arcsin(np.clip((nose_x - mid) / radius, -0.97, 0.97))
    tx = (theta - theta_nose) * radius / face.iod
    u = np.broadcast_to(np.linspace(0, 1, nu1)[None], (nv1, nu1))
    v = np.broadcast_to(np.linspace(0, 1, nv1)[:, None], (nv1, nu1))
    top = grid[0, 0, 1] + u * (grid[0, -1, 1] - grid[0, 0, 1])
    bottom = grid[-1, 0, 1] + u * (grid[-1, -1, 1] - grid[-1, 0, 1])
    vf = (y - top) / np.maximum(bottom - top, 1e-3)
    return np.stack([u, v, theta, tx, y / face.iod, vf], -1)


def _outline(grid: np.ndarray) -> np.ndarray:
    return np.concatenate([grid[0], grid[1:, -1], grid[-1, -2::-1], grid[-2:0:-1, 0]])


def rasterize(grid: np.ndarray, attrs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (h, w) and the attributes interpolated over the grid's triangles (h, w, K).

    Each pixel takes its triangle's affine interpolation; pixels at the anti-aliased rim that no
    triangle covers borrow a neighbour's, which extrapolates smoothly.
    """
    h, w = shape
    a8 = np.zeros(shape, np.uint8)
    cv2.fillPoly(a8, [np.round(_outline(grid) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    q = [(0, 0), (0, 1), (1, 1), (0, 0), (1, 1), (1, 0)]
    nv, nu = grid.shape[0] - 1, grid.shape[1] - 1
    tri_xy = np.stack([grid[dj : dj + nv, di : di + nu] for dj, di in q], 2).reshape(-1, 3, 2)
    tri_at = np.stack([attrs[dj : dj + nv, di : di + nu] for dj, di in q], 2).reshape(-1, 3, attrs.shape[-1])
    m = np.concatenate([tri_xy.transpose(0, 2, 1), np.ones((len(tri_xy), 1, 3))], 1)
    det = np.linalg.det(m)
    good = np.abs(det) > 1e-6
    affine = np.zeros((len(m), attrs.shape[-1], 3))
    affine[good] = tri_at[good].transpose(0, 2, 1) @ np.linalg.inv(m[good])
    ids = np.full(shape, -1, np.float32)  # float: OpenCV dilates no int32 images; ids stay exact
    fixed = np.round(tri_xy * 16).astype(np.int32)
    for k in np.flatnonzero(good):
        cv2.fillConvexPoly(ids, fixed[k], float(k), cv2.LINE_8, shift=4)
    for _ in range(2):
        ids = np.where(ids < 0, cv2.dilate(ids, np.ones((3, 3), np.uint8)), ids)
    # Only pixels the mask covers need attributes (the rest stay 0, and alpha 0 hides them).
    sel = np.flatnonzero(a8)
    a = affine.astype(np.float32)[np.maximum(ids.ravel()[sel], 0).astype(np.int32)]
    ys, xs = np.divmod(sel, w)
    out = np.zeros((h * w, attrs.shape[-1]), np.float32)
    out[sel] = (
        a[..., 0] * xs[:, None].astype(np.float32) + a[..., 1] * ys[:, None].astype(np.float32) + a[..., 2]
    )
    return a8.astype(np.float32) / 255.0, out.reshape(h, w, -1)


def grid_point(grid: np.ndarray, u: float, v: float) -> np.ndarray:
    """The grid's position at (u, v), bilinear between vertices."""
    nv, nu = grid.shape[0] - 1, grid.shape[1] - 1
    fu, fv = u * nu, v * nv
    i, j = min(int(fu), nu - 1), min(int(fv), nv - 1)
    du, dv = fu - i, fv - j
    return (
        grid[j, i] * (1 - du) * (1 - dv) + grid[j, i + 1] * du * (1 - dv)
        + grid[j + 1, i] * (1 - du) * dv + grid[j + 1, i + 1] * du * dv
    )  # fmt: skip
