"""What holds a drawn mask on and what sits on it: ear loops and head straps, exhalation valves and a
respirator's filter cartridges."""

from __future__ import annotations

import cv2
import numpy as np

from training.masks.compositing import Layer, bounding_box
from training.masks.fabrics import pick
from training.masks.face import EAR_SIDES, EYE_CONTOURS, Face
from training.masks.filters import smoothstep
from training.masks.geometry import grid_point
from training.masks.light import Light, Material, shade_surface

STRAP_COLORS = (((235, 235, 230), 0.35), ((225, 195, 60), 0.2), ((60, 105, 190), 0.2), ((225, 140, 50), 0.1),
                ((140, 140, 145), 0.15))  # fmt: skip
VALVE_COLORS = (((232, 232, 228), 0.4), ((190, 192, 195), 0.2), ((60, 62, 66), 0.2), ((70, 110, 190), 0.1),
                ((225, 130, 50), 0.1))  # fmt: skip
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


def strap_lines(
    face: Face, grid: np.ndarray, holder: str, fabric: np.ndarray | None, rng: np.random.Generator
) -> tuple[list[np.ndarray], float, np.ndarray] | None:
    """Ear loops or head straps: polylines in image pixels, their width in pixels and colour.

    `holder`: "loops" (thin white elastic), "fabric_loops" (cloth, in the `fabric` colour) or
    "straps" (N95 head straps) or "harness" (respirator head straps)."""
    s = face.iod
    if holder == "loops" and rng.random() < 0.15:  # hidden by hair, or tied behind the head
        return None
    if holder == "straps":
        color, width = pick(rng, STRAP_COLORS), rng.uniform(0.035, 0.055) * s
    elif holder == "harness":  # respirators: wide rubber or woven head straps
        color, width = pick(rng, HARNESS_COLORS), rng.uniform(0.05, 0.08) * s
    elif holder == "fabric_loops":  # cloth masks: loops of the same fabric, or thin elastic
        color = fabric if fabric is not None and rng.random() < 0.6 else np.array([30, 30, 32], np.float32)
        width = rng.uniform(0.03, 0.06) * s
    else:
        color, width = np.array([238, 238, 236], np.float32), rng.uniform(0.025, 0.045) * s
    lines, eyes = [], face.true[list(EYE_CONTOURS)]
    for side, ear in enumerate(EAR_SIDES):
        # The side of a strongly turned face away from the camera hides its loops.
        if side == face.far_side:
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
                    (grid_point(grid, 1 - u if side else u, v), [face.span(y)[side] + 0.03 * s * sign, y])
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


def strap_layer(
    lines: list[np.ndarray], width: float, color: np.ndarray, box: tuple[int, int, int, int]
) -> Layer:
    """Anti-aliased straps on a layer covering `box`."""
    x0, y0, x1, y1 = box
    a8 = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = [np.round((line - [x0, y0]) * 16).astype(np.int32) for line in lines]
    cv2.polylines(a8, pts, False, 255, max(1, round(width)), cv2.LINE_AA, shift=4)
    # Straps thinner than a pixel are drawn one pixel wide at partial coverage.
    a = a8.astype(np.float32) * (min(1.0, width) / 255.0)
    return Layer(x0, y0, color.astype(np.float32) * a[..., None], a)


def valve(
    color: np.ndarray,
    attrs: np.ndarray,
    grid: np.ndarray,
    face: Face,
    light: Light,
    offset: np.ndarray,
    rng: np.random.Generator,
    at: tuple[float, float] | None = None,
) -> None:
    """Paint an exhalation valve (round or square) on one cheek of the mask, or at grid position
    `at` (u, v), with its shadow."""
    if at is None:
        far = face.far_side  # on the cheek that faces the camera
        side = int(rng.integers(2)) if far < 0 else 1 - far
        at = (rng.uniform(0.68, 0.76) if side else rng.uniform(0.24, 0.32), rng.uniform(0.5, 0.62))
    centre = face.to_image(grid_point(grid, *at)) - offset
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
    base = pick(rng, VALVE_COLORS) * rng.uniform(0.9, 1.05) * light.exposure * light.cast
    valve = base * (dome * rim * vents)[..., None]
    valve += 255 * 0.15 * np.exp(-(((a + 0.3) ** 2 + (b + 0.4) ** 2) / 0.05))[..., None]
    color[by0:by1, bx0:bx1] = np.clip(valve, 0, 255) * cover + patch * (1 - cover)


