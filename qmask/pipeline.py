"""The whole job, one way through: decode -> detect -> align -> segment -> plan the edit -> inpaint
-> paste back -> encode. Adapters (CLI, TorchServe handler) call `UnmaskPipeline`; video and
evaluation call its stage methods (`segment`, `plan`, `inpaint`, `unmask_crops`), so every path
through the product makes the same decisions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qmask.align import align_face, paste_back, training_window, transform_points
from qmask.blend import (
    BlendConfig,
    Edit,
    blend,
    fill_unseen,
    match_monochrome,
    plan_edit,
)
from qmask.errors import InputError
from qmask.faces import DetectorConfig, Face, FaceDetector
from qmask.imageio import ImageLimits, decode, encode
from qmask.model import load_model, run_inpainter, run_segmenter, supports_bf16

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"


class NoFaceError(InputError):
    status = 422
    code = "no_face"


class TooManyFacesError(InputError):
    status = 422
    code = "too_many_faces"


@dataclass(frozen=True)
class PipelineConfig:
    weights: str = str(DEFAULT_WEIGHTS)
    device: str = "cpu"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    limits: ImageLimits = field(default_factory=ImageLimits)
    blend: BlendConfig = field(default_factory=BlendConfig)
    max_faces: int = 16
    # Average each network's output for the crop and its mirror image: a steadier region, and a
    # painted face with less guesswork in it (on 60 frozen-benchmark photos +0.2 dB PSNR and
    # -0.001 LPIPS for the inpainter), for twice each network's time.
    mirror_segment: bool = True
    mirror_inpaint: bool = True
    # Both networks in bf16 autocast. None: where the device computes bf16 natively
    # (`qmask.model.supports_bf16`), where it is faster than fp32; on the frozen benchmark it cost
    # 0.02 dB PSNR and no LPIPS (docs/results.md, "Speed").
    bf16: bool | None = None
    batch_size: int = 16


# Command-line spellings of `PipelineConfig.bf16`.
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}

# Why a face was left as it was: the API's `reason` code and its words for people.
NO_MASK = "no_mask"
REASONS = {NO_MASK: "no mask was seen on this face"}


@dataclass
class FaceResult:
    box: tuple[float, float, float, float]
    score: float
    mask_fraction: float  # share of the aligned crop in the predicted mask region
    edited: bool

    @property
    def reason(self) -> str | None:
        """Why the face was left alone (a key of REASONS), None when it was edited."""
        return None if self.edited else NO_MASK

    def to_json(self) -> dict:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 3),
            "mask_fraction": round(self.mask_fraction, 3),
            "edited": self.edited,
            "reason": self.reason,
        }


@dataclass
class CropResult:
    """One face through segment, plan and inpaint, in the canonical crop."""

    crop: np.ndarray  # what the networks saw (256x256x3 uint8)
    mask_prob: np.ndarray  # segmenter's probabilities (256x256 float32)
    edit: Edit
    # the inpainter's face (toned like the photo; the crop itself beyond the edit), None when not edited
    painted: np.ndarray | None
    # What the inpainter got erased (256x256 float32, 1: erased), None when not edited
    erased: np.ndarray | None = None

    @property
    def output(self) -> np.ndarray:
        """The crop as the photo will show it."""
        return self.crop if self.painted is None else blend(self.crop, self.painted, self.edit.weight)


@dataclass
class UnmaskResult:
    image: np.ndarray  # HxWx3 uint8 RGB, the input's size
    faces: list[FaceResult]
    timings: dict[str, float]  # seconds per stage
    debug: list[CropResult] = field(default_factory=list)


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class UnmaskPipeline:
    """Loads the face detector and both networks once; call `unmask_*` for each photo."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        weights = Path(self.config.weights)
        if not weights.is_file():
            raise FileNotFoundError(f"model weights {weights} not found")
        self.device = torch.device(self.config.device)
        self.bf16 = supports_bf16(self.device) if self.config.bf16 is None else self.config.bf16
        self.model = load_model(weights, self.device)
        self.detector = FaceDetector(self.config.detector)

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> UnmaskPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batched(self, run: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
        size = self.config.batch_size
        parts = [run(*(a[i : i + size] for a in arrays)) for i in range(0, len(arrays[0]), size)]
        return np.concatenate(parts)

    def segment(self, crops: np.ndarray) -> np.ndarray:
        """Stage 1: (N, 256, 256, 3) uint8 crops -> mask probabilities (N, 256, 256) float32."""
        return self._batched(
            lambda part: run_segmenter(
                self.model.segmenter, part, self.device, self.config.mirror_segment, self.bf16
            ),
            crops,
        )

    def plan(
        self,
        mask_prob: np.ndarray,
        crop_mesh: np.ndarray | None = None,
        inside: np.ndarray | None = None,
        crop: np.ndarray | None = None,
    ) -> Edit:
        """The region, the decision and the blend weight for one face (`qmask.blend.plan_edit`);
        `crop_mesh` is its face mesh in crop pixels (None where it was not fitted), `inside` its
        crop's pixels from the photo, `crop` the crop the mask's colour is read from."""
        return plan_edit(mask_prob, self.config.blend, crop_mesh, inside, crop)

    def inpainter_erased(self, holes: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
        """What the inpainter gets erased ((N,) 256, 256 float32, 1: erased): the holes, and for an
        inpainter trained with the surroundings erased (`QMaskModel.inpainter_erases_outside_photo`)
        all its training crops never showed: the mirrored surroundings (`inside` < 0.5) and the
        photo beyond `TRAINING_PHOTO_WINDOW`."""
        if not self.model.inpainter_erases_outside_photo:
            return holes
        # Shown more of the photo than its training crops held (the neck, the collar, the background
        # beside the head), it paints pale, blurred faces: on the frozen benchmark LPIPS 0.119 with
        # the whole photo, 0.105 with this window.
        seen = training_window(holes.shape[-1]).astype(np.float32)
        if inside is not None:
            seen = seen * (inside > 0.5)
        return np.maximum(holes, 1 - seen)

    def inpaint(
        self,
        crops: np.ndarray,
        edits: list[Edit],
        inside: np.ndarray | None = None,
        erased: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stage 2: the faces painted into each edit's hole (N, 256, 256, 3) uint8, toned like the
        photo when it is monochrome, what it painted blind beyond its training photos' window (and
        just inside its sides) filled from around it (`BlendConfig.unseen_fill_px`,
        `unseen_inset_px`). `inside` (N, 256, 256) marks crop pixels that come from the photo, not
        from its mirrored surroundings (`inside_photo`); it helps tell grey photos, keeps mirrored
        pixels out of the tone, and says what else the inpainter gets erased: `erased`,
        `inpainter_erased` of the holes and `inside`, worked out here unless the caller has it
        already."""
        holes = np.stack([edit.hole for edit in edits])
        if erased is None:
            erased = self.inpainter_erased(holes, inside)
        painted = self._batched(
            lambda c, h: run_inpainter(
                self.model.inpainter, c, h, self.device, self.config.mirror_inpaint, self.bf16
            ),
            crops,
            erased,
        )
        # The photo's own pixels: outside the hole (which may be coloured mask) and inside the photo.
        photo = holes < 0.5
        if inside is not None:
            photo &= inside > 0.5
        painted = match_monochrome(crops, painted, photo)
        radius = self.config.blend.unseen_fill_px
        if radius is not None and self.model.inpainter_erases_outside_photo:
            beyond = ~training_window(crops.shape[1], self.config.blend.unseen_inset_px)
            fade = self.config.blend.unseen_fade_px
            for i, edit in enumerate(edits):
                outside = None if inside is None else inside[i] <= 0.5
                unseen = (edit.weight > 0) & beyond
                if outside is not None:
                    unseen &= ~outside
                painted[i] = fill_unseen(crops[i], painted[i], edit.weight, unseen, radius, outside, fade)
        # Beyond the edit the face is the crop's own pixels: paste-back interpolates between each
        # pixel of the edit's outline and its neighbours beyond, and what the inpainter painted there
        # (blind beyond the window) showed as a thin light line along the outline (449 by the ear).
        for face, crop, edit in zip(painted, crops, edits, strict=True):
            beyond_edit = edit.weight <= 0
            face[beyond_edit] = crop[beyond_edit]
        return painted

    def unmask_crops(
        self,
        crops: np.ndarray,
        inside: np.ndarray | None = None,
        timer: StageTimer | None = None,
        crop_meshes: Sequence[np.ndarray | None] | None = None,
    ) -> list[CropResult]:
        """Segment, plan and inpaint aligned crops (N, 256, 256, 3); only faces with a mask are
        painted. `crop_meshes`: each face's mesh in crop pixels, or None (see `plan`)."""
        timer = timer or StageTimer()
        crop_meshes = crop_meshes if crop_meshes is not None else [None] * len(crops)
        with timer("segment"):
            probs = self.segment(crops)
        with timer("plan"):
            edits = [
                self.plan(prob, mesh, None if inside is None else inside[i], crops[i])
                for i, (prob, mesh) in enumerate(zip(probs, crop_meshes, strict=True))
            ]
        chosen = [i for i, edit in enumerate(edits) if edit.edited]
        painted: dict[int, np.ndarray] = {}
        erased: dict[int, np.ndarray] = {}
        if chosen:
            with timer("inpaint"):
                chosen_inside = None if inside is None else inside[chosen]
                chosen_erased = self.inpainter_erased(
                    np.stack([edits[i].hole for i in chosen]), chosen_inside
                )
                faces = self.inpaint(crops[chosen], [edits[i] for i in chosen], chosen_inside, chosen_erased)
            painted = dict(zip(chosen, faces, strict=True))
            erased = dict(zip(chosen, chosen_erased, strict=True))
        return [
            CropResult(crop=crop, mask_prob=prob, edit=edit, painted=painted.get(i), erased=erased.get(i))
            for i, (crop, prob, edit) in enumerate(zip(crops, probs, edits, strict=True))
        ]

    def unmask_array(self, rgb: np.ndarray, debug: bool = False) -> UnmaskResult:
        """Unmask every masked face in an RGB uint8 image; raises NoFaceError / TooManyFacesError."""
        result = self.unmask_arrays([rgb], debug)[0]
        if isinstance(result, InputError):
            raise result
        return result

    def detect(self, rgb: np.ndarray) -> list[Face] | InputError:
        """The faces of one photo, or the error it gets (none, or more than `max_faces`)."""
        faces = self.detector.detect(rgb)
        if not faces:
            return NoFaceError("no face was found in the image")
        if len(faces) > self.config.max_faces:
            return TooManyFacesError(f"{len(faces)} faces found; the limit is {self.config.max_faces}")
        return faces

    def unmask_arrays(self, images: list[np.ndarray], debug: bool = False) -> list[UnmaskResult | InputError]:
        """Unmask several images with one batch through each network for all their faces (server
        batches). Each item is the image's result, or the error that image got (no face, too many
        faces), so one bad photo does not fail the others. Timings are those of the whole batch.
        """
        timer = StageTimer()
        with timer("detect"):
            found = [self.detect(rgb) for rgb in images]
        with timer("align"):
            jobs = [
                (index, face, align_face(images[index], face.eyes))
                for index, faces in enumerate(found)
                if not isinstance(faces, InputError)
                for face in faces
            ]
            crops = np.stack([aligned.crop for _, _, aligned in jobs]) if jobs else None
            inside = np.stack([aligned.inside for _, _, aligned in jobs]) if jobs else None
            meshes = [
                None if face.mesh is None else transform_points(face.mesh, aligned.matrix)
                for _, face, aligned in jobs
            ]
        crop_results = self.unmask_crops(crops, inside, timer, meshes) if jobs else []
        outputs = {i: images[i].copy() for i, _, _ in jobs}
        face_results: dict[int, list[FaceResult]] = {i: [] for i in outputs}
        debugs: dict[int, list[CropResult]] = {i: [] for i in outputs}
        for (index, face, aligned), result in zip(jobs, crop_results, strict=True):
            if result.painted is not None:
                with timer("paste_back"):
                    paste_back(outputs[index], result.painted, result.edit.weight, aligned.matrix)
            face_results[index].append(
                FaceResult(
                    box=face.box,
                    score=face.score,
                    mask_fraction=result.edit.fraction,
                    edited=result.edit.edited,
                )
            )
            if debug:
                debugs[index].append(result)
        return [
            faces
            if isinstance(faces, InputError)
            else UnmaskResult(
                image=outputs[i], faces=face_results[i], timings=dict(timer.seconds), debug=debugs[i]
            )
            for i, faces in enumerate(found)
        ]

    def unmask_bytes(
        self, data: bytes, output_format: str | None = None, debug: bool = False
    ) -> tuple[bytes, UnmaskResult]:
        """Encoded photo in, encoded photo out (the input's format unless `output_format` is given)."""
        timer = StageTimer()
        with timer("decode"):
            decoded = decode(data, self.config.limits)
        result = self.unmask_array(decoded.rgb, debug=debug)
        with timer("encode"):
            encoded = encode(decoded, result.image, output_format)
        result.timings.update(timer.seconds)
        return encoded, result
