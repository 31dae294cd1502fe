"""The photo's light read from the face, the materials of drawn masks, and shading their surface."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.mesh_points import CHIN, NOSE_TIP
from training.masks.face import CHEEKS, EYE_CONTOURS, Face
from training.masks.filters import sample_tiled, smoothstep, soft


@dataclass
class Light:
    """What the photo says about its light, so the mask matches the face's exposure and shading."""

    exposure: float  # a white mask's brightness relative to 255
    cast: np.ndarray  # (3,) per-channel colour of the light
    direction: tuple[float, float, float]  # unit vector towards the light: x right, y down, z to the camera
    blur: float  # sigma in pixels of the photo's softness, applied to the mask
    noise: float  # sensor noise in grey levels


def read_light(rgb: np.ndarray, face: Face, rng: np.random.Generator) -> Light:
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
    return Light(
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


@dataclass
class Material:
    """How a drawn mask's surface reflects light and what its fabric shows. Each style's ranges
    are its `material` in styles.yaml."""

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


def shade_surface(
    base: np.ndarray,
    attrs: np.ndarray,
    alpha: np.ndarray,
    mat: Material,
    light: Light,
    face: Face,
    fields: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Lit colour (h, w, 3): a Lambert and specular model on the mask's curved surface, with
    folds, seams and fabric texture. `fields`: the tiling grain and wrinkle noise."""
    u, v, theta, tx, ty, vf = np.moveaxis(attrs, -1, 0)
    px = 1.0 / face.iod  # one pixel in iod units, the width of anti-aliased lines
    ox, oy, scale = rng.uniform(0, 128, 4).tolist(), rng.uniform(18, 30), face.iod * 0.9
    grain = sample_tiled(fields[0], tx * scale + ox[0], ty * scale + ox[1])
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
    wrinkle = sample_tiled(fields[1], tx * oy + ox[2], ty * oy * 0.6 + ox[3]) if mat.wrinkle else 0
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
        edge = soft(alpha, 0.08 * face.iod)
        band = (edge > 0.5) & (edge < 0.85)
        dots = 0.5 + 0.5 * np.cos(2 * np.pi * (tx + ty) / 0.05) * np.cos(2 * np.pi * (tx - ty) / 0.05)
        shade -= mat.emboss * band * dots
    if mat.nose_clip:
        clip = smoothstep(0.1, 0.04, -v + 0.2) * smoothstep(0.3, 0.06, -np.abs(tx) + 0.6)
        shade -= mat.nose_clip * clip
        spec = spec + 0.06 * clip
    if mat.rim:
        edge = soft(alpha, 0.05 * face.iod)
        shade -= mat.rim * np.exp(-(((edge - 0.7) / 0.08) ** 2))
    shade += mat.grain * grain
    if mat.wrinkle:
        shade *= 1 + mat.wrinkle * wrinkle
    if mat.edge_dark:
        edge = soft(alpha, 0.06 * face.iod)
        shade *= 1 - mat.edge_dark * np.clip((1 - edge) * 2.5, 0, 1)
    color = base * shade[..., None] + (spec * 255.0)[..., None]
    return np.clip(color * light.exposure * light.cast, 0, 255).astype(np.float32)
