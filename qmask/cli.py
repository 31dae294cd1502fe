"""Command line: `qmask unmask INPUT... -o OUTPUT` for photos and video clips."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from qmask.errors import InputError
from qmask.faces import DetectorConfig
from qmask.imageio import FORMAT_BY_SUFFIX
from qmask.pipeline import DEFAULT_WEIGHTS, PRECISIONS, REASONS, PipelineConfig, UnmaskPipeline, UnmaskResult
from qmask.video import VIDEO_SUFFIXES, unmask_video

# Clips are written as H.264 MP4 whatever their input container.
VIDEO_OUTPUT_SUFFIX = ".mp4"


# Exit codes: 0 every input unmasked (faces may have been left alone), 1 some inputs refused (no
# face, too many, not an image or clip, damaged, too large) or not readable or writable, 2 nothing
# done: bad arguments, inputs that are not there, an output folder that cannot be made (argparse
# uses 2 for its own errors too).
EXIT_SOME_REFUSED = 1
EXIT_USAGE = 2


def usage_error(message: str) -> SystemExit:
    """The exit for arguments that leave nothing to do; the message goes to stderr."""
    print(f"qmask: {message}", file=sys.stderr)
    return SystemExit(EXIT_USAGE)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(paths: list[Path]) -> list[Path]:
    """Files named directly, plus the photos and clips directly inside named folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix.lower() in FORMAT_BY_SUFFIX or is_video(p))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise usage_error(f"{path}: no such file or folder")
    return files


def output_paths(inputs: list[Path], output: Path, folder_input: bool) -> list[Path]:
    """One output per input; a folder output keeps each input's file name (clips become .mp4)."""
    suffixes = (VIDEO_OUTPUT_SUFFIX,) if is_video(inputs[0]) else tuple(FORMAT_BY_SUFFIX)
    if len(inputs) == 1 and not folder_input and output.suffix.lower() in suffixes:
        return [output]
    names = [p.with_suffix(VIDEO_OUTPUT_SUFFIX).name if is_video(p) else p.name for p in inputs]
    if len(set(names)) != len(names):
        raise usage_error("two inputs share a file name; unmask them into separate folders")
    return [output / name for name in names]


