"""Unmask every frame of a video clip, stable in time, with its sound (README, "Video").

One way through, in two passes over the decoded frames so that memory stays bounded by the batch
size rather than by the clip's length:

1. decode -> detect, keeping only the faces of each frame;
2. track faces across frames by box overlap and smooth each track's eye positions over time
   (the alignment then glides instead of jittering with the detector's noise);
3. decode again -> align with the smoothed eyes -> segment (faces of several frames in one batch)
   -> average the mask probability over time per face and plan the edit -> inpaint -> average the
   painted face over time (both in the canonical crop, where they are stable once alignment is)
   -> paste back -> encode H.264 MP4, copying the audio stream.

Frame timestamps are copied, so frame rate (variable rates too), frame count and duration are
kept; frames are processed upright and written back in their stored orientation with the input's
rotation metadata.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from qmask.align import align_face, eyes_to_crop, paste_back, transform_points
from qmask.errors import InputError
from qmask.faces import Face, box_iou
from qmask.imageio import is_iso_image
from qmask.pipeline import NoFaceError, StageTimer, UnmaskPipeline

VIDEO_MEDIA_TYPES = ("video/mp4", "video/quicktime", "video/webm")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
OUTPUT_MEDIA_TYPE = "video/mp4"
# Audio codecs the MP4 muxer takes as they are; anything else (Vorbis from WebM) becomes AAC.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}

Progress = Callable[[str, int, int], None]


class VideoError(InputError):
    code = "bad_video"


class NotAVideoError(VideoError):
    code = "not_a_video"


class TruncatedVideoError(VideoError):
    code = "truncated_video"


class VideoTooLargeError(VideoError):
    status = 413
    code = "too_large"


@dataclass(frozen=True)
class VideoLimits:
    """What a server accepts; the CLI runs without limits (None)."""

    max_bytes: int = 25 * 1024 * 1024  # TorchServe's max_request_size is 26 MiB
    max_seconds: float = 30.0
    # Either orientation: 1920x1080 and 1080x1920 both pass.
    max_long_side: int = 1920
    max_short_side: int = 1080
    # Work grows with frames, not seconds or bytes: a small 120 fps clip of 80 KB pinned a CPU worker
    # for minutes. 900 frames (30 s at 30 fps) take about 3 minutes on one CPU worker, well inside
    # TorchServe's responseTimeout for clips.
    max_frames: int = 900
    max_fps: float = 60.0


@dataclass(frozen=True)
class VideoConfig:
    limits: VideoLimits | None = None
    # A detection continues a track when its box overlaps the track's last box this much.
    track_iou: float = 0.3
    # Frames a track may go undetected; its eyes are interpolated across the gap, so a missed
    # detection does not make the mask reappear for a frame.
    max_gap: int = 8
    # Centered moving average of the eye positions over this many frames (1: none). Centered, as
    # the whole clip is known, so steady motion (pans, zooms) is followed without lag.
    eye_window: int = 9
    # Exponential averages in the canonical crop, per track: weight of the newest frame (1: none).
    mask_ema: float = 0.35
    face_ema: float = 0.5
    crf: int = 18
    preset: str = "veryfast"


@dataclass
class VideoResult:
    frames: int
    fps: float  # the stream's average rate
    rotation: int
    tracks: int  # faces followed through the clip
    edited_frames: int  # frames where at least one face was unmasked
    has_audio: bool
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, the whole clip


# One face in one frame as pass 2 gets it: its track's number, its smoothed eyes (2, 2) and its
# mesh in crop pixels (or None).
TrackedFace = tuple[int, np.ndarray, np.ndarray | None]


@dataclass
class Track:
    """One face followed through the clip: its detections by frame index."""

    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)

    def smoothed_eyes(self, window: int) -> tuple[int, np.ndarray]:
        """(first frame, eyes (n, 2, 2)) for every frame from the first detection to the last:
        gaps linearly interpolated, then a centered moving average that narrows at the ends so it
        never leans on one side."""
        first, last = self.frames[0], self.frames[-1]
        known = np.array([f.eyes for f in self.faces]).reshape(len(self.faces), 4)
        span = np.arange(first, last + 1)
        eyes = np.stack([np.interp(span, self.frames, known[:, k]) for k in range(4)], axis=1)
        half = window // 2
        smooth = np.empty_like(eyes)
        for i in range(len(span)):
            r = min(half, i, len(span) - 1 - i)
            smooth[i] = eyes[i - r : i + r + 1].mean(axis=0)
        return first, smooth.reshape(-1, 2, 2)

    def crop_meshes(self, window: int) -> list[np.ndarray | None]:
        """For every frame from the first detection to the last, the face mesh in crop pixels
        (each detection's in its own crop), averaged over the detections within `window` frames,
        or the nearest one's where none is that close; None where no detection has a mesh. In
        the eye-aligned crop the face's outline barely moves, and averaged it does not flicker."""
        known = [
            (frame, transform_points(face.mesh, eyes_to_crop(face.eyes)))
            for frame, face in zip(self.frames, self.faces, strict=True)
            if face.mesh is not None
        ]
        if not known:
            return [None] * (self.frames[-1] - self.frames[0] + 1)
        frames = np.array([frame for frame, _ in known])
        meshes = np.stack([mesh for _, mesh in known])
        out: list[np.ndarray | None] = []
        for t in range(self.frames[0], self.frames[-1] + 1):
            near = np.abs(frames - t) <= window // 2
            out.append(meshes[near].mean(axis=0) if near.any() else meshes[np.argmin(np.abs(frames - t))])
        return out


def track_faces(faces_per_frame: list[list[Face]], min_iou: float, max_gap: int) -> list[Track]:
    """Greedy frame-to-frame matching by box IoU; a face unseen for more than `max_gap` frames
    ends its track, and a face that matches no live track starts one."""
    tracks: list[Track] = []
    live: list[Track] = []
    for t, faces in enumerate(faces_per_frame):
        live = [tr for tr in live if t - tr.frames[-1] <= max_gap + 1]
        pairs = sorted(
            (
                (box_iou(tr.faces[-1].box, f.box), i, j)
                for i, tr in enumerate(live)
                for j, f in enumerate(faces)
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < min_iou:
                break
            if i in used_tracks or j in used_faces:
                continue
            used_tracks.add(i)
            used_faces.add(j)
            live[i].frames.append(t)
            live[i].faces.append(faces[j])
        for j, face in enumerate(faces):
            if j not in used_faces:
                track = Track([t], [face])
                tracks.append(track)
                live.append(track)
    return tracks


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    # `rotation` is the counter-clockwise turn the display matrix applies; np.rot90 turns the same way.
    return np.ascontiguousarray(np.rot90(rgb, rotation // 90)) if rotation % 360 else rgb


def _stored(rgb: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, -(rotation // 90))) if rotation % 360 else rgb


def looks_like_video(head: bytes) -> bool:
    """MP4/QuickTime (`ftyp` box) or Matroska/WebM (EBML magic): then a failure means damage.
    HEIC and AVIF photos begin with an `ftyp` box too: they are photos (of a format not taken)."""
    if is_iso_image(head):
        return False
    return head[4:8] in (b"ftyp", b"wide", b"mdat", b"moov", b"free") or head[:4] == b"\x1a\x45\xdf\xa3"


# FFmpeg demuxers of the containers we take; FFmpeg would also open a PNG or JPEG as a one-frame
# "video" (image2 pipes), which is not a clip.
VIDEO_DEMUXERS = {"mov", "mp4", "matroska", "webm"}


def _open_input(source: bytes | Path) -> av.container.InputContainer:
    if isinstance(source, bytes):
        head = source[:64]
    else:
        with Path(source).open("rb") as file:
            head = file.read(64)
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")
    except av.error.FFmpegError as exc:
        if looks_like_video(head):
            raise TruncatedVideoError(f"the video is truncated or corrupt ({exc})") from exc
        raise NotAVideoError("the data is not a video (expected MP4, QuickTime or WebM)") from exc
    if not VIDEO_DEMUXERS & set(container.format.name.split(",")):
        container.close()
        raise NotAVideoError(
            f"the data is not a video but {container.format.long_name or container.format.name} "
            "(expected MP4, QuickTime or WebM)"
        )
    return container


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise NotAVideoError("the file has no video stream")
    return container.streams.video[0]


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def check_limits(source: bytes | Path, limits: VideoLimits) -> None:
    """Refuse from the header alone (bytes, resolution, duration) before any frame is decoded."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    if size > limits.max_bytes:
        raise VideoTooLargeError(f"the video is {size} bytes; the limit is {limits.max_bytes}")
    if size == 0:
        raise NotAVideoError("the request has no video data")
    with _open_input(source) as container:
        stream = _video_stream(container)
        w, h = stream.codec_context.width, stream.codec_context.height
        if max(w, h) > limits.max_long_side or min(w, h) > limits.max_short_side:
            raise VideoTooLargeError(
                f"the video is {w}x{h}; the limit is {limits.max_long_side}x{limits.max_short_side}"
            )
        seconds = _duration(container, stream)
        if seconds is not None and seconds > limits.max_seconds:
            raise VideoTooLargeError(
                f"the video lasts {seconds:.1f} s; the limit is {limits.max_seconds:g} s"
            )
        rate = stream.average_rate or stream.guessed_rate
        if rate is not None and float(rate) > limits.max_fps:
            raise VideoTooLargeError(
                f"the video has {float(rate):.0f} frames per second; the limit is {limits.max_fps:g}"
            )
        frames = stream.frames or (round(seconds * float(rate)) if seconds and rate else 0)
        if frames > limits.max_frames:
            raise VideoTooLargeError(f"the video has {frames} frames; the limit is {limits.max_frames}")


def _frames(
    container: av.container.InputContainer, limits: VideoLimits | None
) -> Iterator[av.VideoFrame | av.Packet]:
    """Decoded video frames, and the audio stream's packets as they come (for copying)."""
    video = container.streams.video[0]
    streams = [video, *container.streams.audio[:1]]
    count = 0
    try:
        for packet in container.demux(streams):
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    yield packet
                continue
            for frame in packet.decode():
                # Streams whose header lacks a duration or frame count are checked as they play.
                count += 1
                if limits is not None and frame.time is not None and frame.time > limits.max_seconds:
                    raise VideoTooLargeError(f"the video lasts over {limits.max_seconds:g} s, the limit")
                if limits is not None and count > limits.max_frames:
                    raise VideoTooLargeError(f"the video has over {limits.max_frames} frames, the limit")
                yield frame
    except av.error.FFmpegError as exc:
        raise TruncatedVideoError(f"the video is truncated or corrupt ({exc})") from exc


class _Renderer:
    """Pass 2: frames come in order, leave in order; faces of several frames share a network batch."""

    def __init__(
        self,
        pipeline: UnmaskPipeline,
        config: VideoConfig,
        faces_by_frame: list[list[TrackedFace]],
        encode: Callable[[np.ndarray, av.VideoFrame], None],
        timer: StageTimer,
    ) -> None:
        self.pipeline, self.config, self.faces_by_frame = pipeline, config, faces_by_frame
        self.encode, self.timer = encode, timer
        self.pending: list[tuple[av.VideoFrame, np.ndarray]] = []
        # Per track, float32 in the canonical crop: the averaged mask probability and painted face.
        self.mask_average: dict[int, np.ndarray] = {}
        self.face_average: dict[int, np.ndarray] = {}
        self.index = 0
        self.edited_frames = 0

    def add(self, frame: av.VideoFrame, upright: np.ndarray) -> None:
        self.pending.append((frame, upright))
        faces = sum(len(self.faces_by_frame[self.index + i]) for i in range(len(self.pending)))
        if faces >= self.pipeline.config.batch_size:
            self.flush()

    def flush(self) -> None:
        """Every pending frame through the pipeline's stages, with the averages over time between
        them, then out to the encoder in order."""
        cfg = self.config
        with self.timer("align"):
            jobs = [
                (offset, track, align_face(self.pending[offset][1], eyes), mesh)
                for offset in range(len(self.pending))
                for track, eyes, mesh in self.faces_by_frame[self.index + offset]
            ]
            crops = [aligned.crop for _, _, aligned, _ in jobs]
            inside = [aligned.inside for _, _, aligned, _ in jobs]
        edited = [False] * len(self.pending)
        if jobs:
            with self.timer("segment"):
                probs = self.pipeline.segment(np.stack(crops))
            with self.timer("plan"):
                for k, (_, track, _, _) in enumerate(jobs):
                    if track in self.mask_average:
                        probs[k] = cfg.mask_ema * probs[k] + (1 - cfg.mask_ema) * self.mask_average[track]
                    self.mask_average[track] = probs[k]
                edits = [
                    self.pipeline.plan(prob, jobs[k][3], inside[k], crops[k]) for k, prob in enumerate(probs)
                ]
            chosen = [k for k, edit in enumerate(edits) if edit.edited]
            if chosen:
                with self.timer("inpaint"):
                    painted = self.pipeline.inpaint(
                        np.stack([crops[k] for k in chosen]),
                        [edits[k] for k in chosen],
                        np.stack([inside[k] for k in chosen]),
                    )
            for k, face in zip(chosen, painted if chosen else [], strict=True):
                offset, track, aligned, _ = jobs[k]
                face = face.astype(np.float32)
                if track in self.face_average:
                    face = cfg.face_ema * face + (1 - cfg.face_ema) * self.face_average[track]
                self.face_average[track] = face
                with self.timer("paste_back"):
                    paste_back(
                        self.pending[offset][1],
                        np.clip(np.rint(face), 0, 255).astype(np.uint8),
                        edits[k].weight,
                        aligned.matrix,
                    )
                edited[offset] = True
        for (frame, rgb), was_edited in zip(self.pending, edited, strict=True):
            self.encode(rgb, frame)
            self.edited_frames += was_edited
        self.index += len(self.pending)
        self.pending = []


def unmask_video(
    pipeline: UnmaskPipeline,
    source: bytes | Path,
    output: Path | BinaryIO,
    config: VideoConfig | None = None,
    progress: Progress | None = None,
) -> VideoResult:
    """Unmask every masked face of a clip (bytes or a file) into an H.264 MP4 (a file or a binary
    stream). Raises a `VideoError` for files it refuses, `NoFaceError` when no frame has a face.

    `progress(stage, done, total)` is called per frame of each pass ("detect", then "unmask");
    `total` is the header's frame count (an estimate for some WebM files) until the second pass.
    """
    config = config or VideoConfig()
    timer = StageTimer()
    limits = config.limits
    if limits is not None:
        check_limits(source, limits)

    # Pass 1: faces of every frame.
    faces_per_frame: list[list[Face]] = []
    rotation = 0
    with _open_input(source) as container:
        stream = _video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        seconds = _duration(container, stream)
        expected = stream.frames or (round(seconds * rate) if seconds else 0)
        for item in _frames(container, limits):
            if not isinstance(item, av.VideoFrame):
                continue
            rotation = round(item.rotation or 0)
            rgb = _upright(item.to_ndarray(format="rgb24"), rotation)
            with timer("detect"):
                faces_per_frame.append(pipeline.detector.detect(rgb)[: pipeline.config.max_faces])
            if progress:
                progress("detect", len(faces_per_frame), max(expected, len(faces_per_frame)))
    n = len(faces_per_frame)
    if n == 0:
        raise TruncatedVideoError("the video has no frames that can be decoded")
    if stream.frames and n < stream.frames:
        raise TruncatedVideoError(f"the video is truncated: {n} of its {stream.frames} frames could be read")
    if not any(faces_per_frame):
        raise NoFaceError("no face was found in any frame of the video")

    with timer("track"):
        tracks = track_faces(faces_per_frame, config.track_iou, config.max_gap)
        faces_by_frame: list[list[TrackedFace]] = [[] for _ in range(n)]
        for number, track in enumerate(tracks):
            first, eyes = track.smoothed_eyes(config.eye_window)
            for i, (e, mesh) in enumerate(zip(eyes, track.crop_meshes(config.eye_window), strict=True)):
                faces_by_frame[first + i].append((number, e, mesh))

    # Pass 2: render and encode, copying the audio packets through. A file gets its index first
    # (faststart: plays while it downloads); FFmpeg does that by reopening the file by name, which a
    # stream in memory cannot do, so there the index stays at the end.
    options = {"movflags": "faststart"} if isinstance(output, (str, Path)) else {}
    with _open_input(source) as container, av.open(output, mode="w", format="mp4", options=options) as out:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        audio_in = container.streams.audio[0] if container.streams.audio else None
        video_out = out.add_stream("libx264", rate=rate)
        video_out.width, video_out.height = width, height
        # 4:2:0 needs even sides; odd-sized clips keep full chroma instead of being cropped.
        video_out.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        video_out.time_base = stream.time_base
        video_out.codec_context.time_base = stream.time_base
        video_out.options = {"crf": str(config.crf), "preset": config.preset}
        if rotation % 360:
            video_out.set_display_rotation(rotation)
        audio_out, transcode = None, False
        if audio_in is not None:
            if audio_in.codec_context.name in MP4_AUDIO_CODECS:
                audio_out = out.add_stream_from_template(audio_in)
            else:
                transcode = True
                audio_out = out.add_stream("aac", rate=audio_in.codec_context.sample_rate)
        done = 0

        def encode(rgb: np.ndarray, frame: av.VideoFrame) -> None:
            nonlocal done
            with timer("encode"):
                new = av.VideoFrame.from_ndarray(_stored(rgb, rotation), format="rgb24")
                new.pts, new.time_base = frame.pts, frame.time_base
                out.mux(video_out.encode(new))
            done += 1
            if progress:
                progress("unmask", done, n)

        renderer = _Renderer(pipeline, config, faces_by_frame, encode, timer)
        for item in _frames(container, limits):
            if isinstance(item, av.Packet):
                if transcode:
                    for decoded in item.decode():
                        out.mux(audio_out.encode(decoded))
                else:
                    item.stream = audio_out
                    out.mux(item)
                continue
            if renderer.index + len(renderer.pending) >= n:
                continue  # never more frames than the first pass saw (the audio still goes on)
            renderer.add(item, _upright(item.to_ndarray(format="rgb24"), rotation))
        renderer.flush()
        out.mux(video_out.encode(None))
        if transcode:
            out.mux(audio_out.encode(None))
    return VideoResult(
        frames=n,
        fps=float(rate),
        rotation=rotation,
        tracks=len(tracks),
        edited_frames=renderer.edited_frames,
        has_audio=audio_in is not None,
        timings=dict(timer.seconds),
    )
