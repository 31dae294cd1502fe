"""The whole job, one way through: decode -> detect -> align -> generate -> composite -> paste back
-> encode. Adapters (CLI, TorchServe handler) call `UnmaskPipeline` and nothing below it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qmask.align import (
    eyes_to_crop,
    grow_region,
    inside_photo,
    mask_region,
    match_monochrome,
    paste_back,
    soften,
    warp_to_crop,
)
from qmask.faces import DetectorConfig, Face, FaceDetector
from qmask.imageio import DecodedImage, ImageError, ImageLimits, decode, encode
from qmask.model import load_generator, run_generator

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"


class NoFaceError(ImageError):
    status = 422
    code = "no_face"


class TooManyFacesError(ImageError):
    status = 422
    code = "too_many_faces"


@dataclass(frozen=True)
class PipelineConfig:
    weights: str = str(DEFAULT_WEIGHTS)
    device: str = "cpu"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_faces: int = 16
    # A face is edited only if the predicted mask covers at least this share of its crop.
    min_mask_fraction: float = 0.08
    mask_threshold: float = 0.5
    grow_px: float = 5.0
    feather_px: float = 4.0
    # Blur of the generated face (crop pixels) that removes residue of the mask's print.
    soften_px: float = 3.0
    # Average the generator's predictions for each crop and its mirror image (`run_generator`).
    mirror_average: bool = True
    batch_size: int = 16


@dataclass
class FaceResult:
    box: tuple[float, float, float, float]
    score: float
    mask_fraction: float  # share of the aligned crop predicted to be mask
    edited: bool

    def to_json(self) -> dict:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 3),
            "mask_fraction": round(self.mask_fraction, 3),
            "edited": self.edited,
        }


@dataclass
class FaceDebug:
    """What the generator saw and produced for one face, in the canonical crop."""

    crop: np.ndarray
    mask_prob: np.ndarray
    generated: np.ndarray
    weight: np.ndarray


@dataclass
class UnmaskResult:
    image: np.ndarray  # HxWx3 uint8 RGB, the input's size
    faces: list[FaceResult]
    timings: dict[str, float]  # seconds per stage
    debug: list[FaceDebug] = field(default_factory=list)


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def generate_faces(
    generator: torch.nn.Module,
    crops: np.ndarray,
    config: PipelineConfig,
    inside: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256, 256, 3) uint8 crops -> mask probabilities (N, 256, 256) and finished faces
    (N, 256, 256, 3) uint8: softened, and toned like the photo when it is monochrome.

    `inside` (N, 256, 256) marks crop pixels that come from the photo (`inside_photo`), not from
    its mirrored surroundings; it helps tell black-and-white photos (`match_monochrome`).
    """
    prob, face = run_generator(generator, crops, device, config.mirror_average)
    # A generator without a mask output (the pix2pix baseline) repaints the whole crop.
    prob = np.ones(crops.shape[:3], np.float32) if prob is None else prob
    photo = prob < config.mask_threshold
    if inside is not None:
        photo &= inside > 0.5
    return prob, match_monochrome(crops, soften(face, config.soften_px), photo)


class UnmaskPipeline:
    """Loads the face detector and the generator once; call `unmask_*` for each photo."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        weights = Path(self.config.weights)
        if not weights.is_file():
            raise FileNotFoundError(f"generator weights {weights} not found")
        self.device = torch.device(self.config.device)
        self.generator, self.generator_config, self.model_meta = load_generator(weights, self.device)
        self.detector = FaceDetector(self.config.detector)

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> UnmaskPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, crops: np.ndarray, inside: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`generate_faces` with this pipeline's generator, in batches of `config.batch_size`."""
        probs, faces = [], []
        for start in range(0, len(crops), self.config.batch_size):
            part = slice(start, start + self.config.batch_size)
            prob, face = generate_faces(
                self.generator,
                crops[part],
                self.config,
                None if inside is None else inside[part],
                self.device,
            )
            probs.append(prob)
            faces.append(face)
        return np.concatenate(probs), np.concatenate(faces)

    def unmask_array(self, rgb: np.ndarray, debug: bool = False) -> UnmaskResult:
        """Unmask every masked face in an RGB uint8 image; raises NoFaceError / TooManyFacesError."""
        result = self.unmask_arrays([rgb], debug)[0]
        if isinstance(result, ImageError):
            raise result
        return result

    def unmask_arrays(self, images: list[np.ndarray], debug: bool = False) -> list[UnmaskResult | ImageError]:
        """Unmask several images with one generator call for all their faces (server batches).

        Each item is the image's result, or the error that image got (no face, too many faces),
        so one bad photo does not fail the others. Timings are those of the whole batch.
        """
        timer = StageTimer()
        faces_per_image: list[list[Face] | ImageError] = []
        with timer("detect"):
            for rgb in images:
                faces = self.detector.detect(rgb)
                if not faces:
                    faces_per_image.append(NoFaceError("no face was found in the image"))
                elif len(faces) > self.config.max_faces:
                    faces_per_image.append(
                        TooManyFacesError(f"{len(faces)} faces found; the limit is {self.config.max_faces}")
                    )
                else:
                    faces_per_image.append(faces)
        with timer("align"):
            jobs = [
                (index, face, eyes_to_crop(face.eyes))
                for index, faces in enumerate(faces_per_image)
                if not isinstance(faces, ImageError)
                for face in faces
            ]
            crops = [warp_to_crop(images[i], m) for i, _, m in jobs]
            inside = [inside_photo(images[i].shape, m) for i, _, m in jobs]
        probs, generated = [], []
        if jobs:
            with timer("generate"):
                probs, generated = self.generate(np.stack(crops), np.stack(inside))
        outputs = {i: images[i].copy() for i, _, _ in jobs}
        face_results: dict[int, list[FaceResult]] = {i: [] for i in outputs}
        debugs: dict[int, list[FaceDebug]] = {i: [] for i in outputs}
        cfg = self.config
        for (index, face, matrix), crop, prob, gen in zip(jobs, crops, probs, generated, strict=True):
            with timer("composite"):
                region = mask_region(prob, cfg.mask_threshold)
                fraction = float(region.mean())
                edited = fraction >= cfg.min_mask_fraction
                weight = grow_region(region, cfg.grow_px, cfg.feather_px) if edited else None
            if edited:
                with timer("paste_back"):
                    paste_back(outputs[index], gen, weight, matrix)
            face_results[index].append(
                FaceResult(box=face.box, score=face.score, mask_fraction=fraction, edited=edited)
            )
            if debug:
                blend = weight if weight is not None else np.zeros_like(prob)
                debugs[index].append(FaceDebug(crop=crop, mask_prob=prob, generated=gen, weight=blend))
        return [
            faces
            if isinstance(faces, ImageError)
            else UnmaskResult(
                image=outputs[i], faces=face_results[i], timings=dict(timer.seconds), debug=debugs[i]
            )
            for i, faces in enumerate(faces_per_image)
        ]

    def unmask_bytes(
        self, data: bytes, output_format: str | None = None, debug: bool = False
    ) -> tuple[bytes, UnmaskResult, DecodedImage]:
        """Encoded photo in, encoded photo out (the input's format unless `output_format` is given)."""
        timer = StageTimer()
        with timer("decode"):
            decoded = decode(data, self.config.limits)
        result = self.unmask_array(decoded.rgb, debug=debug)
        with timer("encode"):
            encoded = encode(decoded, result.image, output_format)
        result.timings.update(timer.seconds)
        return encoded, result, decoded
