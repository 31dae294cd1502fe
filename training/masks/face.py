"""The face mesh as a mask is fitted to it: MediaPipe indices, the upright face frame and the six
template fitting points."""

from __future__ import annotations

import cv2
import numpy as np

from qmask.align import mesh_eyes
from qmask.mesh_points import BETWEEN_EYES, NOSE_TIP

# MediaPipe face-mesh indices (the ones the pipeline uses too are in qmask.mesh_points).
MOUTH_CORNERS = (61, 291)
EAR_SIDES = (234, 454)
# Both lids of both eyes: the top edge of a mask stays below all of them.
EYE_CONTOURS = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
                362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)  # fmt: skip
# Points every mask covers (a real mask hides the nostrils and the mouth): nose tip, subnasale,
# nostril wings, then the lips and mouth corners.
NOSE_COVER = (1, 4, 2, 98, 327, 79, 309, 20, 250)
MOUTH_COVER = (0, 17, 13, 14, 61, 291)
# Cheek points left and right of the nose, read to tell which side the light comes from.
CHEEKS = ((50, 101, 36, 205, 187, 123, 117), (280, 330, 266, 425, 411, 352, 346))

# Faces turned further than this (degrees) show one side only: the far side of a drawn mask ends at
# the visible contour and loses its straps, valves go on the near cheek, and templates use their
# picture for turned faces.
TURNED_DEG = 13.0


class Face:
    """The mesh in an upright frame: eye line horizontal, origin at the nose bridge, y down.

    `true` is the mesh as detected; `pts` is the copy the mask is shaped on, which may be slightly
    shifted, rotated and scaled to imitate a mask that sits a bit off. Safety limits (eyes stay
    clear, nose and mouth covered) always use `true`.
    """

    def __init__(self, mesh: np.ndarray, misplace: np.ndarray | None = None) -> None:
        mesh = np.asarray(mesh, dtype=np.float64)[:, :2]
        eyes = mesh_eyes(mesh)
        d = eyes[1] - eyes[0]
        self.iod = max(float(np.hypot(*d)), 1.0)
        c, s = d / self.iod
        self.rot = np.array([[c, -s], [s, c]])  # upright -> image
        self.origin = mesh[BETWEEN_EYES].copy()
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
        eye_mid = mesh_eyes(self.true).mean(axis=0)
        # The nose tip moves about 0.75 iod sideways per radian of yaw (measured on UTKFace).
        r = (self.true[NOSE_TIP, 0] - eye_mid[0]) / self.iod
        self.yaw = float(np.degrees(np.arcsin(np.clip(r / 0.75, -1.0, 1.0))))  # + nose to image right

    @property
    def far_side(self) -> int:
        """The side turned away from the camera: 0 image left, 1 image right, -1 neither (< TURNED_DEG)."""
        return 0 if self.yaw < -TURNED_DEG else 1 if self.yaw > TURNED_DEG else -1

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
    face = Face(mesh)
    p = face.true
    b = (p[197] + p[195]) / 2
    y_tip, y_lip = p[NOSE_TIP, 1], p[17, 1]
    (a_x, c_x), (d_x, f_x) = face.span(np.array(y_tip)), face.span(np.array(y_lip))
    e = face.ray_exit(b, (p[13] + p[14]) / 2)
    pts = np.array([[a_x, y_tip], b, [c_x, y_tip], [d_x, y_lip], e, [f_x, y_lip]])
    return face.to_image(pts).astype(np.float32)
