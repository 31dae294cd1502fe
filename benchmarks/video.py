"""Temporal stability and speed of video unmasking, on clips made from a benchmark photo.

    python -m benchmarks.video [--pair 0003] [--frames 30] [--device cpu] [--sheet out/video/sheet.png]

A bench pair (../shared/data/bench/lfw-synthetic: masked photo, truth, mask alpha) is slowly panned,
zoomed and turned, frame by frame; the drawn mask moves with the face and the truth clip is the
warped truth. Stability is the mean frame-to-frame change inside the mask region of the output,
divided by the same for the truth (1: the generated face moves exactly like a real one; above 1:
flicker or jitter). It is measured per frame with no tracking or smoothing (the baseline), with
smoothed eyes only, and with the defaults. Then frames per second at 480p and 720p, and the
milliseconds per frame each stage took.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from benchmarks.clips import Clip, decode_frames, make_clip
from qmask.pipeline import PipelineConfig, UnmaskPipeline
from qmask.video import VideoConfig, unmask_video

PER_FRAME = VideoConfig(max_gap=0, eye_window=1, mask_ema=1.0, face_ema=1.0)
SETTINGS = {
    "per frame (baseline)": PER_FRAME,
    "tracked, eyes smoothed": dataclasses.replace(PER_FRAME, max_gap=VideoConfig.max_gap, eye_window=9),
    "+ mask probability EMA": dataclasses.replace(VideoConfig(), face_ema=1.0),
    "+ painted face EMA (default)": VideoConfig(),
}
SIZES = {"480p": (854, 480), "720p": (1280, 720)}


def frame_change(frames: np.ndarray, clip: Clip, compensate: bool) -> float:
    """Mean absolute change between consecutive frames inside the mask region of either frame.

    With `compensate`, the earlier frame is first moved by the clip's known motion, so what is left
    is change the motion does not explain (jitter, flicker) plus resampling and codec noise.
    """
    changes = []
    h, w = frames.shape[1:3]
    for t in range(1, len(frames)):
        region = (clip.alpha[t] > 0.5) | (clip.alpha[t - 1] > 0.5)
        before = frames[t - 1]
        if compensate:
            step = np.vstack([clip.motions[t], [0, 0, 1]]) @ np.linalg.inv(
                np.vstack([clip.motions[t - 1], [0, 0, 1]])
            )
            before = cv2.warpAffine(
                before, step[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            region = clip.alpha[t] > 0.5
        diff = np.abs(frames[t].astype(np.float32) - before.astype(np.float32)).mean(axis=2)
        changes.append(diff[region].mean())
    return float(np.mean(changes))


def stability(output: bytes, clip: Clip, compensate: bool = False) -> float:
    """Output change / truth change in the mask region (1: as steady as the real face)."""
    truth = frame_change(decode_frames(clip.truth), clip, compensate)
    return frame_change(decode_frames(output), clip, compensate) / truth


def contact_sheet(clip: Clip, output: bytes, path: Path, count: int = 6) -> None:
    """Rows: masked input, output, truth; `count` evenly spaced frames."""
    rows = [decode_frames(clip.data), decode_frames(output), decode_frames(clip.truth)]
    picks = np.linspace(0, len(rows[0]) - 1, count).round().astype(int)
    sheet = np.vstack([np.hstack([row[i] for i in picks]) for row in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)


def run(pipeline: UnmaskPipeline, data: bytes, config: VideoConfig) -> tuple[bytes, float, str]:
    """The unmasked clip, frames per second, and milliseconds per frame in each stage."""
    out = io.BytesIO()
    start = time.perf_counter()
    result = unmask_video(pipeline, data, out, config)
    per_frame = ", ".join(f"{stage} {1000 * s / result.frames:.0f}" for stage, s in result.timings.items())
    return out.getvalue(), result.frames / (time.perf_counter() - start), per_frame


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pair", default="0003", help="bench pair (../shared/data/bench/lfw-synthetic)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sheet", type=Path, default=Path("out/video/sheet.png"))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with UnmaskPipeline(PipelineConfig(device=args.device)) as pipeline:
        clip = make_clip(args.pair, (320, 240), args.frames)
        print(
            f"\nstability, pair {args.pair}, 320x240, {args.frames} frames: output / truth change (1: ideal)"
        )
        print(f"  {'':32s} raw   motion-compensated")
        for label, config in SETTINGS.items():
            output, _, _ = run(pipeline, clip.data, config)
            print(f"  {label:32s} {stability(output, clip):.2f}  {stability(output, clip, True):.2f}")
        contact_sheet(clip, output, args.sheet)
        print(f"contact sheet (input / output / truth): {args.sheet}")
        print(f"\nspeed on {args.device}, {args.frames} frames, defaults")
        for label, size in SIZES.items():
            clip = make_clip(args.pair, size, args.frames)
            _, fps, per_frame = run(pipeline, clip.data, VideoConfig())
            print(f"  {label} {size[0]}x{size[1]}: {fps:.1f} frames/s (ms per frame: {per_frame})")


if __name__ == "__main__":
    main()
