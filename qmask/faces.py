"""Face detection with keypoints that a mask does not hide.

Two detectors run on the whole photo and their boxes are merged: MediaPipe's BlazeFace (short
range) finds most masked faces, YuNet catches small ones it misses, and looks again at the photo
in a black frame for faces cut in half by its edge. Each face is then cropped at
`crop_scale` times its box and MediaPipe's FaceLandmarker fits a 478-point mesh to the crop; the
mesh stays plausible under a mask, and its eye corners give the alignment (eyes are never masked).
When the landmarker gives up, the detector's own eye keypoints are used instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from qmask.align import mesh_eyes
from qmask.assets import asset_path


@dataclass(frozen=True)
class DetectorConfig:
    """How faces are found; the defaults were chosen on the real masked photos."""

    blazeface_min_score: float = 0.35
    yunet_min_score: float = 0.6
    # Faces smaller than this (box side, pixels) are too small to unmask usefully.
    min_face_size: int = 24
    # Long side of the copy the detectors see; larger photos are downscaled for detection only.
    detect_max_side: int = 1280
    # In photos larger than that, YuNet can also look at a copy of up to this long side (None: not):
    # the small faces of a group photo are too small after downscaling to `detect_max_side`. Off by
    # default: on this 2-core CPU a 2560 px pass adds about a second to a 12 MP photo (`--small-faces`).
    small_faces_max_side: int | None = None
    # YuNet also looks at a copy of the photo with a black border this share of its long side wide
    # (None: not), and the faces there that reach past the photo's edge by at least
    # `frame_cut_min_share` of their width are kept: a face cut in half by the frame (a second person
    # at the photo's side) is missed without the room to see its shape (BlazeFace misses it even
    # then). On the real masked photos it finds one such face and changes no other; no bare truth of
    # the frozen bench gets edited. The framed copy is seen at most `frame_cut_max_side` long (a face
    # cut by the frame is a large one): 5 to 10 ms more a photo, 1 MP or 12 MP, on this 2-core CPU.
    frame_cut_pad: float | None = 0.2
    frame_cut_min_share: float = 0.15
    frame_cut_max_side: int = 480
    merge_iou: float = 0.3
    crop_scale: float = 1.8
    mesh_crop_size: int = 256
    mesh_min_presence: float = 0.05


@dataclass
class Face:
    """One detected face, in the photo's pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    eyes: np.ndarray  # (2, 2): image-left eye centre, image-right eye centre
    mesh: np.ndarray | None = field(default=None, repr=False)  # (478, 2) when the landmarker fitted

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _containment(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Share of the smaller box that lies inside the other (a face inside a face is a false hit)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def _at_most(rgb: np.ndarray, max_side: int, run: Callable[[np.ndarray], list[Face]]) -> list[Face]:
    """`run` on a copy of the photo downscaled to at most `max_side`, its faces in the photo's coordinates."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1:
        return run(rgb)
    faces = run(cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA))
    for face in faces:
        face.box = tuple(v / scale for v in face.box)
        face.eyes = face.eyes / scale
    return faces


class FaceDetector:
    """Finds faces in RGB uint8 images. Not thread-safe: one per worker."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        cfg = self.config
        self._blazeface = vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(asset_path("face_detector.tflite"))),
                min_detection_confidence=cfg.blazeface_min_score,
            )
        )
        self._yunet = cv2.FaceDetectorYN.create(
            str(asset_path("face_detection_yunet_2023mar.onnx")), "", (320, 320), cfg.yunet_min_score
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(asset_path("face_landmarker.task"))),
                num_faces=1,
                min_face_detection_confidence=cfg.mesh_min_presence,
                min_face_presence_confidence=cfg.mesh_min_presence,
            )
        )

    def close(self) -> None:
        self._blazeface.close()
        self._landmarker.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in the image, largest first."""
        h, w = rgb.shape[:2]
        found = _at_most(
            rgb,
            self.config.detect_max_side,
            lambda small: self._run_blazeface(small) + self._run_yunet(small) + self._cut_by_frame(small),
        )
        if max(h, w) > self.config.detect_max_side and self.config.small_faces_max_side:
            found += _at_most(rgb, self.config.small_faces_max_side, self._run_yunet)
        faces = [f for f in self._merge(found) if f.size >= self.config.min_face_size]
        for face in faces:
            face.mesh = self.fit_mesh(rgb, face.box)
            if face.mesh is not None:
                face.eyes = mesh_eyes(face.mesh)
        for face in faces:
            # A face at the photo's edge has a box reaching past it; callers get the part in the photo.
            x0, y0, x1, y1 = face.box
            face.box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
        return sorted(faces, key=lambda f: -f.size)

    def fit_mesh(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        """The 478-point mesh of the face in `box`, in image pixels, or None if it does not fit."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * self.config.crop_scale
        n = self.config.mesh_crop_size
        s = n / side
        to_crop = np.array([[s, 0, n / 2 - s * cx], [0, s, n / 2 - s * cy]])
        # Black padding suits the landmarker's own detector best where the face touches the photo's
        # edge; smeared (replicated) borders rescue a few others.
        for border in (cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE):
            crop = cv2.warpAffine(rgb, to_crop, (n, n), flags=cv2.INTER_LINEAR, borderMode=border)
            result = self._landmarker.detect(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop))
            )
            if not result.face_landmarks:
                continue
            pts = np.array([(p.x * n, p.y * n) for p in result.face_landmarks[0]], dtype=np.float64)
            mesh = (pts - to_crop[:, 2]) / s
            # A mesh whose eyes fall outside the detector's box belongs to another face in the crop.
            eyes = mesh_eyes(mesh)
            x0, y0, x1, y1 = box
            if np.all((eyes[:, 0] >= x0) & (eyes[:, 0] <= x1) & (eyes[:, 1] >= y0) & (eyes[:, 1] <= y1)):
                return mesh
        return None

    def _cut_by_frame(self, rgb: np.ndarray) -> list[Face]:
        """Faces found on the photo with a black border (`DetectorConfig.frame_cut_pad` of its long
        side wide) that reach past the photo's edge (`frame_cut_min_share`), in its coordinates."""
        pad_share = self.config.frame_cut_pad
        if not pad_share:
            return []

        def framed(small: np.ndarray) -> list[Face]:
            pad = round(pad_share * max(small.shape[:2]))
            border = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            faces = self._run_yunet(border)
            for face in faces:
                face.box = tuple(v - pad for v in face.box)
                face.eyes = face.eyes - pad
            return faces

        # Downscaled before the border is added (from the detectors' copy of the photo, at most
        # `detect_max_side` long): a large photo is never copied or resized at full size again.
        found = _at_most(rgb, round(self.config.frame_cut_max_side / (1 + 2 * pad_share)), framed)
        h, w = rgb.shape[:2]
        cut = []
        for face in found:
            x0, y0, x1, y1 = face.box
            past = self.config.frame_cut_min_share * (x1 - x0)
            if x0 < -past or y0 < -past or x1 > w + past or y1 > h + past:
                cut.append(face)
        return cut

    def _run_blazeface(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        result = self._blazeface.detect(
            mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        )
        faces = []
        for det in result.detections:
            b = det.bounding_box
            kp = det.keypoints
            eyes = np.array([[kp[0].x * w, kp[0].y * h], [kp[1].x * w, kp[1].y * h]])
            box = (b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height)
            faces.append(
                Face(box=tuple(float(v) for v in box), score=float(det.categories[0].score), eyes=eyes)
            )
        return faces

    def _run_yunet(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        self._yunet.setInputSize((w, h))
        _, rows = self._yunet.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        faces = []
        for r in rows if rows is not None else []:
            x, y, bw, bh = (float(v) for v in r[:4])
            eyes = np.array([[r[4], r[5]], [r[6], r[7]]], dtype=np.float64)
            faces.append(Face(box=(x, y, x + bw, y + bh), score=float(r[14]), eyes=eyes))
        return faces

    def _merge(self, faces: list[Face]) -> list[Face]:
        """Greedy non-maximum suppression across both detectors."""
        kept: list[Face] = []
        for face in sorted(faces, key=lambda f: -f.score):
            if all(
                box_iou(face.box, k.box) < self.config.merge_iou and _containment(face.box, k.box) < 0.6
                for k in kept
            ):
                kept.append(face)
        return kept