def cartridges(
    face: Face,
    grid: np.ndarray,
    body: np.ndarray,
    light: Light,
    fields: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    shape: tuple[int, int],
) -> tuple[list[Layer], list[Layer]]:
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
    cap = pick(rng, CARTRIDGE_COLORS) * u(0.94, 1.05)
    # Cartridges twist into a bayonet mount near the body: body-coloured or black plastic.
    mount = body * u(0.7, 0.9) if rng.random() < 0.5 else np.array([40, 40, 42], np.float32)
    split = 1.0 if style == "pancake" else u(0.55, 0.85)  # where the cap meets the mount, along the axis
    pattern = str(rng.choice(["plain", "grille", "rings", "label"]))
    label = pick(rng, (((238, 238, 234), 0.6), ((225, 200, 70), 0.2), ((60, 62, 66), 0.2)))
    dome = u(0.0, 0.35)
    mat = Material(
        ambient=u(0.35, 0.5), spec=u(0.08, 0.22), shininess=u(10.0, 25.0), curve=1.0, nose_ridge=0.0,
        grain=u(0.004, 0.012), edge_dark=0.0,
    )  # fmt: skip
    turn, tilt = u(0.75, 1.15), u(-0.05, 0.2)  # radians outwards from the face's front, and down
    v_port = u(0.42, 0.6)
    # The cartridges' tops stay well under the eyes, whatever their size.
    y_min = face.true[list(EYE_CONTOURS), 1].max() + 0.3 * s
    far = face.far_side
    layers: tuple[list[Layer], list[Layer]] = ([], [])
    for side in (0, 1):
        # The axis (x right, y down, z to the camera) turns with the head; e1, e2 span the disc.
        beta = float(np.clip((1 if side else -1) * turn + np.radians(face.yaw), -1.45, 1.45))
        axis = np.array([np.sin(beta) * np.cos(tilt), np.sin(tilt), np.cos(beta) * np.cos(tilt)])
        e1 = np.array([np.cos(beta), 0.0, -np.sin(beta)])
        e2 = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
        e2 /= np.linalg.norm(e2)
        back = grid_point(grid, 0.88 if side else 0.12, v_port)
        front = back + depth * axis[:2]
        rx, ry = max(radius * aspect * abs(np.cos(beta)), 0.5), radius * np.cos(tilt)
        drop = max(0.0, y_min - (min(back[1], front[1]) - ry))
        back, front = back + np.array([0.0, drop]), front + np.array([0.0, drop])
        lo, hi = np.minimum(back, front) - np.array([rx, ry]), np.maximum(back, front) + np.array([rx, ry])
        corners = face.to_image(np.array([lo, [hi[0], lo[1]], hi, [lo[0], hi[1]]]))
        box = bounding_box(corners, 3, shape)
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
        bevel = 0.8 * smoothstep(0.88, 0.06, d)[..., None] + dome * d[..., None]
        cap_n = axis + bevel * radial
        normal = on_cap * cap_n / np.linalg.norm(cap_n, axis=-1, keepdims=True) + (1 - on_cap) * radial
        normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-6)
        theta = np.arctan2(normal[..., 0], normal[..., 2])
        v = 0.45 + np.arcsin(np.clip(normal[..., 1], -1, 1))  # `shade_surface` tilts by (v - 0.45) * curve
        tx, ty = a_vis * rx / s + t_vis * depth / s, b_vis * ry / s
        attrs = np.stack([np.full_like(v, 0.5), v, theta, tx, ty, np.zeros_like(v)], -1).astype(np.float32)
        # Colours: cap, mount, and the cap face's moulding or label.
        wall = np.where((t_vis < split)[..., None], cap, mount)
        dark = np.zeros_like(d)
        if pattern == "grille":  # slots across the middle
            slots = np.abs((b_vis * 5.5) % 1.0 - 0.5) * 2
            dark = 0.55 * smoothstep(0.55, 0.3, slots) * smoothstep(0.62, px, -d + 1.24)
        elif pattern == "rings":
            dark = 0.35 * sum(np.exp(-(((d - r) / (1.2 * px)) ** 2)) for r in (0.45, 0.7))
        face_color = np.broadcast_to(cap, (*d.shape, 3)).astype(np.float64)
        if pattern == "label":
            inside = smoothstep(0.0, px, 0.55 - np.abs(a_vis)) * smoothstep(0.0, px, 0.38 - np.abs(b_vis))
            face_color = face_color + inside[..., None] * (label - cap)
            lines = np.exp(-((((b_vis + 0.2) % 0.16 - 0.08) / (0.8 * px)) ** 2)) * (np.abs(a_vis) < 0.42)
            dark = 0.45 * lines * (np.abs(b_vis) < 0.3)
        base = on_cap * face_color * (1 - dark)[..., None] + (1 - on_cap) * wall
        color = shade_surface(base.astype(np.float32), attrs, cover, mat, light, face, fields, rng)
        layers[side != far].append(Layer(x0, y0, color * cover[..., None], cover))
    return layers