def debug_image(result: UnmaskResult) -> np.ndarray:
    """The output with face boxes, and per face: crop | mask probability | what the inpainter saw
    (what it got erased in grey) | the crop as shown | blend weight."""
    canvas = result.image.copy()
    for face in result.faces:
        x0, y0, x1, y1 = (round(v) for v in face.box)
        colour = (0, 200, 0) if face.edited else (200, 0, 0)
        thickness = max(2, canvas.shape[1] // 400)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        cv2.putText(
            canvas,
            f"mask {face.mask_fraction:.2f}",
            (x0, max(12, y0 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            max(0.4, canvas.shape[1] / 1500),
            colour,
            thickness,
        )
    strips = []
    for d in result.debug:
        grey = [
            np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2) for m in (d.mask_prob, d.edit.weight)
        ]
        erased = d.edit.hole if d.erased is None else d.erased
        erased = np.where(erased[..., None] > 0.5, 128, d.crop).astype(np.uint8)
        strips.append(np.hstack([d.crop, grey[0], erased, d.output, grey[1]]))
    if not strips:
        return canvas
    sheet = np.vstack(strips)
    scale = canvas.shape[1] / sheet.shape[1]
    sheet = cv2.resize(
        sheet, (canvas.shape[1], max(1, round(sheet.shape[0] * scale))), interpolation=cv2.INTER_AREA
    )
    return np.vstack([canvas, sheet])


def unmask_clip(pipeline: UnmaskPipeline, src: Path, dst: Path, quiet: bool) -> dict:
    """One clip, with a progress bar per pass (frames, frames per second, time left)."""
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        label = {"detect": "1/2 find faces", "unmask": "2/2 unmask"}[stage]
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(desc=f"{src.name}: {label}", total=total, unit="frame")
        bar.total = max(total, done)
        bar.update(done - bar.n)

    try:
        result = unmask_video(pipeline, src, dst, progress=progress)
    except BaseException:
        dst.unlink(missing_ok=True)  # a clip that failed half way is no output
        raise
    finally:
        for bar in bars.values():
            bar.close()
    if not result.edited_frames:
        tqdm.write(f"qmask: {src}: no face wearing a mask in any frame; written unchanged", file=sys.stderr)
    return {
        "output": str(dst),
        "frames": result.frames,
        "fps": round(result.fps, 3),
        "tracks": result.tracks,
        "edited_frames": result.edited_frames,
    }


def unmask_command(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.inputs)
    if not inputs:
        raise usage_error("no JPEG, PNG or WebP images or video clips in the inputs")
    folder_input = any(p.is_dir() for p in args.inputs)
    outputs = output_paths(inputs, args.output, folder_input)
    try:
        outputs[0].parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise usage_error(f"{outputs[0].parent}: cannot write there ({exc.strerror or exc})") from None
    detector = DetectorConfig(
        small_faces_max_side=2 * DetectorConfig.detect_max_side if args.small_faces else None
    )
    config = PipelineConfig(
        weights=str(args.weights), device=args.device, detector=detector, bf16=PRECISIONS[args.precision]
    )
    failures = 0
    with UnmaskPipeline(config) as pipeline:
        bar = tqdm(
            list(zip(inputs, outputs, strict=True)),
            desc="unmask",
            unit="photo",
            disable=len(inputs) == 1 or args.quiet,
        )
        for src, dst in bar:
            record: dict = {"input": str(src)}
            try:
                if is_video(src):
                    record.update(unmask_clip(pipeline, src, dst, args.quiet))
                else:
                    fmt = FORMAT_BY_SUFFIX.get(dst.suffix.lower())
                    encoded, result = pipeline.unmask_bytes(src.read_bytes(), fmt, debug=args.debug)
                    dst.write_bytes(encoded)
                    record.update(output=str(dst), faces=[f.to_json() for f in result.faces])
                    if args.debug:
                        debug = debug_image(result)
                        cv2.imwrite(
                            str(dst.with_name(dst.stem + ".debug.png")),
                            cv2.cvtColor(debug, cv2.COLOR_RGB2BGR),
                        )
                    left = [f for f in result.faces if not f.edited]
                    if left and not args.quiet:
                        edited = len(result.faces) - len(left)
                        why = "; ".join(
                            f"face at {round(f.box[0])},{round(f.box[1])}: {REASONS[f.reason]}" for f in left
                        )
                        tqdm.write(
                            f"qmask: {src}: {edited} of {len(result.faces)} face(s) edited"
                            + (", written unchanged" if not edited else "")
                            + f"; left alone: {why}",
                            file=sys.stderr,
                        )
            except InputError as exc:
                failures += 1
                record["error"] = {"code": exc.code, "message": str(exc)}
                tqdm.write(f"qmask: {src}: {exc}; no output written", file=sys.stderr)
            except OSError as exc:  # unreadable input, unwritable output: that input fails, not the run
                failures += 1
                record["error"] = {"code": "io_error", "message": exc.strerror or str(exc)}
                tqdm.write(f"qmask: {src}: {exc}; no output written", file=sys.stderr)
            if args.json:
                tqdm.write(json.dumps(record))
    if failures and not args.quiet:
        print(f"qmask: {failures} of {len(inputs)} input(s) could not be unmasked", file=sys.stderr)
    return EXIT_SOME_REFUSED if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qmask", description="Replace face masks in photos with a lower face."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    unmask = sub.add_parser(
        "unmask", help="unmask photos (JPEG, PNG, WebP) and clips (MP4, MOV, WebM, MKV), files or folders"
    )
    unmask.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    unmask.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output file (one input; .mp4 for a clip) or folder (results keep their input's name)",
    )
    unmask.add_argument("--json", action="store_true", help="one JSON line per input: faces or error")
    unmask.add_argument("--debug", action="store_true", help="also save NAME.debug.png with boxes and masks")
    unmask.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="model file (.pt)")
    unmask.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    unmask.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the networks in bf16 or fp32 (auto: bf16 where the device computes it natively)",
    )
    unmask.add_argument(
        "--small-faces",
        action="store_true",
        help="in photos over 1280 px, look for small faces at twice that size too (group photos; slower)",
    )
    unmask.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    return unmask_command(args)


if __name__ == "__main__":
    sys.exit(main())
