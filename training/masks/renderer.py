"""MaskRenderer: picks a style, draws it (or warps a template) on a face and returns the composite
with its exact coverage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.masks.accessories import cartridges, strap_layer, strap_lines, valve
from training.masks.compositing import Layer, bounding_box, put_on, stack_layers
from training.masks.fabrics import (
    BENCH_COLORS,
    CLEAR_FILM_COLORS,
    CLOTH_COLORS,
    KN95_COLORS,
    N95_COLORS,
    RESPIRATOR_COLORS,
    SURGICAL_COLORS,
    clear_plastic,
    draw_graphic,
    pick,
    print_pattern,
    sample_texture,
)
from training.masks.face import TURNED_DEG, Face
from training.masks.geometry import mask_grid, rasterize, surface_attrs
from training.masks.light import Light, read_light, shade_surface
from training.masks.styles import DRAWN_KINDS, DRAWN_WEIGHTS, check_weights, style_fit
from training.masks.templates import (
    HELDOUT_TEMPLATES,
    HELDOUT_TEXTURES,
    HELDOUT_WEIGHTS,
    TEMPLATE_MAX_SIDE,
    TEMPLATE_SHARE,
    TEXTURE_MAX_SIDE,
    TEXTURE_SUFFIXES,
    TRAIN_TEMPLATES,
    TRAIN_TEXTURES,
    fit_template,
    read_config,
)


@dataclass(frozen=True)
class RenderedMask:
    """A face with a synthetic mask and the mask's exact coverage."""

    image: np.ndarray  # HxWx3 uint8 RGB, the face with the mask drawn
    alpha: np.ndarray  # HxW float32 in [0, 1]: how much of the mask covers each pixel
    kind: str  # the style, e.g. "surgical", "cloth_photo:floral/floral_3.jpg", "template:surgical_blue"


