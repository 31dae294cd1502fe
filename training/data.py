"""Paired training data made on the fly: an unmasked face, a synthetic mask drawn on it, and
both warped to the canonical crop exactly as inference warps a photo (from the eye centres),
with a little random error in that alignment so the generator tolerates detector noise."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from qmask.align import CROP_SIZE, eyes_to_crop, inside_photo, warp_to_crop
from qmask.faces import mesh_eyes
from training.masks import MaskRenderer, RenderedMask


@dataclass(frozen=True)
class DataConfig:
    faces_dir: str = "../shared/data/train/utkface"
    landmarks: str = "cache/utkface.npz"
    templates_dir: str | None = "../shared/data/mask-templates"
    # Alignment error simulated in training, as fractions of the eye distance / degrees.
    jitter_shift: float = 0.04
    jitter_scale: float = 0.05
    jitter_rotate_deg: float = 4.0
    flip: bool = True
    # Share of pairs turned black-and-white (masked input and truth alike), so grey photos get
    # grey faces.
    grayscale: float = 0.08
    # Share of pairs with no mask at all (input = truth, empty mask), so the mask output learns
    # to stay empty on bare faces and the pipeline leaves unmasked people alone.
    unmasked: float = 0.1
    # Beyond the photo's edges, show another training photo or a plain colour, never part of the
    # mask: UTKFace crops end at the chin, and mirrored there a dark mask looked like it went on
    # into the neck, so the model took dark collars and suits below a chin for mask.
    foreign_surroundings: bool = True


def is_heldout(name: str, percent: int = 5) -> bool:
    """A fixed slice of the training folder never trained on, for the per-group evaluation."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < percent


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(127.5).sub(1)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """3xHxW in [-1, 1] -> HxWx3 uint8."""
    return t.detach().float().add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def jittered_matrix(eyes: np.ndarray, rng: np.random.Generator, config: DataConfig) -> np.ndarray:
    centre = eyes.mean(axis=0)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    angle = math.radians(rng.uniform(-config.jitter_rotate_deg, config.jitter_rotate_deg))
    scale = 1 + rng.uniform(-config.jitter_scale, config.jitter_scale)
    shift = rng.uniform(-config.jitter_shift, config.jitter_shift, size=2) * iod
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    return (eyes - centre) @ rot.T + centre + shift


class SyntheticMaskDataset(Dataset):
    """Items: masked crop, true crop (3x256x256 in [-1, 1]), mask alpha and the weight of pixels
    inside the photo, not its surroundings (1x256x256 in [0, 1])."""

    def __init__(
        self,
        names: list[str],
        meshes: dict[str, np.ndarray],
        renderer: MaskRenderer,
        config: DataConfig,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        self.names, self.meshes, self.renderer, self.config = names, meshes, renderer, config
        self.seed, self.augment, self.epoch = seed, augment, 0

    def set_epoch(self, epoch: int) -> None:
        """New masks every epoch, reproducibly."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        name = self.names[index]
        rgb = np.asarray(Image.open(Path(self.config.faces_dir) / name).convert("RGB"))
        mesh = self.meshes[name]
        if self.augment and rng.random() < self.config.unmasked:
            drawn = RenderedMask(image=rgb, alpha=np.zeros(rgb.shape[:2], np.float32), kind="none")
        else:
            drawn = self.renderer.render(rgb, mesh, rng)
        eyes = mesh_eyes(mesh)
        if self.augment:
            eyes = jittered_matrix(eyes, rng, self.config)
        matrix = eyes_to_crop(eyes)
        masked = warp_to_crop(drawn.image, matrix)
        target = warp_to_crop(rgb, matrix)
        alpha = warp_to_crop(drawn.alpha, matrix)
        inside = inside_photo(rgb.shape, matrix)
        if self.augment and self.config.foreign_surroundings:
            around = self._surroundings(rng)
            weight = inside[..., None]
            masked = np.rint(weight * masked + (1 - weight) * around).astype(np.uint8)
            target = np.rint(weight * target + (1 - weight) * around).astype(np.uint8)
            alpha = alpha * inside
        if self.augment and self.config.flip and rng.random() < 0.5:
            masked, target, alpha, inside = masked[:, ::-1], target[:, ::-1], alpha[:, ::-1], inside[:, ::-1]
        if self.augment and rng.random() < self.config.grayscale:
            masked, target = to_gray(masked), to_gray(target)
        return {
            "masked": to_tensor(masked),
            "target": to_tensor(target),
            "alpha": to_plane(alpha),
            "inside": to_plane(inside),
        }

    def _surroundings(self, rng: np.random.Generator) -> np.ndarray:
        """A 256x256 stand-in for what lies around the photo: a plain (often dark) colour with a
        little texture, or another training photo moved and scaled at random."""
        if rng.random() < 0.3:
            colour = rng.uniform(0, 255, 3) * rng.uniform(0.1, 1.0)
            noise = rng.normal(0, rng.uniform(1, 8), (CROP_SIZE, CROP_SIZE, 1))
            return np.clip(colour + noise, 0, 255).astype(np.float32)
        other = Image.open(Path(self.config.faces_dir) / self.names[rng.integers(len(self.names))])
        other = np.asarray(other.convert("RGB"))
        scale = rng.uniform(1.0, 1.6) * CROP_SIZE / other.shape[1]
        shift = rng.uniform(-0.4, 0.4, 2) * CROP_SIZE
        matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]])
        if rng.random() < 0.5:
            matrix[0] = [-scale, 0, CROP_SIZE - shift[0]]
        return warp_to_crop(other, matrix).astype(np.float32)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))[..., None], 3, axis=2
    )


def to_plane(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).float().reshape(1, CROP_SIZE, CROP_SIZE)
