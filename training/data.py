"""Training pairs made on the fly from a face pack, aligned exactly as inference aligns a photo
(from the eye centres), with a little random error in that alignment so the networks tolerate
detector noise.

- `MaskedFaceDataset` (segmenter): a synthetic mask drawn on the face, and where it is.
- `HoleDataset` (inpainter): the bare face and a mask-shaped hole; no mask is drawn at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TypeVar

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from qmask.align import (
    CROP_SIZE,
    eyes_to_crop,
    inside_photo,
    invert,
    mesh_eyes,
    transform_points,
    warp_to_crop,
)
from qmask.model import images_to_tensor
from training.holes import HoleConfig, mask_shaped_hole
from training.masks import DRAWN_WEIGHTS, TEMPLATE_SHARE, MaskRenderer, RenderedMask
from training.masks.occluders import occlude
from training.pack import FacePack

Config = TypeVar("Config")


@dataclass(frozen=True)
class DataConfig:
    pack: str = "cache/utkface_pack.npz"
    templates_dir: str | None = "../shared/data/mask-templates"
    # Alignment error simulated in training, as fractions of the eye distance / degrees.
    jitter_shift: float = 0.04
    jitter_scale: float = 0.05
    jitter_rotate_deg: float = 4.0
    flip: bool = True
    # Share of pairs turned black-and-white, so grey photos get grey faces.
    grayscale: float = 0.08
    # Segmenter: share of faces with no mask at all (empty region), so bare faces are left alone.
    unmasked: float = 0.2
    # Segmenter: share of pairs, masked or bare alike, shown as inference shows a photo: mirrored
    # beyond its edges, not on a canvas (faces cut by the photo's edge, mirrored, were taken for
    # masked). Given to bare faces only, it taught that a mirrored crop is bare, and tightly framed
    # masked photos were left alone.
    mirrored: float = 0.25
    # Segmenter: share of pairs seen at a low resolution, the crop's side shrunk to between these
    # many pixels and enlarged again: small faces in the background of a photo reach the segmenter
    # enlarged from a few tens of pixels, and blurred bare faces were taken for masked.
    low_resolution: float = 0.25
    low_resolution_px: tuple[int, int] = (32, 128)
    # Segmenter: share of pairs that are no face at all, with an empty region: a blurred window of
    # another photo or a plain colour, as the detector's rare false faces (a patch of skin, a dark
    # background, enlarged from a few pixels) reach the segmenter, which took them for masked.
    not_a_face: float = 0.05
    # Segmenter: share of pairs, masked or bare, with a hand at the face or a collar at the neck drawn
    # over the photo and its mask, never part of the truth (`training.masks.occluders`): real photos
    # show both, and hands, dark collars and turtlenecks were taken for mask. (0: no draw, so runs
    # without them keep their pairs.)
    occluders: float = 0.0
    # Segmenter: the mix of drawn mask styles (training/masks/styles.yaml has them and their default
    # weights) and the share of the mask templates, written into each run's config.yaml.
    mask_styles: dict[str, float] = field(default_factory=lambda: dict(DRAWN_WEIGHTS))
    template_share: float = TEMPLATE_SHARE
    # Segmenter: the share of drawn masks whose sides both reach the ears, past the face's outline
    # over the hair or background (the styles give one side of a few; real surgical and cloth masks
    # often reach both, and their sides there were left by the segmenters). 0: no draw, so runs
    # without it keep their masks.
    both_ears: float = 0.0
    # Segmenter: beyond the photo's edges, show another training photo or a plain colour, and draw
    # the mask over it too. UTKFace crops end just under the chin: mirrored there, a dark mask
    # looked like it went on into the neck (dark collars were taken for mask), and with the mask
    # clipped at the photo's edge the segmenter learnt that a mask ends there, so on real photos it
    # missed every rim under the chin and every side out towards the ears.
    foreign_surroundings: bool = True
    # Share of pairs whose photo is cut closer to the face than UTKFace's, as a real photo framed
    # tightly ends at the cheek or the chin.
    # Inpainter: the hole runs into that edge, where the inpainter cannot tell the hole from the
    # erased surroundings. The hole is still scored where it reaches past the cut, as the truth is
    # known there. It matters only with `erase_outside_photo`: without it the inpainter sees the
    # mirrored crop, which the cut leaves as it is. (Models 3.1 to 3.5: 0.25. The streaks along such
    # edges it was meant for stayed; they come from the critic judging the mirrored surroundings,
    # see `DiscriminatorConfig.known_only`.)
    # Segmenter: a share of the `mirrored` pairs, the photo and its drawn mask cut and mirrored
    # beyond the cut: UTKFace's photos all end near the training window, so the segmenter had only
    # seen the mirror line there, and where a real photo ends at the chin or cheek its probability
    # falls along the edge (the mask's rim left there unless the hole's grow covers it).
    tight_frame: float = 0.0
    # Where a cut edge falls, in crop pixels (the eyes are at x 100 and 156, y 92; the photos mostly
    # end near `TRAINING_PHOTO_WINDOW`, 44, 41, 213, 210): left, right, bottom.
    tight_frame_left: tuple[float, float] = (48.0, 85.0)
    tight_frame_right: tuple[float, float] = (171.0, 208.0)
    tight_frame_bottom: tuple[float, float] = (172.0, 205.0)
    # Inpainter: share of pairs whose whole crop (the photo and so the truth too) gets a random
    # colour cast, exposure and gamma: the painted lower face's colour is most of the error left in
    # the hole (on the frozen bench, each face's mean colour offset taken away would score 25.41
    # instead of 25.00), and UTKFace's photos share one look; a colour learnt from the face around
    # the hole rather than from that look should carry to other cameras. (Half of the pairs for 55
    # minutes from 3.4, cpu_inpainter_3.5.yaml: the offsets' spread as it was, the bench +0.03 dB;
    # shipped as model 3.5.)
    colour_jitter: float = 0.0
    # Ranges of those changes: exposure (a factor), each channel's gain (a factor), gamma.
    colour_jitter_exposure: tuple[float, float] = (0.75, 1.25)
    colour_jitter_gain: tuple[float, float] = (0.9, 1.1)
    colour_jitter_gamma: tuple[float, float] = (0.8, 1.25)
    holes: HoleConfig = field(default_factory=HoleConfig)

    @classmethod
    def from_dict(cls, raw: dict) -> DataConfig:
        raw = _lists_as_tuples(raw)
        if "holes" in raw:
            raw["holes"] = config_from_dict(HoleConfig, _lists_as_tuples(raw["holes"]), "data.holes")
        return config_from_dict(cls, raw, "data")


def config_from_dict(cls: type[Config], raw: dict, section: str) -> Config:
    """`cls(**raw)` for a configuration dataclass, with an error that names a key it lacks (a typo in a
    YAML config or a `--set` override), the `section` it was in and the keys it takes."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        takes = ", ".join(sorted(known))
        raise ValueError(f"unknown key in {section}: {', '.join(unknown)} (it takes {takes})")
    return cls(**raw)


