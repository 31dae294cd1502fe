"""Synthetic face masks drawn on unmasked faces: the inputs of the generator's training pairs.

The generator never sees a real mask in training, so how closely these look like photographed masks
decides how well it removes real ones (a model trained on flat, naive masks leaves ghosts of black
cloth masks, valved N95s and masks that reach the ears or sit high on the nose). Two sources:

* drawn masks: surgical, N95, KN95, cloth (plain, printed, photo textures) and a flat "bench" style,
  shaped on the face mesh from the nose to under the chin across the visible face contour, shaded
  with a lighting direction and exposure read from the photo, with folds, seams, loops and valves;
* template masks: the RGBA pictures of `mask-templates/`, warped onto the face by a homography
  between six fitting points on the template and on the face (see `fitting_points`).

`MaskRenderer.render` returns the composite and the exact coverage: image = alpha * mask_rgb +
(1 - alpha) * input, so pixels with alpha == 0 keep their input bytes.

Preview a grid of masked faces:

    python -m training.masks --faces ../shared/data/train/utkface --landmarks cache/utkface.npz \
        --split train --out out/mask_preview_train.png
"""

from __future__ import annotations

import argparse
import configparser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# MediaPipe face-mesh indices.
NOSE_BRIDGE = (168, 6, 197, 195, 5)
NOSE_TIP = 1
CHIN = 152
MOUTH_CORNERS = (61, 291)
EAR_SIDES = (234, 454)
EYE_CORNERS = ((33, 133), (362, 263))
# Both lids of both eyes: the top edge of a mask stays below all of them.
EYE_CONTOURS = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
                362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)  # fmt: skip
# Points every mask covers (a real mask hides the nostrils and the mouth): nose tip, subnasale,
# nostril wings, then the lips and mouth corners.
NOSE_COVER = (1, 4, 2, 98, 327, 79, 309, 20, 250)
MOUTH_COVER = (0, 17, 13, 14, 61, 291)
# Cheek points left and right of the nose, read to tell which side the light comes from.
CHEEKS = ((50, 101, 36, 205, 187, 123, 117), (280, 330, 266, 425, 411, 352, 346))

DRAWN_KINDS = (
    "surgical",
    "n95",
    "kn95",
    "cloth",
    "cloth_printed",
    "cloth_photo",
    "cloth_graphic",
    "bench",
    "respirator",
    "scarf",
)
# How often each drawn style is picked. Dark cloth, valved N95s and masks reaching the ears are
# what a model trained on naive masks fails on, so cloth and respirators get a large share.
# Elastomeric respirators teach that a mask may stick out past the face's outline (cartridges).
DRAWN_WEIGHTS = {
    "surgical": 0.25,
    "n95": 0.12,
    "kn95": 0.12,
    "cloth": 0.18,
    "cloth_printed": 0.10,
    "cloth_photo": 0.08,
    # One big graphic over the whole mask: a printed mouth or smile, a skull, lettering. Real masks
    # show these; a model trained on plain fabric took a printed mouth for a face and left it.
    "cloth_graphic": 0.1,
    "bench": 0.07,
    "respirator": 0.08,
    # Scarves and snoods: soft, wide (out to the ears and past them) and down over the neck; a
    # model trained without them left them on.
    "scarf": 0.08,
}
TEMPLATE_SHARE = 0.25  # of the train split's masks; the rest are drawn
TRAIN_TEMPLATES = ("surgical", "surgical_blue", "surgical_green", "N95", "cloth")
HELDOUT_TEMPLATES = ("KN95", "gas")
TRAIN_TEXTURES = ("check", "floral")
HELDOUT_TEXTURES = ("fruits", "others")
# Held-out split: KN95 and gas templates as they are, or the cloth template printed with a
# held-out texture (probabilities).
HELDOUT_WEIGHTS = {"KN95": 0.4, "gas": 0.25, "cloth+texture": 0.35}
# Faces turned further than this (degrees) get the template drawn for turned faces.
TURNED_DEG = 13.0
TEMPLATE_MAX_SIDE = 420  # templates are pictures up to 1,800 px; faces are ~200 px
TEXTURE_MAX_SIDE = 384

TEXTURE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class RenderedMask:
    """A face with a synthetic mask and the mask's exact coverage."""

    image: np.ndarray  # HxWx3 uint8 RGB, the face with the mask drawn
    alpha: np.ndarray  # HxW float32 in [0, 1]: how much of the mask covers each pixel
    kind: str  # the style, e.g. "surgical", "cloth_photo:floral/floral_3.jpg", "template:surgical_blue"


@dataclass
class _Layer:
    """The mask as premultiplied colour and coverage over a region of interest at (x0, y0)."""

    x0: int
    y0: int
    color: np.ndarray  # (h, w, 3) float32, premultiplied by alpha, 0..255
    alpha: np.ndarray  # (h, w) float32

    @staticmethod
    def empty() -> _Layer:
        return _Layer(0, 0, np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32))

    def over(self, below: _Layer) -> _Layer:
        """Put this layer over `below`, whose region contains this one's; returns `below`, changed."""
        h, w = self.alpha.shape
        sl = np.s_[self.y0 - below.y0 : self.y0 - below.y0 + h, self.x0 - below.x0 : self.x0 - below.x0 + w]
        keep = 1.0 - self.alpha
        below.color[sl] = self.color + below.color[sl] * keep[..., None]
        below.alpha[sl] = self.alpha + below.alpha[sl] * keep
        return below


@dataclass
class _Light:
    """What the photo says about its light, so the mask matches the face's exposure and shading."""

    exposure: float  # a white mask's brightness relative to 255
    cast: np.ndarray  # (3,) per-channel colour of the light
    direction: tuple[float, float, float]  # unit vector towards the light: x right, y down, z to the camera
    blur: float  # sigma in pixels of the photo's softness, applied to the mask
    noise: float  # sensor noise in grey levels


# ----------------------------------------------------------------------------------------------
# Face geometry