class MaskRenderer:
    """Draws random synthetic masks on faces (one renderer per worker; it caches pictures)."""

    def __init__(
        self,
        templates_dir: Path | None = None,
        split: str = "train",
        print_faces: Callable[[np.random.Generator], np.ndarray] | None = None,
        style_weights: dict[str, float] | None = None,
        template_share: float = TEMPLATE_SHARE,
        both_ears: float = 0.0,
    ) -> None:
        """`templates_dir`: the `mask-templates` folder (masks.cfg, templates/, textures/), or None for
        drawn masks only. `split` "train" uses drawn masks and the templates and textures allowed in
        training; "heldout" only the held-out ones (KN95 and gas templates, fruits and others textures).
        `print_faces(rng)` gives a random face photo (RGB) whose mouth a graphic mask may show.
        `style_weights`: the mix of drawn styles, style name -> relative weight (styles left out are
        never picked at random), or None for the weights in styles.yaml. `template_share`: the share of
        the train split's masks that are templates (when `templates_dir` is given); the heldout split
        draws templates only. `both_ears`: the share of drawn masks whose sides both reach the ears
        (`training.masks.styles._sides`; the styles' own `ears` give one side)."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
        if split == "heldout" and templates_dir is None:
            raise ValueError("the heldout split needs templates_dir")
        if not 0 <= template_share <= 1:
            raise ValueError(f"template_share must be between 0 and 1, not {template_share}")
        self.split = split
        self.template_share = template_share
        self.both_ears = both_ears
        self.print_faces = print_faces
        self.templates_dir = Path(templates_dir) if templates_dir is not None else None
        self._templates: dict[str, tuple[Path, np.ndarray]] = {}
        self._textures: dict[str, list[Path]] = {}
        if self.templates_dir is not None:
            self._templates = read_config(self.templates_dir)
            folders = TRAIN_TEXTURES if split == "train" else HELDOUT_TEXTURES
            for folder in folders:
                files = sorted((self.templates_dir / "textures" / folder).iterdir())
                self._textures[folder] = [f for f in files if f.suffix.lower() in TEXTURE_SUFFIXES]
        self.style_weights = check_weights(DRAWN_WEIGHTS if style_weights is None else style_weights)
        drawn = [k for k in self.kinds if k != "template"]
        if split == "train" and not any(self.style_weights[k] > 0 for k in drawn):
            raise ValueError(
                f"style_weights {style_weights} give no weight to any style available here: {drawn}"
            )
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
        """The styles `render` draws in this split ("template" picks any allowed template): random
        picks follow `style_weights`, and `kind` may force any of them."""
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
        true_face = Face(mesh)
        light = read_light(rgb, true_face, rng)
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
            layer, kind = self._drawn_layer(style, Face(mesh, misplace), light, rng, rgb.shape[:2])
        image, alpha = put_on(rgb, layer, light, self._sensor, rng)
        return RenderedMask(image=image, alpha=alpha, kind=kind)

    def _pick_kind(self, rng: np.random.Generator) -> str:
        if self.split == "heldout" or (self._templates and rng.random() < self.template_share):
            return "template"
        kinds = [k for k in self.kinds if k != "template" and self.style_weights[k] > 0]
        weights = np.array([self.style_weights[k] for k in kinds])
        return str(rng.choice(kinds, p=weights / weights.sum()))

    # ------------------------------------------------------------------------------------------
    # Drawn masks

    def _drawn_layer(
        self, style: str, face: Face, light: Light, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[Layer, str]:
        fit, mat, holder = style_fit(style, face, rng, self.both_ears)
        grid = mask_grid(face, fit, rng)
        img_grid = face.to_image(grid)
        pad = 4 + 3 * light.blur
        box = bounding_box(img_grid.reshape(-1, 2), pad, shape)
        if box is None:
            return Layer.empty(), style
        # The body is rendered on its own tight box; straps are cheap and may reach much further.
        x0, y0, x1, y1 = box
        offset = np.array([x0, y0])
        alpha, attrs = rasterize(img_grid - offset, surface_attrs(face, grid), (y1 - y0, x1 - x0))
        base, kind = self._fabric(style, attrs, face, rng)
        color = shade_surface(base, attrs, alpha, mat, light, face, (self._grain, self._smooth), rng)
        if style in ("n95", "kn95") and rng.random() < (0.45 if style == "n95" else 0.15):
            valve(color, attrs, grid, face, light, offset, rng)
        if style == "respirator" and rng.random() < 0.75:  # exhalation valve at the chin
            valve(color, attrs, grid, face, light, offset, rng, at=(0.5, rng.uniform(0.62, 0.72)))
        if style == "clear":  # hides less of the face than it covers
            color, opacity = clear_plastic(color, base, attrs, rng)
            body = Layer(x0, y0, color * (alpha * opacity)[..., None], alpha * opacity, coverage=alpha)
        else:
            body = Layer(x0, y0, color * alpha[..., None], alpha)
        # Bottom to top: straps, cartridges behind the body, the body, cartridges in front.
        under, over = [], []
        fabric = base.reshape(-1, 3).mean(0) if holder == "fabric_loops" else None
        straps = strap_lines(face, grid, holder, fabric, rng) if holder else None
        if straps is not None:
            lines, width, strap_color = straps
            box = bounding_box(np.concatenate([img_grid.reshape(-1, 2), *lines]), pad, shape) or box
            under.append(strap_layer(lines, width, strap_color * light.exposure * light.cast, box))
        if style == "respirator":
            fields = (self._grain, self._smooth)
            behind, over = cartridges(face, grid, base[0, 0], light, fields, rng, shape)
            under += behind
        return stack_layers([*under, body, *over]), kind

    def _fabric(
        self, style: str, attrs: np.ndarray, face: Face, rng: np.random.Generator
    ) -> tuple[np.ndarray, str]:
        """The mask's base colour (h, w, 3) before lighting, and the kind string."""
        tx, ty = attrs[..., 3], attrs[..., 4]
        shape = tx.shape
        if style == "surgical":
            color = pick(rng, SURGICAL_COLORS)
        elif style == "n95":
            color = pick(rng, N95_COLORS)
        elif style == "kn95":
            color = pick(rng, KN95_COLORS)
        elif style == "cloth" or (style == "scarf" and rng.random() < 0.6):
            color = pick(rng, CLOTH_COLORS)
        elif style == "scarf":
            return print_pattern(tx, ty, face.iod, self._smooth, rng), style
        elif style == "bench":
            color = pick(rng, BENCH_COLORS)
        elif style == "respirator":
            color = pick(rng, RESPIRATOR_COLORS)
        elif style == "clear":
            color = pick(rng, CLEAR_FILM_COLORS)
        elif style == "cloth_printed":
            return print_pattern(tx, ty, face.iod, self._smooth, rng), style
        elif style == "cloth_graphic":
            graphic, what = draw_graphic(rng, self.print_faces)
            # The graphic spans the mask: u, v run 0..1 across it.
            gx = (attrs[..., 0] * (graphic.shape[1] - 1)).astype(np.float32)
            gy = (attrs[..., 1] * (graphic.shape[0] - 1)).astype(np.float32)
            return cv2.remap(
                graphic, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            ), f"{style}:{what}"
        elif style == "cloth_photo":
            name, path = self._random_texture(rng)
            return sample_texture(self._texture(path), tx, ty, face.iod, rng), f"{style}:{name}"
        else:  # a style added to styles.yaml needs its fabric here
            raise ValueError(f"no fabric for the style {style!r}")
        jitter = rng.uniform(0.94, 1.05) * rng.uniform(0.97, 1.03, 3)
        return np.broadcast_to(np.clip(color * jitter, 0, 255).astype(np.float32), (*shape, 3)), style

    # ------------------------------------------------------------------------------------------
    # Templates

    def _template_layer(
        self, face: Face, family: str, light: Light, rng: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[Layer, str]:
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
        homography = fit_template(rgba[..., 3], src, face, rng)
        if homography is None:
            return Layer.empty(), kind
        th, tw = rgba.shape[:2]
        corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float64)
        box = bounding_box(cv2.perspectiveTransform(corners[None], homography)[0], 4 + 3 * light.blur, shape)
        if box is None:
            return Layer.empty(), kind
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
            tex = sample_texture(self._texture(texture[1]), xs / face.iod, ys / face.iod, face.iod, rng)
            color = tex * np.clip(lum / max(ref, 1.0), 0.3, 1.6) ** 0.8
        # Light the picture like the photo: exposure, colour cast and a gradient along the light.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rel = ((xs - face.origin[0]) * face.rot[0, 0] + (ys - face.origin[1]) * face.rot[1, 0]) / face.iod
        grad = 1.0 + 0.12 * light.direction[0] * np.clip(rel, -1.2, 1.2)
        color = color * (grad * light.exposure)[..., None] * light.cast
        color = np.clip(color, 0, 255).astype(np.float32)
        return Layer(x0, y0, color * alpha[..., None], alpha.astype(np.float32)), kind

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