def _lists_as_tuples(raw: dict) -> dict:
    """YAML has lists where the configs have tuples (a run's config.yaml is read back too)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def to_plane(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).float().reshape(1, CROP_SIZE, CROP_SIZE)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))[..., None], 3, axis=2
    )


def jittered_eyes(eyes: np.ndarray, rng: np.random.Generator, config: DataConfig) -> np.ndarray:
    centre = eyes.mean(axis=0)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    angle = math.radians(rng.uniform(-config.jitter_rotate_deg, config.jitter_rotate_deg))
    scale = 1 + rng.uniform(-config.jitter_scale, config.jitter_scale)
    shift = rng.uniform(-config.jitter_shift, config.jitter_shift, size=2) * iod
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    return (eyes - centre) @ rot.T + centre + shift


class _PackDataset(Dataset):
    def __init__(self, pack: FacePack, config: DataConfig, seed: int = 0) -> None:
        self.pack, self.config, self.seed, self.epoch = pack, config, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """New masks, holes and jitter every epoch, reproducibly."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pack)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _matrix(self, mesh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        eyes = mesh_eyes(mesh)
        return eyes_to_crop(jittered_eyes(eyes, rng, self.config))

    def _frame_cuts(self, rng: np.random.Generator) -> tuple[float | None, float | None, float | None]:
        """Where a tightly framed photo ends in the crop (`DataConfig.tight_frame`): its left, right
        and bottom edges in crop pixels, one to three of them cut (None: not cut)."""
        cfg = self.config
        sides = rng.random(3) < 0.5
        sides[rng.integers(3)] = True
        left = rng.uniform(*cfg.tight_frame_left) if sides[0] else None
        right = rng.uniform(*cfg.tight_frame_right) if sides[1] else None
        bottom = rng.uniform(*cfg.tight_frame_bottom) if sides[2] else None
        return left, right, bottom

    def _finish(
        self, rng: np.random.Generator, images: list[np.ndarray], planes: list[np.ndarray]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The same flip for every image and plane, the same grey for every image."""
        if self.config.flip and rng.random() < 0.5:
            images, planes = [im[:, ::-1] for im in images], [p[:, ::-1] for p in planes]
        if rng.random() < self.config.grayscale:
            images = [to_gray(im) for im in images]
        return [images_to_tensor(im) for im in images], [to_plane(p) for p in planes]


class MaskedFaceDataset(_PackDataset):
    """Items: `image` the masked crop (3x256x256 in [-1, 1]), `alpha` the mask's coverage and
    `inside` the weight of pixels inside the photo, not its surroundings (1x256x256 in [0, 1])."""

    def __init__(self, pack: FacePack, renderer: MaskRenderer, config: DataConfig, seed: int = 0) -> None:
        super().__init__(pack, config, seed)
        self.renderer = renderer

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        if rng.random() < self.config.not_a_face:
            return self._not_a_face(rng)
        rgb, mesh = self.pack.image(index), self.pack.mesh(index)
        bare = rng.random() < self.config.unmasked
        matrix = self._matrix(mesh, rng)
        inside = inside_photo(rgb.shape, matrix)
        mirrored = rng.random() < self.config.mirrored
        if self.config.foreign_surroundings and not mirrored:
            rgb, mesh, matrix = self._on_canvas(rgb, mesh, matrix, self._surroundings(rng))
        if bare:
            drawn = RenderedMask(image=rgb, alpha=np.zeros(rgb.shape[:2], np.float32), kind="none")
        else:
            drawn = self.renderer.render(rgb, mesh, rng)
        if self.config.occluders > 0 and rng.random() < self.config.occluders:
            drawn = occlude(drawn, mesh, rng)
        # No draw without tight frames, so runs without them keep their pairs (and their seeds' results).
        if mirrored and self.config.tight_frame > 0 and rng.random() < self.config.tight_frame:
            drawn, matrix = self._cut_photo(drawn, matrix, rng)
            inside = inside_photo(drawn.image.shape, matrix)
        masked = warp_to_crop(drawn.image, matrix)
        alpha = warp_to_crop(drawn.alpha, matrix)
        if rng.random() < self.config.low_resolution:
            masked = self._low_resolution(masked, rng)
        (image,), (alpha_t, inside_t) = self._finish(rng, [masked], [alpha, inside])
        return {"image": image, "alpha": alpha_t, "inside": inside_t}

    def _cut_photo(
        self, drawn: RenderedMask, matrix: np.ndarray, rng: np.random.Generator
    ) -> tuple[RenderedMask, np.ndarray]:
        """The masked photo and its mask cut along photo rows and columns where the crop's
        `_frame_cuts` fall (a real photo's edges are the photo's, not the crop's), with the crop's
        matrix moved to the cut photo."""
        left, right, bottom = self._frame_cuts(rng)
        h, w = drawn.image.shape[:2]
        inv = invert(matrix)
        middle = CROP_SIZE / 2

        def to_photo(x: float, y: float) -> np.ndarray:
            return transform_points(np.array([[x, y]], np.float64), inv)[0]

        x0 = 0 if left is None else int(np.clip(round(to_photo(left, middle)[0]), 0, w - 2))
        x1 = w if right is None else int(np.clip(round(to_photo(right, middle)[0]), x0 + 2, w))
        y1 = h if bottom is None else int(np.clip(round(to_photo(middle, bottom)[1]), 2, h))
        moved = matrix.copy()
        moved[:, 2] += matrix[:, :2] @ np.array([x0, 0], np.float64)
        cut = RenderedMask(
            image=np.ascontiguousarray(drawn.image[:y1, x0:x1]),
            alpha=np.ascontiguousarray(drawn.alpha[:y1, x0:x1]),
            kind=drawn.kind,
        )
        return cut, moved

    @staticmethod
    def _on_canvas(
        rgb: np.ndarray, mesh: np.ndarray, matrix: np.ndarray, surroundings: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The photo on a canvas that covers the whole crop, `surroundings` (a crop-sized picture)
        around it, with the mesh and the crop's matrix moved to the canvas: a mask drawn there goes
        on past the photo's edges as real masks go on past the chin."""
        corners = np.array([[0, 0], [CROP_SIZE, 0], [0, CROP_SIZE], [CROP_SIZE, CROP_SIZE]], np.float64)
        footprint = transform_points(corners, invert(matrix))
        h, w = rgb.shape[:2]
        x0, y0 = np.floor(np.minimum(footprint.min(axis=0), 0)).astype(int)
        x1, y1 = np.ceil(np.maximum(footprint.max(axis=0), (w, h))).astype(int)
        moved = matrix.copy()
        moved[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
        canvas = cv2.warpAffine(
            surroundings.astype(np.uint8),
            invert(moved),
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        canvas[-y0 : h - y0, -x0 : w - x0] = rgb
        shifted = mesh.copy()
        shifted[:, :2] -= (x0, y0)
        return canvas, shifted, moved

    def _not_a_face(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A window of 10-50% of the surroundings' side, enlarged to the whole crop, and no mask."""
        side = rng.uniform(0.1, 0.5) * CROP_SIZE
        x, y = rng.uniform(0, CROP_SIZE - side, 2)
        scale = CROP_SIZE / side
        zoom = np.array([[scale, 0, -x * scale], [0, scale, -y * scale]])
        crop = warp_to_crop(self._surroundings(rng).astype(np.uint8), zoom)
        empty = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
        (image,), (alpha, inside) = self._finish(rng, [crop], [empty, np.ones_like(empty)])
        return {"image": image, "alpha": alpha, "inside": inside}

    def _low_resolution(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The crop as a face of a few tens of pixels looks once aligned: shrunk, then enlarged."""
        side = int(rng.integers(*self.config.low_resolution_px, endpoint=True))
        small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)

    def _surroundings(self, rng: np.random.Generator) -> np.ndarray:
        """A 256x256 stand-in for what lies around the photo: a plain (often dark) colour with a
        little texture, or another training photo moved and scaled at random."""
        if rng.random() < 0.3:
            colour = rng.uniform(0, 255, 3) * rng.uniform(0.1, 1.0)
            noise = rng.normal(0, rng.uniform(1, 8), (CROP_SIZE, CROP_SIZE, 1))
            return np.clip(colour + noise, 0, 255).astype(np.float32)
        other = self.pack.image(int(rng.integers(len(self.pack))))
        scale = rng.uniform(1.0, 1.6) * CROP_SIZE / other.shape[1]
        shift = rng.uniform(-0.4, 0.4, 2) * CROP_SIZE
        matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
        if rng.random() < 0.5:
            matrix[0] = [-scale, 0, CROP_SIZE - shift[0]]
        return warp_to_crop(other, matrix).astype(np.float32)


class HoleDataset(_PackDataset):
    """Items: `image` the bare face crop (3x256x256 in [-1, 1]), `hole` a mask-shaped hole,
    `inside` the weight of pixels shown as the photo and `known` of those whose truth is known
    (1x256x256 in [0, 1]; they differ only where `DataConfig.tight_frame` cut the photo). Beyond
    the photo the crop is mirrored, as at inference."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        rgb, mesh = self.pack.image(index), self.pack.mesh(index)
        matrix = self._matrix(mesh, rng)
        crop = warp_to_crop(rgb, matrix)
        hole = mask_shaped_hole(mesh, matrix, rng, self.config.holes)
        known = inside_photo(rgb.shape, matrix)
        # No draw without tight frames, so runs without them keep their pairs (and their seeds' results).
        cut = self.config.tight_frame > 0 and rng.random() < self.config.tight_frame
        inside = self._tight_frame(known, rng) if cut else known
        if self.config.colour_jitter > 0 and rng.random() < self.config.colour_jitter:
            crop = self._colour_cast(crop, rng)
        (image,), (hole_t, inside_t, known_t) = self._finish(rng, [crop], [hole, inside, known])
        return {"image": image, "hole": hole_t, "inside": inside_t, "known": known_t}

    def _colour_cast(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The crop as another camera might have taken it (`DataConfig.colour_jitter`)."""
        cfg = self.config
        gain = rng.uniform(*cfg.colour_jitter_exposure) * rng.uniform(*cfg.colour_jitter_gain, size=3)
        gamma = rng.uniform(*cfg.colour_jitter_gamma)
        cast = (crop.astype(np.float32) / 255.0) ** gamma * gain
        return np.clip(np.rint(cast * 255.0), 0, 255).astype(np.uint8)

    def _tight_frame(self, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`inside` with the photo cut at one to three of its left, right and bottom edges."""
        left, right, bottom = self._frame_cuts(rng)
        cut = inside.copy()
        if left is not None:
            cut[:, : round(left)] = 0
        if right is not None:
            cut[:, round(right) :] = 0
        if bottom is not None:
            cut[round(bottom) :] = 0
        return cut