class _Face:
    """The mesh in an upright frame: eye line horizontal, origin at the nose bridge, y down.

    `true` is the mesh as detected; `pts` is the copy the mask is shaped on, which may be slightly
    shifted, rotated and scaled to imitate a mask that sits a bit off. Safety limits (eyes stay
    clear, nose and mouth covered) always use `true`.
    """

    def __init__(self, mesh: np.ndarray, misplace: np.ndarray | None = None) -> None:
        mesh = np.asarray(mesh, dtype=np.float64)[:, :2]
        eyes = np.array([(mesh[i] + mesh[j]) / 2 for i, j in EYE_CORNERS])
        d = eyes[1] - eyes[0]
        self.iod = max(float(np.hypot(*d)), 1.0)
        c, s = d / self.iod
        self.rot = np.array([[c, -s], [s, c]])  # upright -> image
        self.origin = mesh[NOSE_BRIDGE[0]].copy()
        self.true = (mesh - self.origin) @ self.rot
        self.pts = self.true
        if misplace is not None:
            # (angle radians, dx, dy in iod, scale) about the nose tip
            angle, dx, dy, scale = misplace
            ca, sa = np.cos(angle) * scale, np.sin(angle) * scale
            pivot = self.true[NOSE_TIP]
            self.pts = (
                (self.true - pivot) @ np.array([[ca, sa], [-sa, ca]]) + pivot + np.array([dx, dy]) * self.iod
            )
        hull = cv2.convexHull(self.pts.astype(np.float32))[:, 0].astype(np.float64)
        self._edges = (hull, np.roll(hull, -1, axis=0))
        self.top, self.bottom = hull[:, 1].min(), hull[:, 1].max()
        eye_mid = (self.true[33] + self.true[133] + self.true[362] + self.true[263]) / 4
        # The nose tip moves about 0.75 iod sideways per radian of yaw (measured on UTKFace).
        r = (self.true[NOSE_TIP, 0] - eye_mid[0]) / self.iod
        self.yaw = float(np.degrees(np.arcsin(np.clip(r / 0.75, -1.0, 1.0))))  # + nose to image right

    def to_image(self, p: np.ndarray) -> np.ndarray:
        return p @ self.rot.T + self.origin

    def span(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left and right ends of the visible face (the mesh's convex hull) at heights y."""
        (p0, p1), shape = self._edges, np.shape(y)
        y = np.clip(np.ravel(y), self.top + 1e-6, self.bottom - 1e-6)[:, None]
        dy = p1[:, 1] - p0[:, 1]
        t = (y - p0[:, 1]) / np.where(dy == 0, 1e-12, dy)
        ok = (t >= 0) & (t <= 1) & (dy != 0)
        x = p0[:, 0] + t * (p1[:, 0] - p0[:, 0])
        return np.where(ok, x, np.inf).min(1).reshape(shape), np.where(ok, x, -np.inf).max(1).reshape(shape)

    def jaw(self, x: np.ndarray) -> np.ndarray:
        """Lowest point of the visible face at each x (-inf outside the face)."""
        p0, p1 = self._edges
        dx = p1[:, 0] - p0[:, 0]
        t = (np.asarray(x)[:, None] - p0[:, 0]) / np.where(dx == 0, 1e-12, dx)
        ok = (t >= 0) & (t <= 1) & (dx != 0)
        return np.where(ok, p0[:, 1] + t * (p1[:, 1] - p0[:, 1]), -np.inf).max(1)

    def ray_exit(self, start: np.ndarray, through: np.ndarray) -> np.ndarray:
        """Where the ray from `start` through `through` leaves the visible face."""
        p0, p1 = self._edges
        d, e = through - start, p1 - p0
        den = d[0] * e[:, 1] - d[1] * e[:, 0]
        den = np.where(den == 0, 1e-12, den)
        w = p0 - start
        t = (w[:, 0] * e[:, 1] - w[:, 1] * e[:, 0]) / den
        s = (w[:, 0] * d[1] - w[:, 1] * d[0]) / den
        ok = (s >= 0) & (s <= 1) & (t > 0)
        return start + d * (t[ok].max() if ok.any() else 1.0)


def fitting_points(mesh: np.ndarray) -> np.ndarray:
    """The six template fitting points a..f on the face (6, 2), image pixels.

    b is the middle of the nose bridge; a, c where a horizontal line at the nose tip meets the
    visible face contour; d, f the same at the bottom lip; e where the line from b through the
    lips leaves the face below the chin. "Horizontal" is along the eye line, so tilted heads work.
    """
    face = _Face(mesh)
    p = face.true
    b = (p[197] + p[195]) / 2
    y_tip, y_lip = p[NOSE_TIP, 1], p[17, 1]
    (a_x, c_x), (d_x, f_x) = face.span(np.array(y_tip)), face.span(np.array(y_lip))
    e = face.ray_exit(b, (p[13] + p[14]) / 2)
    pts = np.array([[a_x, y_tip], b, [c_x, y_tip], [d_x, y_lip], e, [f_x, y_lip]])
    return face.to_image(pts).astype(np.float32)


@dataclass
class _Fit:
    """How a drawn mask sits on the face; lengths in inter-ocular distances (iod)."""

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


def _geometry(face: _Face, fit: _Fit, rng: np.random.Generator, nu: int = 20, nv: int = 10) -> np.ndarray:
    """The mask as a (nv+1, nu+1, 2) grid in the upright frame: rows top to bottom edge."""
    p, true, s = face.pts, face.true, face.iod
    nose_cover, mouth_cover = true[list(NOSE_COVER)], true[list(MOUTH_COVER)]
    y_tip = p[NOSE_TIP, 1]
    y_low = y_tip - 0.12 * (y_tip - p[NOSE_BRIDGE[0], 1])
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


def _surface(face: _Face, grid: np.ndarray) -> np.ndarray:
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


def _rasterize(grid: np.ndarray, attrs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
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


def _grid_point(grid: np.ndarray, u: float, v: float) -> np.ndarray:
    """The grid's position at (u, v), bilinear between vertices."""
    nv, nu = grid.shape[0] - 1, grid.shape[1] - 1
    fu, fv = u * nu, v * nv
    i, j = min(int(fu), nu - 1), min(int(fv), nv - 1)
    du, dv = fu - i, fv - j
    return (
        grid[j, i] * (1 - du) * (1 - dv) + grid[j, i + 1] * du * (1 - dv)
        + grid[j + 1, i] * (1 - du) * dv + grid[j + 1, i + 1] * du * dv
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Photo light


def _read_light(rgb: np.ndarray, face: _Face, rng: np.random.Generator) -> _Light:
    """Exposure, colour cast and the side the light comes from, measured around the face."""
    h, w = rgb.shape[:2]
    mesh = face.to_image(face.true)
    x0, y0 = np.clip(mesh.min(0) - face.iod * 0.3, 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(mesh.max(0) + face.iod * 0.3, 1, [w, h]).astype(int)
    region = rgb[y0:y1:2, x0:x1:2].reshape(-1, 3).astype(np.float32)
    if len(region) == 0:
        region = rgb.reshape(-1, 3).astype(np.float32)
    lum = region.mean(1)
    exposure = float(np.clip(np.percentile(lum, 97) / 235.0, 0.35, 1.08)) * rng.uniform(0.88, 1.06)
    mean = region.mean(0) + 1.0
    cast = np.clip(1.0 + 0.3 * (mean / mean.mean() - 1.0), 0.88, 1.12) * rng.uniform(0.97, 1.03, 3)
    sides = []
    for idx in CHEEKS:
        pts = np.clip(np.round(mesh[list(idx)]).astype(int), 0, [w - 1, h - 1])
        sides.append(rgb[pts[:, 1], pts[:, 0]].astype(np.float32).mean() + 1.0)
    # Brighter image-right cheek: light from the right (in the upright frame).
    lx = float(np.clip((sides[1] - sides[0]) / (sides[1] + sides[0]) * 4.0, -0.8, 0.8)) + rng.normal(0, 0.15)
    direction = np.array([lx, rng.uniform(-0.6, 0.0), 1.0])
    return _Light(
        exposure=exposure,
        cast=cast.astype(np.float32),
        direction=tuple(float(c) for c in direction / np.linalg.norm(direction)),
        blur=_softness(rgb, mesh, face.iod) * rng.uniform(0.85, 1.1),
        noise=rng.uniform(0.5, 2.5),
    )


def _softness(rgb: np.ndarray, mesh: np.ndarray, iod: float) -> float:
    """Blur sigma (pixels) that makes a sharp edge as soft as the photo's, measured on the eyes.

    Blurring by 1 more pixel keeps a fraction r = s / sqrt(s^2 + 1) of the gradients of an edge
    already blurred by s. Eyes are never soft by nature, but neither are they perfect steps, so
    the estimate is scaled down (sharp photos measure ~0.6, clearly blurry ones 2 and more).
    """
    h, w = rgb.shape[:2]
    eyes = mesh[list(EYE_CONTOURS)]
    x0, y0 = np.clip(eyes.min(0) - 0.15 * iod, 0, [w, h]).astype(int)
    x1, y1 = np.clip(eyes.max(0) + 0.15 * iod, 0, [w, h]).astype(int)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.6
    grey = rgb[y0:y1, x0:x1].astype(np.float32).mean(-1)

    def gradient(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

    r = min(gradient(cv2.GaussianBlur(grey, (0, 0), 1.0)) / max(gradient(grey), 1e-3), 0.97)
    return float(np.clip(0.85 * r / np.sqrt(1 - r * r) - 0.25, 0.3, 2.5))


# ----------------------------------------------------------------------------------------------
# Materials


@dataclass
class _Material:
    """How a drawn mask's surface reflects light and what its fabric shows."""

    ambient: float = 0.5
    spec: float = 0.05  # strength of specular highlights
    shininess: float = 12.0
    curve: float = 0.9  # radians the surface turns from the top edge to the bottom edge
    nose_ridge: float = 0.5  # radians the fabric turns on the flanks of the nose
    relief: float = 0.0  # depth (iod) of the sag between nose tip and chin
    crease: float = 0.0  # KN95: the two halves are flat panels meeting at a centre fold
    seam: float = 0.0  # darkness of a centre seam line
    pleats: int = 0
    pleat_depth: float = 0.0
    binding: float = 0.0  # surgical: side bindings and hems, their brightness difference
    emboss: float = 0.0  # KN95: dotted heat-sealed border
    rim: float = 0.0  # N95: rolled cup edge
    nose_clip: float = 0.0  # N95: the metal strip across the top, its darkness
    grain: float = 0.03  # fine fibre noise, relative brightness
    wrinkle: float = 0.0  # low-frequency wrinkles
    edge_dark: float = 0.15  # darkening where the fabric turns away at the edges
    flat: bool = False  # bench masks: no lighting model


class MaskRenderer:
    """Draws random synthetic masks on faces (one renderer per worker; it caches pictures)."""

    def __init__(
        self,
        templates_dir: Path | None = None,
        split: str = "train",
        print_faces: Callable[[np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        """`templates_dir`: the `mask-templates` folder (masks.cfg, templates/, textures/), or None for
        drawn masks only. `split` "train" uses drawn masks and the templates and textures allowed in
        training; "heldout" only the held-out ones (KN95 and gas templates, fruits and others textures).
        `print_faces(rng)` gives a random face photo (RGB) whose mouth a graphic mask may show."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
        if split == "heldout" and templates_dir is None:
            raise ValueError("the heldout split needs templates_dir")
        self.split = split
        self.print_faces = print_faces
        self.templates_dir = Path(templates_dir) if templates_dir is not None else None
        self._templates: dict[str, tuple[Path, np.ndarray]] = {}
        self._textures: dict[str, list[Path]] = {}
        if self.templates_dir is not None:
            self._templates = _read_config(self.templates_dir)
            folders = TRAIN_TEXTURES if split == "train" else HELDOUT_TEXTURES
            for folder in folders:
                files = sorted((self.templates_dir / "textures" / folder).iterdir())
                self._textures[folder] = [f for f in files if f.suffix.lower() in TEXTURE_SUFFIXES]
        self._cache: dict[str, list[np.ndarray] | tuple[np.ndarray, np.ndarray]] = {}
        # Fixed noise fields (tiling), sampled at random offsets: fibre grain and smooth wrinkles.
        noise_rng = np.random.default_rng(20240611)
        grain = cv2.GaussianBlur(noise_rng.normal(0, 1, (128, 128)).astype(np.float32), (0, 0), 0.6)
        # Blurred as a 3x3 tiling and cropped, so it wraps seamlessly.
        smooth = cv2.GaussianBlur(
            np.tile(noise_rng.normal(0, 1, (128, 128)).astype(np.float32), (3, 3)), (0, 0), 7
        )
        smooth = smooth[128:256, 128:256]
        self._grain = grain / grain.std()
        self._smooth = smooth / smooth.std()
        self._sensor = noise_rng.standard_normal((256, 256, 3), dtype=np.float32)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The styles `render` may pick in this split ("template" picks any allowed template)."""
        if self.split == "heldout":
            return ("template",)
        drawn = tuple(k for k in DRAWN_KINDS if k != "cloth_photo" or self._textures)
        return drawn + (("template",) if self._templates else ())

    def render(
        self, rgb: np.ndarray, mesh: np.ndarray, rng: np.random.Generator, kind: str | None = None
    ) -> RenderedMask:
        """Draw one random mask on the face with this (478, 2) mesh.

        `kind` forces a style: one of `kinds`, or "template:NAME" for one template family (e.g.
        "template:surgical_blue"; the turned-face variant is still chosen from the face's yaw).
        """
        kind = kind or self._pick_kind(rng)
        style, _, name = kind.partition(":")
        if style not in self.kinds:
            raise ValueError(f"kind {kind!r} is not available in the {self.split} split: {self.kinds}")
        true_face = _Face(mesh)
        light = _read_light(rgb, true_face, rng)
        if style == "template":
            layer, kind = self._template_layer(true_face, name, light, rng, rgb.shape[:2])
        else:
            misplace = np.array(
                [
                    np.radians(rng.normal(0, 2.0)),
                    rng.normal(0, 0.03),
                    rng.normal(0, 0.03),
                    rng.uniform(0.96, 1.05),
                ]
            )
            layer, kind = self._drawn_layer(style, _Face(mesh, misplace), light, rng, rgb.shape[:2])
        image, alpha = _composite(rgb, layer, light, self._sensor, rng)
        return RenderedMask(image=image, alpha=alpha, kind=kind)

    def _pick_kind(self, rng: np.random.Generator) -> str:
        if self.split == "heldout" or (self._templates and rng.random() < TEMPLATE_SHARE):
            return "template"
        kinds = [k for k in self.kinds if k != "template"]
        weights = np.array([DRAWN_WEIGHTS[k] for k in kinds])
        return str(rng.choice(kinds, p=weights / weights.sum()))

    # ------------------------------------------------------------------------------------------
    # Drawn masks

    def _drawn_layer(
        self, style: str, face: _Face, light: _Light, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[_Layer, str]:
        fit, mat, holder = _style_fit(style, face, rng)
        grid = _geometry(face, fit, rng)
        img_grid = face.to_image(grid)
        pad = 4 + 3 * light.blur
        box = _box(img_grid.reshape(-1, 2), pad, shape)
        if box is None:
            return _Layer.empty(), style
        # The body is rendered on its own tight box; straps are cheap and may reach much further.
        x0, y0, x1, y1 = box
        offset = np.array([x0, y0])
        alpha, attrs = _rasterize(img_grid - offset, _surface(face, grid), (y1 - y0, x1 - x0))
        base, kind = self._fabric(style, attrs, face, rng)
        color = _shade(base, attrs, alpha, mat, light, face, (self._grain, self._smooth), rng)
        if style in ("n95", "kn95") and rng.random() < (0.45 if style == "n95" else 0.15):
            _valve(color, attrs, grid, face, light, offset, rng)
        if style == "respirator" and rng.random() < 0.75:  # exhalation valve at the chin
            _valve(color, attrs, grid, face, light, offset, rng, at=(0.5, rng.uniform(0.62, 0.72)))
        # Bottom to top: straps, cartridges behind the body, the body, cartridges in front.
        under, over = [], []
        fabric = base.reshape(-1, 3).mean(0) if holder == "fabric_loops" else None
        straps = _straps(face, grid, holder, fabric, rng) if holder else None
        if straps is not None:
            lines, width, strap_color = straps
            box = _box(np.concatenate([img_grid.reshape(-1, 2), *lines]), pad, shape) or box
            under.append(_strap_layer(lines, width, strap_color * light.exposure * light.cast, box))
        if style == "respirator":
            fields = (self._grain, self._smooth)
            behind, over = _cartridges(face, grid, base[0, 0], light, fields, rng, shape)
            under += behind
        return _stack([*under, _Layer(x0, y0, color * alpha[..., None], alpha), *over]), kind

    def _fabric(
        self, style: str, attrs: np.ndarray, face: _Face, rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """The mask's base colour (h, w, 3) before lighting, and the kind string."""
        tx, ty = attrs[..., 3], attrs[..., 4]
        shape = tx.shape
        if style == "surgical":
            color = _pick(rng, SURGICAL_COLORS)
        elif style == "n95":
            color = _pick(rng, N95_COLORS)
        elif style == "kn95":
            color = _pick(rng, KN95_COLORS)
        elif style == "cloth" or (style == "scarf" and rng.random() < 0.6):
            color = _pick(rng, CLOTH_COLORS)
        elif style == "scarf":
            return _print_pattern(tx, ty, face.iod, self._smooth, rng), style
        elif style == "bench":
            color = _pick(rng, BENCH_COLORS)
        elif style == "respirator":
            color = _pick(rng, RESPIRATOR_COLORS)
        elif style == "cloth_printed":
            return _print_pattern(tx, ty, face.iod, self._smooth, rng), style
        elif style == "cloth_graphic":
            graphic, what = _graphic(rng, self.print_faces)
            # The graphic spans the mask: u, v run 0..1 across it.
            gx = (attrs[..., 0] * (graphic.shape[1] - 1)).astype(np.float32)
            gy = (attrs[..., 1] * (graphic.shape[0] - 1)).astype(np.float32)
            return cv2.remap(
                graphic, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            ), f"{style}:{what}"
        else:  # cloth_photo
            name, path = self._random_texture(rng)
            return _sample_texture(self._texture(path), tx, ty, face.iod, rng), f"{style}:{name}"
        jitter = rng.uniform(0.94, 1.05) * rng.uniform(0.97, 1.03, 3)
        return np.broadcast_to(np.clip(color * jitter, 0, 255).astype(np.float32), (*shape, 3)), style

    # ------------------------------------------------------------------------------------------
    # Templates

    def _template_layer(
        self, face: _Face, family: str, light: _Light, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[_Layer, str]:
        texture = None
        if self.split == "heldout":
            allowed = HELDOUT_TEMPLATES
            if not family:
                family = str(rng.choice(list(HELDOUT_WEIGHTS), p=list(HELDOUT_WEIGHTS.values())))
            if family == "cloth+texture":
                family, texture = "cloth", self._random_texture(rng)
                allowed = ("cloth",)
        else:
            allowed = TRAIN_TEMPLATES
            family = family or str(rng.choice(TRAIN_TEMPLATES))
            if family == "cloth" and self._textures and rng.random() < 0.5:
                texture = self._random_texture(rng)
        if family not in allowed:
            raise ValueError(f"template {family!r} is not in the {self.split} split: {allowed}")
        name = family
        if face.yaw < -TURNED_DEG and f"{family}_left" in self._templates:
            name = f"{family}_left"
        elif face.yaw > TURNED_DEG and f"{family}_right" in self._templates:
            name = f"{family}_right"
        rgba, src = self._template(name)
        kind = f"template:{name}" + (f"+{texture[0]}" if texture else "")
        homography = _fit_template(rgba[..., 3], src, face, rng)
        if homography is None:
            return _Layer.empty(), kind
        th, tw = rgba.shape[:2]
        corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float64)
        box = _box(cv2.perspectiveTransform(corners[None], homography)[0], 4 + 3 * light.blur, shape)
        if box is None:
            return _Layer.empty(), kind
        x0, y0, x1, y1 = box
        to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ homography
        warped = cv2.warpPerspective(rgba, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
        alpha = np.clip(warped[..., 3], 0, 1)
        color = warped[..., :3] / np.maximum(alpha, 1e-4)[..., None]
        if texture is not None:
            # Print the texture on the mask, keeping the picture's own folds and shading.
            lum = color.mean(-1, keepdims=True)
            ref = (lum[..., 0] * alpha).sum() / max(alpha.sum(), 1e-4)
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            tex = _sample_texture(self._texture(texture[1]), xs / face.iod, ys / face.iod, face.iod, rng)
            color = tex * np.clip(lum / max(ref, 1.0), 0.3, 1.6) ** 0.8
        # Light the picture like the photo: exposure, colour cast and a gradient along the light.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rel = ((xs - face.origin[0]) * face.rot[0, 0] + (ys - face.origin[1]) * face.rot[1, 0]) / face.iod
        grad = 1.0 + 0.12 * light.direction[0] * np.clip(rel, -1.2, 1.2)
        color = color * (grad * light.exposure)[..., None] * light.cast
        color = np.clip(color, 0, 255).astype(np.float32)
        return _Layer(x0, y0, color * alpha[..., None], alpha.astype(np.float32)), kind

    def _random_texture(self, rng: np.random.Generator) -> tuple[str, Path]:
        folder = str(rng.choice(sorted(self._textures)))
        path = self._textures[folder][rng.integers(len(self._textures[folder]))]
        return f"{folder}/{path.name}", path

    def _template(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Premultiplied RGBA float32 (colour 0..255, alpha 0..1), downscaled, and its fitting points."""
        key = f"template:{name}"
        if key not in self._cache:
            path, points = self._templates[name]
            rgba = np.asarray(Image.open(path).convert("RGBA")).astype(np.float32)
            rgba[..., 3] /= 255.0
            rgba[..., :3] *= rgba[..., 3:]  # premultiplied, so resizing and warping keep clean edges
            scale = min(1.0, TEMPLATE_MAX_SIDE / max(rgba.shape[:2]))
            if scale < 1:
                size = (round(rgba.shape[1] * scale), round(rgba.shape[0] * scale))
                rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
            self._cache[key] = (rgba, points * scale)
        return self._cache[key]

    def _texture(self, path: Path) -> list[np.ndarray]:
        """The texture (RGB float32) and its halvings down to ~16 px."""
        key = f"texture:{path}"
        if key not in self._cache:
            image = Image.open(path)
            if image.mode in ("RGBA", "LA", "P"):
                # Transparent parts of a print are the fabric's white.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            rgb = np.asarray(image.convert("RGB")).astype(np.float32)
            scale = min(1.0, TEXTURE_MAX_SIDE / max(rgb.shape[:2]))
            if scale < 1:
                size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            pyramid = [rgb]
            while min(pyramid[-1].shape[:2]) >= 32:
                pyramid.append(cv2.pyrDown(pyramid[-1]))
            self._cache[key] = pyramid
        return self._cache[key]


def _fit_template(
    alpha: np.ndarray, src: np.ndarray, face: _Face, rng: np.random.Generator
) -> np.ndarray | None:
    """Homography from template to face, slightly off as real masks sit, that keeps the eyes clear
    and covers the nose tip and the mouth (some pictures are tall, e.g. KN95 and gas masks)."""
    mesh = face.to_image(face.true)
    ring = np.array([[0, 0], [3, 0], [-3, 0], [0, 3], [0, -3]], np.float64)  # pixels around each point
    eyes = (mesh[list(EYE_CONTOURS)][:, None] + ring).reshape(-1, 2)
    cover = (mesh[[NOSE_TIP, 13, 14]][:, None] + ring).reshape(-1, 2)
    base = fitting_points(mesh).astype(np.float64)
    down = face.rot[:, 1] * face.iod  # the face's "down" in the image, one iod long
    homography = None
    for attempt in range(8):
        if attempt < 4:  # a common shift and small independent offsets
            dst = base + rng.normal(0, 0.03, 2) * face.iod + rng.normal(0, 0.025, (6, 2)) * face.iod
        else:  # lower and lower, for pictures that would reach the eyes
            dst = base + down * 0.06 * (attempt - 3)
        homography, _ = cv2.findHomography(src, dst, 0)
        if homography is None:
            continue
        at = cv2.perspectiveTransform(np.concatenate([eyes, cover])[None], np.linalg.inv(homography))[0]
        coverage = cv2.remap(
            alpha, at[:, :1].astype(np.float32), at[:, 1:].astype(np.float32), cv2.INTER_LINEAR
        )
        if coverage[: len(eyes)].max() == 0 and coverage[len(eyes) :].min() > 0.99:
            break
    return homography


def _read_config(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Template name -> (picture, fitting points a..f (6, 2)) from masks.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(root / "masks.cfg")
    out = {}
    for name in cfg.sections():
        section = cfg[name]
        if "template" not in section:
            continue
        points = np.array([[float(c) for c in section[f"mask_{k}"].split(",")] for k in "abcdef"])
        out[name] = (root / "templates" / Path(section["template"]).name, points)
    return out


# ----------------------------------------------------------------------------------------------
# Styles

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
STRAP_COLORS = (((235, 235, 230), 0.35), ((225, 195, 60), 0.2), ((60, 105, 190), 0.2), ((225, 140, 50), 0.1),
                ((140, 140, 145), 0.15))  # fmt: skip
VALVE_COLORS = (((232, 232, 228), 0.4), ((190, 192, 195), 0.2), ((60, 62, 66), 0.2), ((70, 110, 190), 0.1),
                ((225, 130, 50), 0.1))  # fmt: skip
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
CARTRIDGE_COLORS = (
    ((205, 50, 130), 0.22),  # magenta (particulate filters)
    ((235, 150, 185), 0.1),  # pink
    ((236, 236, 232), 0.15),  # white
    ((225, 195, 55), 0.12),  # yellow
    ((150, 152, 156), 0.13),  # grey
    ((42, 42, 45), 0.14),  # black
    ((105, 112, 60), 0.14),  # olive (gas / vapour)
)
HARNESS_COLORS = (((35, 35, 38), 0.5), ((85, 87, 92), 0.25), ((50, 70, 125), 0.15), ((200, 195, 180), 0.1))


def _pick(rng: np.random.Generator, options: tuple) -> np.ndarray:
    colors, weights = zip(*options, strict=True)
    w = np.array(weights, np.float64)
    return np.array(colors[rng.choice(len(colors), p=w / w.sum())], np.float32)


def _style_fit(style: str, face: _Face, rng: np.random.Generator) -> tuple[_Fit, _Material, str]:
    """Random fit and material of a drawn style, and what holds it on ("loops", "straps" or "")."""
    u = rng.uniform
    # Turned faces: the far side ends at the visible contour (the cheek or nose hides the rest).
    far = 0 if face.yaw < -TURNED_DEG else 1 if face.yaw > TURNED_DEG else -1

    def sides(lo: float, hi: float, ears: float) -> tuple[float, float]:
        ext = [u(lo, hi), u(lo, hi)]
        if rng.random() < ears:
            ext[int(rng.integers(2)) if far < 0 else 1 - far] = u(0.15, 0.32)
        if far >= 0:
            ext[far] = u(-0.03, 0.02)
        return ext[0], ext[1]

    height = float(rng.beta(2.0, 1.5))
    if style == "surgical":
        fit = _Fit(
            height=height,
            drop=u(0.12, 0.4),
            peak_round=u(0.12, 0.35),
            top_exp=u(0.85, 1.4),
            cup=False,
            below=u(0.0, 0.45),
            corner=u(0.0, 0.3),
            bottom_exp=u(1.8, 3.0),
            ext=sides(-0.03, 0.1, 0.2),
        )
        mat = _Material(
            ambient=u(0.45, 0.6),
            spec=u(0.03, 0.12),
            curve=u(0.6, 1.0),
            nose_ridge=u(0.3, 0.6),
            pleats=3,
            relief=u(0.05, 0.15),
            pleat_depth=u(0.12, 0.25),
            binding=u(0.04, 0.1),
            grain=u(0.005, 0.015),
            wrinkle=u(0.0, 0.04),
            edge_dark=u(0.05, 0.18),
        )
        return fit, mat, "loops"
    if style == "n95":
        fit = _Fit(
            height=u(0.5, 1.0),
            drop=u(0.2, 0.7),
            peak_round=0.0,
            top_exp=u(1.6, 2.4),
            cup=True,
            below=u(0.05, 0.3),
            corner=u(0.1, 0.3),
            bottom_exp=u(1.8, 2.2),
            ext=sides(-0.15, 0.0, 0.0),
            half_width=u(0.9, 1.1),
        )
        mat = _Material(
            ambient=u(0.4, 0.55),
            spec=u(0.03, 0.1),
            curve=u(1.2, 1.7),
            nose_ridge=u(0.1, 0.3),
            rim=u(-0.08, 0.1),
            nose_clip=u(0.0, 0.15) if rng.random() < 0.7 else 0.0,
            relief=0.0,  # a rigid cup does not sag
            grain=u(0.006, 0.015),
            wrinkle=u(0.0, 0.02),
            edge_dark=u(0.05, 0.15),
        )
        return fit, mat, "straps"
    if style == "kn95":
        fit = _Fit(
            height=u(0.35, 1.0),
            drop=u(0.25, 0.5),
            peak_round=u(0.01, 0.05),
            top_exp=u(0.9, 1.15),
            cup=False,
            below=u(0.15, 0.45),
            corner=u(0.0, 0.2),
            bottom_exp=u(1.0, 1.3),
            ext=sides(-0.06, 0.08, 0.15),
        )
        mat = _Material(
            ambient=u(0.4, 0.55),
            spec=u(0.04, 0.14),
            curve=u(0.7, 1.1),
            nose_ridge=u(0.05, 0.2),
            crease=u(0.5, 0.8),
            relief=u(0.0, 0.04),
            seam=u(0.15, 0.3),
            emboss=u(0.06, 0.14),
            grain=u(0.005, 0.015),
            edge_dark=u(0.05, 0.15),
        )
        return fit, mat, "loops"
    if style == "respirator":
        # A rubber body from the nose bridge to under the chin, pointed at the nose and narrower
        # than the face: the cartridges (see `_cartridge`) sit at its sides on the lower cheeks.
        fit = _Fit(
            height=u(0.55, 1.0),
            drop=u(0.3, 0.55),
            peak_round=u(0.08, 0.2),
            top_exp=u(0.8, 1.0),
            cup=False,
            below=u(0.0, 0.2),
            corner=u(0.05, 0.2),
            bottom_exp=u(1.8, 2.6),
            ext=sides(-0.2, -0.05, 0.0),
            half_width=u(0.72, 0.9),
        )
        mat = _Material(
            ambient=u(0.35, 0.5),
            spec=u(0.12, 0.3),  # moulded rubber shines
            shininess=u(14.0, 30.0),
            curve=u(1.1, 1.6),
            nose_ridge=u(0.3, 0.6),
            rim=u(0.05, 0.15),  # the rolled face seal
            seam=u(0.0, 0.2),
            grain=u(0.004, 0.01),
            edge_dark=u(0.1, 0.25),
        )
        return fit, mat, "harness"
    if style == "bench":
        fit = _Fit(
            height=u(0.3, 0.8),
            drop=u(0.0, 0.25),
            peak_round=0.1,
            top_exp=1.0,
            cup=False,
            below=u(0.05, 0.4),
            corner=u(0.0, 0.25),
            bottom_exp=u(1.5, 2.5),
            ext=(u(-0.02, 0.06), u(-0.02, 0.06)),
            jag=u(0.02, 0.05),
        )
        return fit, _Material(flat=True, grain=u(0.01, 0.03)), ""
    if style == "scarf":
        fit = _Fit(
            height=u(0.35, 1.0),
            drop=u(0.0, 0.2),
            peak_round=u(0.3, 0.5),
            top_exp=u(0.8, 1.2),
            cup=False,
            below=u(0.6, 1.5),
            corner=u(0.2, 0.6),
            bottom_exp=u(1.0, 2.0),
            ext=sides(0.15, 0.45, 0.0),
            min_half_width=u(0.8, 1.2),
        )
        mat = _Material(
            ambient=u(0.4, 0.6),
            spec=u(0.0, 0.05),
            shininess=6.0,
            curve=u(0.6, 1.0),
            nose_ridge=u(0.2, 0.5),
            relief=u(0.12, 0.25),  # loose folds
            crease=u(0.0, 0.2),
            grain=u(0.015, 0.04),  # knit
            wrinkle=u(0.1, 0.2),
            edge_dark=u(0.1, 0.25),
        )
        return fit, mat, ""
    # cloth, cloth_printed, cloth_photo
    glossy = rng.random() < 0.15  # satin and synthetic fabrics shine
    fit = _Fit(
        height=height,
        drop=u(0.12, 0.4),
        peak_round=u(0.08, 0.25),
        top_exp=u(0.7, 1.15),
        cup=False,
        below=u(0.1, 0.5),
        corner=u(0.0, 0.3),
        bottom_exp=u(1.6, 2.6),
        ext=sides(0.0, 0.12, 0.35),
    )
    mat = _Material(
        ambient=u(0.4, 0.6),
        spec=u(0.15, 0.35) if glossy else u(0.0, 0.04),
        shininess=u(16.0, 30.0) if glossy else 6.0,
        curve=u(0.7, 1.1),
        nose_ridge=u(0.3, 0.6),
        relief=u(0.06, 0.16),
        crease=u(0.0, 0.3),
        seam=u(0.0, 0.3) if rng.random() < 0.6 else 0.0,
        grain=u(0.01, 0.03),
        wrinkle=u(0.04, 0.12),
        edge_dark=u(0.1, 0.25),
    )
    return fit, mat, "fabric_loops"


def _noise(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a tiling noise field at texel coordinates."""
    return cv2.remap(
        field, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
    )


def _smoothstep(edge: float | np.ndarray, width: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 below `edge` to 1 above it, over `width` (a linear ramp: anti-aliased pattern edges)."""
    return np.clip((x - edge) / width + 0.5, 0.0, 1.0)


def _shade(
    base: np.ndarray,
    attrs: np.ndarray,
    alpha: np.ndarray,
    mat: _Material,
    light: _Light,
    face: _Face,
    fields: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Lit colour (h, w, 3): a Lambert and specular model on the mask's curved surface, with
    folds, seams and fabric texture. `fields`: the tiling grain and wrinkle noise."""
    u, v, theta, tx, ty, vf = np.moveaxis(attrs, -1, 0)
    px = 1.0 / face.iod  # one pixel in iod units, the width of anti-aliased lines
    ox, oy, scale = rng.uniform(0, 128, 4).tolist(), rng.uniform(18, 30), face.iod * 0.9
    grain = _noise(fields[0], tx * scale + ox[0], ty * scale + ox[1])
    if mat.flat:
        # Bench style: flat colour, faint horizontal stripes.
        period, amp = rng.uniform(0.08, 0.14), rng.uniform(0.03, 0.08)
        shade = 1.0 - amp * (0.5 + 0.5 * np.cos(2 * np.pi * ty / period)) + mat.grain * grain
        shade *= 1.0 + 0.06 * light.direction[0] * np.clip(tx, -1, 1)
        return np.clip(base * (shade * light.exposure)[..., None] * light.cast, 0, 255)

    # Surface normal: a cylinder around the head, tilting up at the top and down under the chin,
    # tenting over the nose; KN95 halves are two panels meeting at the centre fold.
    phi = (v - 0.45) * mat.curve
    # The fabric rests on the nose tip and the chin and sags between them and below the chin:
    # the slope of that relief tilts the normal (a shadow under the nose, a lit chin).
    if mat.relief:
        y_tip, y_chin = face.pts[NOSE_TIP, 1] / face.iod, face.pts[CHIN, 1] / face.iod
        dn, dc = (ty - y_tip) / 0.3, (ty - y_chin) / 0.35
        slope = mat.relief * (dn * np.exp(-(dn**2)) / 0.3 + 0.7 * dc * np.exp(-(dc**2)) / 0.35)
        phi = phi + np.arctan(slope * np.exp(-((tx / 0.45) ** 2)))
    ridge = mat.nose_ridge * np.tanh(tx / 0.15) * np.exp(-((tx / 0.3) ** 2)) * np.clip(1 - v / 0.55, 0, 1)
    th = theta + ridge
    if mat.crease:
        th = th * (1 - mat.crease * 0.5) + mat.crease * 0.45 * np.tanh(tx / 0.02)
    wrinkle = _noise(fields[1], tx * oy + ox[2], ty * oy * 0.6 + ox[3]) if mat.wrinkle else 0
    nx = np.sin(th) * np.cos(phi)
    ny = np.sin(phi) + (mat.wrinkle * 2.0 * wrinkle if mat.wrinkle else 0)
    nz = np.cos(th) * np.cos(phi)
    lx, ly, lz = light.direction
    lambert = np.clip(nx * lx + ny * ly + nz * lz, 0, None)
    shade = (mat.ambient + (1 - mat.ambient) * lambert) / (mat.ambient + (1 - mat.ambient) * lz)
    half = np.array(light.direction) + np.array([0.0, 0.0, 1.0])
    hx, hy, hz = (float(c) for c in half / np.linalg.norm(half))
    spec = mat.spec * np.clip(nx * hx + ny * hy + nz * hz, 0, None) ** mat.shininess

    if mat.pleats:
        # Each pleat's lower edge overlaps the fabric below it: a thin shadow under the fold line,
        # a lit band above it. Folds bunch towards the sides where the binding holds them.
        centres = np.linspace(0.3, 0.72, mat.pleats) + rng.normal(0, 0.02, mat.pleats)
        width, bow = rng.uniform(0.05, 0.08), rng.uniform(0.0, 0.08)
        inside = alpha > 0.5
        height = max(float(np.ptp(ty[inside])), 0.3) if inside.any() else 1.0  # iod
        step = 1.0 / (height * face.iod * width)  # one pixel, in units of `d` below
        for k, c in enumerate(centres):
            # Lower folds open more in the middle, where the mask stretches over the chin.
            d = (0.6 * v + 0.4 * vf - c - bow * (k + 1) / mat.pleats * np.sin(np.pi * u)) / width
            fold = np.clip(d / step + 0.5, 0, 1)  # the fold line, anti-aliased
            shade -= mat.pleat_depth * fold * np.exp(-np.maximum(d, 0) * 2.5)
            shade += 0.4 * mat.pleat_depth * np.exp(-(((d + 0.6) / 0.5) ** 2))
    if mat.binding:
        # Bound side edges and hems, each with a stitch line.
        inside = alpha > 0.5
        width = max(float(np.ptp(tx[inside])), 0.3) if inside.any() else 1.0  # iod
        bw = 0.09 / width
        side = (u < bw) | (u > 1 - bw)
        shade = np.where(side, shade * (1 + mat.binding), shade)
        hem = (v < 0.05) | (v > 0.955)
        shade = np.where(hem & ~side, shade * (1 - 0.5 * mat.binding), shade)
        stitch = np.exp(-(((np.minimum(u, 1 - u) - bw) / (1.2 * px / width)) ** 2))
        shade -= 2 * mat.binding * stitch
    if mat.seam:
        shade -= mat.seam * np.exp(-((tx / (1.3 * px)) ** 2)) * np.clip(np.abs(v - 0.5) * 4, 0.3, 1)
    if mat.emboss:
        # Heat-sealed border: a band of small dots along the outline.
        edge = _soft(alpha, 0.08 * face.iod)
        band = (edge > 0.5) & (edge < 0.85)
        dots = 0.5 + 0.5 * np.cos(2 * np.pi * (tx + ty) / 0.05) * np.cos(2 * np.pi * (tx - ty) / 0.05)
        shade -= mat.emboss * band * dots
    if mat.nose_clip:
        clip = _smoothstep(0.1, 0.04, -v + 0.2) * _smoothstep(0.3, 0.06, -np.abs(tx) + 0.6)
        shade -= mat.nose_clip * clip
        spec = spec + 0.06 * clip
    if mat.rim:
        edge = _soft(alpha, 0.05 * face.iod)
        shade -= mat.rim * np.exp(-(((edge - 0.7) / 0.08) ** 2))
    shade += mat.grain * grain
    if mat.wrinkle:
        shade *= 1 + mat.wrinkle * wrinkle
    if mat.edge_dark:
        edge = _soft(alpha, 0.06 * face.iod)
        shade *= 1 - mat.edge_dark * np.clip((1 - edge) * 2.5, 0, 1)
    color = base * shade[..., None] + (spec * 255.0)[..., None]
    return np.clip(color * light.exposure * light.cast, 0, 255).astype(np.float32)


LETTERS = "ABCDEFGHIJKLMNOPRSTUVWXYZ0123456789!#&"


def _graphic(
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
    ground = _pick(rng, CLOTH_COLORS)
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


def _print_pattern(
    tx: np.ndarray, ty: np.ndarray, iod: float, smooth: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A printed fabric: stripes, dots, checks or noise (camouflage / tie-dye), in random colours."""
    # Fabric dyes: any hue, rarely fully saturated.
    hsv = np.stack([rng.uniform(0, 180, 4), rng.uniform(40, 200, 4), rng.uniform(50, 240, 4)], -1)
    palette = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)
    if rng.random() < 0.5:  # a light or dark ground under a contrasting print is the common case
        palette[0] = _pick(rng, CLOTH_COLORS)
    px = 1.0 / iod
    angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]) + rng.normal(0, 0.05))
    ca, sa = float(np.cos(angle)), float(np.sin(angle))
    a, b = tx * ca + ty * sa, -tx * sa + ty * ca
    pattern = str(rng.choice(["stripes", "dots", "checks", "noise"]))
    if pattern == "stripes":
        period = rng.uniform(0.1, 0.35)
        duty = rng.uniform(0.25, 0.6)
        f = np.abs((a / period) % 1.0 - 0.5) * 2  # 0 at stripe centres
        mix = _smoothstep(duty, 2 * px / period, f)[..., None]
        return palette[1] * (1 - mix) + palette[0] * mix
    if pattern == "dots":
        period = rng.uniform(0.12, 0.3)
        radius = rng.uniform(0.18, 0.35) * period
        row = np.floor(b / period)
        shift = 0.5 * (row % 2) * period  # staggered rows
        dx = ((a + shift) / period) % 1.0 - 0.5
        dy = (b / period) % 1.0 - 0.5
        d = np.hypot(dx, dy) * period
        mix = _smoothstep(radius, 1.5 * px, d)[..., None]
        return palette[1] * (1 - mix) + palette[0] * mix
    if pattern == "checks":
        period = rng.uniform(0.12, 0.35)
        sx = _smoothstep(0.5, 2 * px / period, np.abs((a / period) % 1.0 - 0.5) * 2)
        sy = _smoothstep(0.5, 2 * px / period, np.abs((b / period) % 1.0 - 0.5) * 2)
        mix = ((sx + sy) / 2)[..., None]  # gingham: ground, half and full tone
        out = palette[0] * (1 - mix) + palette[1] * mix
        if rng.random() < 0.4:  # plaid: a thin cross line in a third colour
            line = _smoothstep(0.93, 2 * px / period, np.abs(((a / period) + 0.25) % 1.0 - 0.5) * 2)
            out = out * (1 - line[..., None]) + palette[2] * line[..., None]
        return out
    scale = rng.uniform(25, 60)
    n = _noise(smooth, a * scale + rng.uniform(0, 128), b * scale + rng.uniform(0, 128))
    if rng.random() < 0.6:  # camouflage: a few flat colour levels
        levels = np.digitize(n, [-0.6, 0.0, 0.6])
        return palette[levels]
    mix = np.clip(0.5 + 0.35 * n, 0, 1)[..., None]
    return palette[0] * (1 - mix) + palette[1] * mix


def _sample_texture(
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
    return _noise(tex, mx, my)


def _straps(
    face: _Face, grid: np.ndarray, holder: str, fabric: np.ndarray | None, rng: np.random.Generator
) -> tuple[list[np.ndarray], float, np.ndarray] | None:
    """Ear loops or head straps: polylines in image pixels, their width in pixels and colour.

    `holder`: "loops" (thin white elastic), "fabric_loops" (cloth, in the `fabric` colour) or
    "straps" (N95 head straps) or "harness" (respirator head straps)."""
    s = face.iod
    if holder == "loops" and rng.random() < 0.15:  # hidden by hair, or tied behind the head
        return None
    if holder == "straps":
        color, width = _pick(rng, STRAP_COLORS), rng.uniform(0.035, 0.055) * s
    elif holder == "harness":  # respirators: wide rubber or woven head straps
        color, width = _pick(rng, HARNESS_COLORS), rng.uniform(0.05, 0.08) * s
    elif holder == "fabric_loops":  # cloth masks: loops of the same fabric, or thin elastic
        color = fabric if fabric is not None and rng.random() < 0.6 else np.array([30, 30, 32], np.float32)
        width = rng.uniform(0.03, 0.06) * s
    else:
        color, width = np.array([238, 238, 236], np.float32), rng.uniform(0.025, 0.045) * s
    lines, eyes = [], face.true[list(EYE_CONTOURS)]
    for side, ear in enumerate(EAR_SIDES):
        # The side of a strongly turned face away from the camera hides its loops.
        if (side == 0 and face.yaw < -TURNED_DEG) or (side == 1 and face.yaw > TURNED_DEG):
            continue
        sign = 1 if side else -1
        ear_pt = face.true[ear]
        col = -1 if side else 0
        # Head straps: round the head above the ear and below it, out of sight at the contour.
        if holder in ("straps", "harness"):
            ends = []
            for (u, v), dy in (((0.1, 0.15), -0.35), ((0.04, 0.75), 0.75)):
                y = ear_pt[1] + dy * s
                ends.append(
                    (_grid_point(grid, 1 - u if side else u, v), [face.span(y)[side] + 0.03 * s * sign, y])
                )
        else:  # from the mask's corners to the top and the bottom of the ear
            ends = [
                (grid[0, col], ear_pt + np.array([0.0, -0.2]) * s),
                (grid[-1, col], ear_pt + np.array([0.05 * sign, 0.5]) * s),
            ]
        for start, end in ends:
            if (end[0] - start[0]) * sign < 0.08 * s:  # the mask already reaches past the ear
                continue
            mid = (start + end) / 2 + [0.0, rng.uniform(-0.05, 0.08) * s]
            t = np.linspace(0, 1, 16)[:, None]
            line = (1 - t) ** 2 * start + 2 * t * (1 - t) * mid + t**2 * end
            # A strap across an eye would hide it: leave that one out.
            if np.hypot(*(line[:, None] - eyes[None]).transpose(2, 0, 1)).min() > 0.15 * s + width:
                lines.append(face.to_image(line))
    return (lines, width, color * rng.uniform(0.85, 1.0)) if lines else None


def _strap_layer(
    lines: list[np.ndarray], width: float, color: np.ndarray, box: tuple[int, int, int, int]
) -> _Layer:
    """Anti-aliased straps on a layer covering `box`."""
    x0, y0, x1, y1 = box
    a8 = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = [np.round((line - [x0, y0]) * 16).astype(np.int32) for line in lines]
    cv2.polylines(a8, pts, False, 255, max(1, round(width)), cv2.LINE_AA, shift=4)
    # Straps thinner than a pixel are drawn one pixel wide at partial coverage.
    a = a8.astype(np.float32) * (min(1.0, width) / 255.0)
    return _Layer(x0, y0, color.astype(np.float32) * a[..., None], a)


def _valve(
    color: np.ndarray,
    attrs: np.ndarray,
    grid: np.ndarray,
    face: _Face,
    light: _Light,
    offset: np.ndarray,
    rng: np.random.Generator,
    at: tuple[float, float] | None = None,
) -> None:
    """Paint an exhalation valve (round or square) on one cheek of the mask, or at grid position
    `at` (u, v), with its shadow."""
    if at is None:
        if face.yaw > TURNED_DEG:  # on the cheek that faces the camera
            side = 0
        elif face.yaw < -TURNED_DEG:
            side = 1
        else:
            side = int(rng.integers(2))
        at = (rng.uniform(0.68, 0.76) if side else rng.uniform(0.24, 0.32), rng.uniform(0.5, 0.62))
    centre = face.to_image(_grid_point(grid, *at)) - offset
    h, w = color.shape[:2]
    cx, cy = int(np.clip(round(centre[0]), 0, w - 1)), int(np.clip(round(centre[1]), 0, h - 1))
    squash = max(float(np.cos(attrs[cy, cx, 2])), 0.35)  # foreshortened on the turning cheek
    r = rng.uniform(0.2, 0.28) * face.iod
    reach = int(r * 1.6) + 2
    bx0, by0 = max(cx - reach, 0), max(cy - reach, 0)
    bx1, by1 = min(cx + reach + 1, w), min(cy + reach + 1, h)
    ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
    c, s = float(face.rot[0, 0]), float(face.rot[1, 0])
    dx, dy = xs - float(centre[0]), ys - float(centre[1])
    a = (dx * c + dy * s) / (r * squash)
    b = (-dx * s + dy * c) / r
    round_valve = rng.random() < 0.6

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # 1 on the valve's outline
        return np.hypot(a, b) if round_valve else (a**4 + b**4) ** 0.25

    d = dist(a, b)
    cover = np.clip((1.0 - d) * r + 0.5, 0, 1)[..., None]
    lx = float(light.direction[0])
    # Its shadow falls on the mask away from the light.
    shadow = np.clip((1.1 - dist(a + lx * 0.25, b + 0.15)) * 3, 0, 1)
    patch = color[by0:by1, bx0:bx1] * (1 - 0.35 * shadow)[..., None]
    # A domed cap with a rim, vents and a highlight.
    dome = 1.0 + 0.25 * (lx * a - 0.3 * b) * np.clip(1 - d, 0, 1)
    rim = 1.0 - 0.3 * np.exp(-(((d - 0.85) / 0.07) ** 2))
    vents = 1.0 - 0.07 * (np.cos(2 * np.pi * d * 3) if round_valve else np.cos(np.pi * b * 5)) * (d < 0.7)
    base = _pick(rng, VALVE_COLORS) * rng.uniform(0.9, 1.05) * light.exposure * light.cast
    valve = base * (dome * rim * vents)[..., None]
    valve += 255 * 0.15 * np.exp(-(((a + 0.3) ** 2 + (b + 0.4) ** 2) / 0.05))[..., None]
    color[by0:by1, bx0:bx1] = np.clip(valve, 0, 255) * cover + patch * (1 - cover)


def _cartridges(
    face: _Face,
    grid: np.ndarray,
    body: np.ndarray,
    light: _Light,
    fields: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    shape: tuple[int, int],
) -> tuple[list[_Layer], list[_Layer]]:
    """A respirator's two filter cartridges: layers (behind the body, in front of it).

    Each is a cylinder (round or a rounded square; thin for pancake filters) on a port at the side
    of the body, its axis turned outwards and forwards, so it sticks out past the cheek and jaw.
    On a turned face the far one is drawn behind the body, which hides part of it."""
    s, u = face.iod, rng.uniform
    style = str(rng.choice(["pancake", "canister", "box"], p=[0.3, 0.35, 0.35]))
    radius = (u(0.46, 0.6) if style == "pancake" else u(0.36, 0.5)) * s  # half the height, pixels
    depth = (u(0.1, 0.17) if style == "pancake" else u(0.25, 0.45)) * s
    power = u(3.0, 5.0) if style == "box" else 2.0  # superellipse: 2 round .. 5 square
    aspect = u(0.75, 1.1) if style == "box" else u(0.92, 1.05)  # width / height
    cap = _pick(rng, CARTRIDGE_COLORS) * u(0.94, 1.05)
    # Cartridges twist into a bayonet mount near the body: body-coloured or black plastic.
    mount = body * u(0.7, 0.9) if rng.random() < 0.5 else np.array([40, 40, 42], np.float32)
    split = 1.0 if style == "pancake" else u(0.55, 0.85)  # where the cap meets the mount, along the axis
    pattern = str(rng.choice(["plain", "grille", "rings", "label"]))
    label = _pick(rng, (((238, 238, 234), 0.6), ((225, 200, 70), 0.2), ((60, 62, 66), 0.2)))
    dome = u(0.0, 0.35)
    mat = _Material(
        ambient=u(0.35, 0.5), spec=u(0.08, 0.22), shininess=u(10.0, 25.0), curve=1.0, nose_ridge=0.0,
        grain=u(0.004, 0.012), edge_dark=0.0,
    )  # fmt: skip
    turn, tilt = u(0.75, 1.15), u(-0.05, 0.2)  # radians outwards from the face's front, and down
    v_port = u(0.42, 0.6)
    # The cartridges' tops stay well under the eyes, whatever their size.
    y_min = face.true[list(EYE_CONTOURS), 1].max() + 0.3 * s
    far = 0 if face.yaw < -TURNED_DEG else 1 if face.yaw > TURNED_DEG else -1
    layers: tuple[list[_Layer], list[_Layer]] = ([], [])
    for side in (0, 1):
        # The axis (x right, y down, z to the camera) turns with the head; e1, e2 span the disc.
        beta = float(np.clip((1 if side else -1) * turn + np.radians(face.yaw), -1.45, 1.45))
        axis = np.array([np.sin(beta) * np.cos(tilt), np.sin(tilt), np.cos(beta) * np.cos(tilt)])
        e1 = np.array([np.cos(beta), 0.0, -np.sin(beta)])
        e2 = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
        e2 /= np.linalg.norm(e2)
        back = _grid_point(grid, 0.88 if side else 0.12, v_port)
        front = back + depth * axis[:2]
        rx, ry = max(radius * aspect * abs(np.cos(beta)), 0.5), radius * np.cos(tilt)
        drop = max(0.0, y_min - (min(back[1], front[1]) - ry))
        back, front = back + np.array([0.0, drop]), front + np.array([0.0, drop])
        lo, hi = np.minimum(back, front) - np.array([rx, ry]), np.maximum(back, front) + np.array([rx, ry])
        corners = face.to_image(np.array([lo, [hi[0], lo[1]], hi, [lo[0], hi[1]]]))
        box = _box(corners, 3, shape)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        pix = np.stack(np.meshgrid(np.arange(x0, x1), np.arange(y0, y1)), -1).astype(np.float64)
        q = (pix - face.origin) @ face.rot  # upright frame
        # Slice the cylinder into discs a pixel apart along its axis, back to front: a pixel shows
        # the frontmost disc that covers it (the nearest one at the anti-aliased rim).
        n = int(np.ceil(np.hypot(*(front - back)))) + 2
        sd_min = np.full(q.shape[:2], np.inf)
        t_vis, a_vis, b_vis = (np.zeros(q.shape[:2]) for _ in range(3))
        for k in range(n - 1, -1, -1):
            t = k / (n - 1)  # 0 the cap's face .. 1 the port
            c = front + t * (back - front)
            a, b = (q[..., 0] - c[0]) / rx, (q[..., 1] - c[1]) / ry
            d = np.maximum((np.abs(a) ** power + np.abs(b) ** power) ** (1 / power), 1e-6)
            grad = np.hypot(np.abs(a / d) ** (power - 1) / rx, np.abs(b / d) ** (power - 1) / ry)
            sd = (d - 1) / np.maximum(grad, 1e-6)  # signed distance in pixels
            take = (sd <= 0) | ((sd_min > 0) & (sd < sd_min))
            t_vis, a_vis, b_vis = np.where(take, t, t_vis), np.where(take, a, a_vis), np.where(take, b, b_vis)
            sd_min = np.minimum(sd_min, sd)
        cover = np.clip(0.5 - sd_min, 0, 1).astype(np.float32)
        on_cap = np.clip(0.5 - sd, 0, 1)[..., None]  # the last slice is the cap's face
        px = grad  # one pixel in units of d on the face
        # Normals: the wall's points outwards from the axis; the face's along it, domed, with a
        # bevelled rim.
        ca = np.sign(a_vis) * np.abs(a_vis) ** (power - 1) / aspect
        cb = np.sign(b_vis) * np.abs(b_vis) ** (power - 1)
        norm = np.maximum(np.hypot(ca, cb), 1e-6)
        radial = (ca / norm)[..., None] * e1 + (cb / norm)[..., None] * e2
        bevel = 0.8 * _smoothstep(0.88, 0.06, d)[..., None] + dome * d[..., None]
        cap_n = axis + bevel * radial
        normal = on_cap * cap_n / np.linalg.norm(cap_n, axis=-1, keepdims=True) + (1 - on_cap) * radial
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-6)
        theta = np.arctan2(normal[..., 0], normal[..., 2])
        v = 0.45 + np.arcsin(np.clip(normal[..., 1], -1, 1))  # `_shade` tilts by (v - 0.45) * curve
        tx, ty = a_vis * rx / s + t_vis * depth / s, b_vis * ry / s
        attrs = np.stack([np.full_like(v, 0.5), v, theta, tx, ty, np.zeros_like(v)], -1).astype(np.float32)
        # Colours: cap, mount, and the cap face's moulding or label.
        wall = np.where((t_vis < split)[..., None], cap, mount)
        dark = np.zeros_like(d)
        if pattern == "grille":  # slots across the middle
            slots = np.abs((b_vis * 5.5) % 1.0 - 0.5) * 2
            dark = 0.55 * _smoothstep(0.55, 0.3, slots) * _smoothstep(0.62, px, -d + 1.24)
        elif pattern == "rings":
            dark = 0.35 * sum(np.exp(-(((d - r) / (1.2 * px)) ** 2)) for r in (0.45, 0.7))
        face_color = np.broadcast_to(cap, (*d.shape, 3)).astype(np.float64)
        if pattern == "label":
            inside = _smoothstep(0.0, px, 0.55 - np.abs(a_vis)) * _smoothstep(0.0, px, 0.38 - np.abs(b_vis))
            face_color = face_color + inside[..., None] * (label - cap)
            lines = np.exp(-((((b_vis + 0.2) % 0.16 - 0.08) / (0.8 * px)) ** 2)) * (np.abs(a_vis) < 0.42)
            dark = 0.45 * lines * (np.abs(b_vis) < 0.3)
        base = on_cap * face_color * (1 - dark)[..., None] + (1 - on_cap) * wall
        color = _shade(base.astype(np.float32), attrs, cover, mat, light, face, fields, rng)
        layers[side != far].append(_Layer(x0, y0, color * cover[..., None], cover))
    return layers


# ----------------------------------------------------------------------------------------------
# Compositing


def _box(points: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around the points, padded and cut to the image; None if empty."""
    x0, y0 = np.floor(np.maximum(points.min(0) - pad, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(points.max(0) + pad, [shape[1], shape[0]])).astype(int)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def _stack(layers: list[_Layer]) -> _Layer:
    """Layers, bottom to top, flattened onto one layer that covers them all."""
    layers = [layer for layer in layers if layer.alpha.size]
    if len(layers) <= 1:
        return layers[0] if layers else _Layer.empty()
    x0, y0 = min(layer.x0 for layer in layers), min(layer.y0 for layer in layers)
    x1 = max(layer.x0 + layer.alpha.shape[1] for layer in layers)
    y1 = max(layer.y0 + layer.alpha.shape[0] for layer in layers)
    h, w = y1 - y0, x1 - x0
    out = _Layer(x0, y0, np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32))
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


def _soft(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Alpha smoothed about as much as a Gaussian of `sigma` would (a box filter, much cheaper)."""
    k = max(3, int(3.46 * sigma) | 1)
    return cv2.blur(alpha, (k, k))


def _jpeg(mask_rgb: np.ndarray, color: np.ndarray, alpha: np.ndarray, quality: int) -> np.ndarray:
    """The mask colour through a JPEG round trip: photos carry compression artefacts, and a mask
    without them would be told apart by that alone. Outside the mask the colour is first filled
    from the nearby mask, so its edge does not ring against black."""
    spread = cv2.blur(color, (7, 7)) / np.maximum(cv2.blur(alpha, (7, 7)), 1e-4)[..., None]
    filled = np.where((alpha > 0.5)[..., None], mask_rgb, np.clip(spread, 0, 255))
    ok, buf = cv2.imencode(".jpg", filled.astype(np.uint8)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) if ok else mask_rgb


def _composite(
    rgb: np.ndarray, layer: _Layer, light: _Light, sensor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blur and noise the mask like the photo, then image = alpha * mask + (1 - alpha) * input."""
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
    mask_rgb = color / np.maximum(alpha, 1e-6)[..., None]
    mask_rgb += _patch(sensor, mask_rgb.shape[:2], rng) * np.float32(light.noise)
    mask_rgb = np.clip(mask_rgb, 0, 255)
    if rng.random() < 0.6:
        mask_rgb = _jpeg(mask_rgb, color, alpha, int(rng.integers(50, 96)))
    alpha = np.clip(alpha, 0, 1)
    alpha[alpha < 1 / 512] = 0  # below half a grey level: not mask
    alpha[alpha > 1 - 1 / 512] = 1
    a = alpha[..., None]
    roi = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.clip(np.rint(a * mask_rgb + (1 - a) * roi), 0, 255).astype(np.uint8)
    alpha_full[y0:y1, x0:x1] = alpha
    return image, alpha_full


# ----------------------------------------------------------------------------------------------
# Preview


def _preview(args: argparse.Namespace) -> None:
    # Imported here: it loads MediaPipe, which rendering itself does not need.
    from training.landmarks import load_landmarks

    meshes = load_landmarks(args.landmarks)
    names = sorted(n for n in meshes if (args.faces / n).exists())
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(names), size=min(args.n, len(names)), replace=False)
    renderer = MaskRenderer(args.templates, split=args.split)
    tiles, alphas = [], []
    for i in picks:
        rgb = np.asarray(Image.open(args.faces / names[i]).convert("RGB"))
        out = renderer.render(rgb, meshes[names[i]], rng)
        tile = cv2.resize(out.image, (200, 200), interpolation=cv2.INTER_AREA)
        cv2.putText(
            tile, out.kind[:32], (3, 195), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 0), 1, cv2.LINE_AA
        )
        tiles.append(tile)
        alpha = cv2.resize((out.alpha * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_AREA)
        alphas.append(np.repeat(alpha[..., None], 3, -1))
    cols = args.cols
    rows = [tiles[k : k + cols] for k in range(0, len(tiles), cols)] + [alphas[:cols]]
    blank = np.zeros((200, 200, 3), np.uint8)
    grid = np.vstack([np.hstack(r + [blank] * (cols - len(r))) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"{len(tiles)} faces -> {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--faces", type=Path, required=True, help="folder of the face images")
    parser.add_argument("--landmarks", type=Path, required=True, help="mesh cache from training.landmarks")
    parser.add_argument(
        "--templates", type=Path, default=data / "mask-templates", help="mask-templates folder"
    )
    parser.add_argument("--split", choices=["train", "heldout"], default="train")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    _preview(parser.parse_args())


if __name__ == "__main__":
    main()
