"""Clips made from a benchmark photo, for the video benchmark and the tests: a bench pair (masked
photo, truth, mask alpha) slowly panned, zoomed and turned, frame by frame, the drawn mask moving
with the face; the truth clip is the warped truth."""

from __future__ import annotations

import dataclasses
import io
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from benchmarks.data import BENCH


@dataclasses.dataclass
class Clip:
    data: bytes  # the masked clip, H.264 MP4
    truth: bytes  # the warped truth, encoded the same way
    alpha: np.ndarray  # (frames, H, W) float32, the mask's alpha per frame
    motions: np.ndarray  # (frames, 2, 3): photo -> upright frame


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def motion(t: float, size: tuple[int, int]) -> np.ndarray:
    """2x3 map from the 256x256 photo to the frame at time t in [0, 1]: a slow pan across a tenth
    of the width, a 15% zoom and a 4 degree turn, the face filling most of the frame's height."""
    w, h = size
    scale = 0.85 * h / 256 * (1 + 0.15 * t)
    angle = math.radians(4 * t)
    centre = np.array([w / 2 + 0.1 * w * (t - 0.5), h / 2 + 0.03 * h * (t - 0.5)])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([rot, (centre - rot @ np.array([128.0, 128.0]))[:, None]])


def encode_frames(
    frames: list[np.ndarray], fps: int, audio: bool = False, rotation: int = 0, codec: str = "libx264"
) -> bytes:
    """RGB frames (stored orientation) to MP4, with a 440 Hz AAC tone when `audio`."""
    buffer = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buffer, mode="w", format="mp4") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"crf": "16"} if codec == "libx264" else {}
        if rotation:
            video.set_display_rotation(rotation)
        tone = out.add_stream("aac", rate=44100) if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if tone is not None:
            samples = round(44100 * len(frames) / fps)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    wave[None, start : start + 1024], format="flt", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 44100, start
                out.mux(tone.encode(chunk))
            out.mux(tone.encode(None))
    return buffer.getvalue()


def make_clip(
    pair: str = "0003",
    size: tuple[int, int] = (320, 240),
    frames: int = 24,
    fps: int = 15,
    audio: bool = False,
    rotation: int = 0,
) -> Clip:
    """A bench pair panned and zoomed over `frames` frames. With `rotation` the frames are stored
    turned and the display matrix turns them back (as phones record portrait clips)."""
    masked, target = load(BENCH / f"{pair}_masked.png")[..., :3], load(BENCH / f"{pair}_target.png")[..., :3]
    alpha = load(BENCH / f"{pair}_alpha.png").astype(np.float32) / 255
    alpha = alpha[..., 0] if alpha.ndim == 3 else alpha
    shown, truth, alphas, motions = [], [], [], []
    for i in range(frames):
        m = motion(i / max(frames - 1, 1), size)
        motions.append(m)
        warp = {"dsize": size, "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_REPLICATE}
        shown.append(np.rot90(cv2.warpAffine(masked, m, **warp), -(rotation // 90)))
        truth.append(cv2.warpAffine(target, m, **warp))
        alphas.append(cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR, borderValue=0))
    return Clip(
        encode_frames(shown, fps, audio, rotation),
        encode_frames(truth, fps),
        np.stack(alphas),
        np.stack(motions),
    )


def decode_frames(data: bytes) -> np.ndarray:
    """Upright RGB frames of a clip."""
    with av.open(io.BytesIO(data)) as container:
        frames = []
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(np.rot90(rgb, int(frame.rotation or 0) // 90))
    return np.stack(frames)
