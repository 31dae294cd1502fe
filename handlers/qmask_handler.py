"""TorchServe handler for the `qmask` model: HTTP requests in, `qmask.pipeline` calls, HTTP answers out.

The .mar built by `serve/archive.py` holds this file, the weights (both stages' state_dicts in one
file, loaded eagerly), `qmask/model.py` as TorchServe's model file and the model card. The `qmask`
package itself, with its face-detector assets, is installed in the environment TorchServe runs in,
so the archive carries weights and the environment carries code (see README, "Serving").

Contract (README, "Serving"): the photo is the request body (Content-Type image/jpeg, image/png or
image/webp; none at all or application/octet-stream means "look at the bytes") or the multipart field
`data`. The same handler serves two TorchServe models, set by `handler: {media: ...}` in the
model's config: `qmask` takes photos, `qmask-video` takes clips (video/mp4, video/quicktime or
video/webm, or sniffed bytes that are one) and answers with the unmasked clip as video/mp4 (README,
"Video"), within `VIDEO_CONFIG`'s limits (413 beyond). Clips have their own model so that they have
their own worker and queue: a photo never waits behind minutes of video.
For a photo, the answer is the unmasked photo in the input's format, another one if `Accept` asks for
image/png, image/jpeg or image/webp, or JSON with the faces and the base64 photo for
`Accept: application/json`. Errors are JSON `{"code": ..., "message": ...}` with the status of the
`ImageError` raised (400, 413, 415, 422). Every request of a TorchServe batch gets its own answer, so
one bad photo never fails the others, and photos are neither written to disk nor logged.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from ts.context import Context
from ts.service import Service

import qmask.model
from qmask.imageio import (
    FORMAT_BY_MEDIA_TYPE,
    SUPPORTED_FORMATS,
    DecodedImage,
    ImageError,
    NotAnImageError,
    UnsupportedFormatError,
    decode,
    encode,
)
from qmask.pipeline import FaceResult, PipelineConfig, UnmaskPipeline
from qmask.video import (
    OUTPUT_MEDIA_TYPE,
    VIDEO_MEDIA_TYPES,
    VideoConfig,
    VideoLimits,
    looks_like_video,
    unmask_video,
)

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"
# Declared types that say nothing about the format: the bytes decide (PIL sniffs them).
SNIFFED_TYPES = ("", "application/octet-stream")
# The multipart field that carries the photo; TorchServe names a raw body "body".
FORM_FIELD = "data"
# Clips: at most 30 s, 900 frames, 60 fps, 1920x1080 (either way up) and 25 MiB; the defaults of
# VideoLimits.
VIDEO_CONFIG = VideoConfig(limits=VideoLimits())
# What each model of this handler takes (the `handler: {media: ...}` key of its model config), and
# where to send the other kind.
MEDIA = {"photo": ("photos", "/predictions/qmask"), "video": ("clips", "/predictions/qmask-video")}
# Key of the worker's request dict holding how often each form field came (see `_count_fields`).
FIELD_COUNTS = "qmask.field_counts"


def _count_fields(retrieve):
    """TorchServe's worker merges a request's form fields into a dict by name (ts/service.py), so a
    second `data` part would silently replace the first. Count them before they are merged."""

    @functools.wraps(retrieve)
    def counting(batch):
        headers, inputs, ids = retrieve(batch)
        for request, merged in zip(batch, inputs, strict=True):
            merged[FIELD_COUNTS] = Counter(p["name"] for p in request["parameters"])
        return headers, inputs, ids

    return counting


if not hasattr(Service.retrieve_data_for_inference, "__wrapped__"):
    Service.retrieve_data_for_inference = staticmethod(_count_fields(Service.retrieve_data_for_inference))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header(context: Context, idx: int, name: str) -> str:
    """A request header by case-insensitive name ('' when absent); clients differ in case."""
    for key, value in context.get_all_request_header(idx).items():
        # Parameter-level entries (content type of each form field) are dicts: skip them.
        if isinstance(value, str) and key.lower() == name:
            return value
    return ""


def _payload(item: dict, context: Context, idx: int) -> tuple[bytes, bool]:
    """The upload's bytes from a raw body or the multipart field `data`, after the type check, and
    whether it is a clip (declared so, or undeclared bytes of a video container)."""
    field = FORM_FIELD if FORM_FIELD in item else "body" if "body" in item else None
    if item.get(FIELD_COUNTS, {}).get(FORM_FIELD, 0) > 1:
        raise NotAnImageError(
            f"the request has {item[FIELD_COUNTS][FORM_FIELD]} fields {FORM_FIELD!r}; send one"
        )
    if field is None:
        # TorchServe turned the body into form fields: it was sent as a form (curl --data-binary
        # without -H sends application/x-www-form-urlencoded), or as multipart without `data`.
        declared = _header(context, idx, "content-type").split(";")[0].strip().lower()
        if declared.startswith("multipart/"):
            raise NotAnImageError(f"the multipart request has no field {FORM_FIELD!r} with the photo")
        raise UnsupportedFormatError(
            f"Content-Type {declared or 'missing'} is not supported: send the photo with Content-Type "
            f"image/jpeg, image/png or image/webp, or as the multipart field {FORM_FIELD!r}"
        )
    part = context.get_all_request_header(idx).get(field)
    # A request header named like the field replaces the part's entry: then the bytes decide.
    declared = (part.get("content-type") or "") if isinstance(part, dict) else ""
    declared = declared.split(";")[0].strip().lower()
    if declared not in FORMAT_BY_MEDIA_TYPE and declared not in SNIFFED_TYPES + VIDEO_MEDIA_TYPES:
        raise UnsupportedFormatError(
            f"Content-Type {declared} is not supported; send image/jpeg, image/png or image/webp, "
            "or video/mp4, video/quicktime or video/webm"
        )
    # Bytes: decode_input_request=false, and the JSON and text bodies TorchServe would decode
    # otherwise were refused above.
    data = bytes(item[field])
    return data, declared in VIDEO_MEDIA_TYPES or (declared in SNIFFED_TYPES and looks_like_video(data[:12]))


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """`Accept` as (media range, q) pairs; malformed q values count as 1 (be lenient to clients)."""
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0
        ranges.append((media.lower(), q))
    return ranges


def _specificity(media_range: str, media_type: str) -> int:
    """How closely a range of `Accept` names a type: 3 exactly, 2 as type/*, 1 as */*, 0 not."""
    if media_range == media_type:
        return 3
    if media_range == media_type.split("/")[0] + "/*":
        return 2
    return 1 if media_range == "*/*" else 0


def choose_output(accept: str, input_type: str) -> str:
    """The media type to answer with: the best match for `Accept` among the input's type, the other
    image types and JSON. No `Accept`, wildcards, or only types we cannot produce: the input's type."""
    candidates = [input_type, *(t for t in SUPPORTED_FORMATS.values() if t != input_type), JSON_TYPE]
    ranges = _media_ranges(accept)

    def rank(candidate: str) -> tuple[float, int]:
        # The most specific matching range gives a type its q (RFC 9110, 12.5.1).
        matches = [(s, q) for media, q in ranges if (s := _specificity(media, candidate))]
        specificity, q = max(matches, default=(0, 0.0))
        return q, specificity

    best = max(candidates, key=rank)  # ties go to the earlier candidate: the input's own type
    return best if rank(best)[0] > 0 else input_type


class QMaskHandler:
    """One per TorchServe worker: the pipeline (detector and both networks) is loaded once in `initialize`."""

    def __init__(self) -> None:
        self.pipeline: UnmaskPipeline | None = None
        self.model_version = ""
        self.media = "photo"

    def initialize(self, context: Context) -> None:
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        manifest = context.manifest["model"]
        # The weights are a state_dict for the architecture in the installed qmask package; refuse
        # an archive built against another model.py instead of serving a silently different network.
        model_file = model_dir / manifest["modelFile"]
        if _sha256(model_file) != _sha256(Path(qmask.model.__file__)):
            raise RuntimeError(
                f"{manifest['modelName']} {manifest['modelVersion']} was archived with a model.py that "
                "differs from the installed qmask package; rebuild the .mar or install the matching qmask"
            )
        gpu_id = properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and torch.cuda.is_available() else "cpu"
        weights = model_dir / manifest["serializedFile"]
        self.pipeline = UnmaskPipeline(PipelineConfig(weights=str(weights), device=device))
        self.model_version = manifest["modelVersion"]
        self.media = ((context.model_yaml_config or {}).get("handler") or {}).get("media", "photo")
        if self.media not in MEDIA:
            raise RuntimeError(f"handler media {self.media!r} in the model config: one of {', '.join(MEDIA)}")
        logger.info("qmask %s (%s) loaded on %s", self.model_version, self.media, device)

    def handle(self, data: list[dict], context: Context) -> list[bytes]:
        """Answer every request of a TorchServe batch; all their faces go through one batch per network."""
        assert self.pipeline is not None, "initialize() was not called"
        start = time.perf_counter()
        answers: list[bytes | None] = [None] * len(data)
        decoded: dict[int, tuple[DecodedImage, str]] = {}
        for idx, item in enumerate(data):
            try:
                payload, is_video = _payload(item, context, idx)
                media = "video" if is_video else "photo"
                if media != self.media:
                    what, where = MEDIA[media]
                    raise UnsupportedFormatError(
                        f"this endpoint takes {MEDIA[self.media][0]}; send {what} to {where}"
                    )
                if is_video:
                    # A clip is a batch of its own (its frames share network batches).
                    answers[idx] = self._video(context, idx, payload)
                    continue
                image = decode(payload, self.pipeline.config.limits)
                accept = _header(context, idx, "accept")
                decoded[idx] = image, choose_output(accept, SUPPORTED_FORMATS[image.format])
            except Exception as exc:  # one request's failure must not fail its batch
                answers[idx] = self._error(context, idx, exc)
        results = self.pipeline.unmask_arrays([image.rgb for image, _ in decoded.values()])
        for (idx, (image, output)), result in zip(decoded.items(), results, strict=True):
            try:
                if isinstance(result, ImageError):
                    raise result
                answers[idx] = self._answer(context, idx, image, result.image, result.faces, output)
            except Exception as exc:  # as above
                answers[idx] = self._error(context, idx, exc)
        # Counts and codes only: nothing of the photos themselves reaches the logs.
        statuses = [context.get_response_status(i)[0] for i in range(len(data))]
        logger.info(
            "batch of %d: %d ok, statuses %s, %.0f ms",
            len(data),
            statuses.count(200),
            sorted(set(statuses)),
            (time.perf_counter() - start) * 1000,
        )
        return [a if a is not None else b"" for a in answers]

    def _video(self, context: Context, idx: int, data: bytes) -> bytes:
        """The unmasked clip as MP4, written to memory only (PyAV reads and writes BytesIO)."""
        assert self.pipeline is not None
        output = io.BytesIO()
        result = unmask_video(self.pipeline, data, output, VIDEO_CONFIG)
        logger.info(
            "clip of %d frames: %d faces tracked, %d frames edited",
            result.frames,
            result.tracks,
            result.edited_frames,
        )
        context.set_response_content_type(idx, OUTPUT_MEDIA_TYPE)
        return output.getvalue()

    def _answer(
        self,
        context: Context,
        idx: int,
        image: DecodedImage,
        rgb: np.ndarray,
        faces: list[FaceResult],
        output: str,
    ) -> bytes:
        if output == JSON_TYPE:
            body = {
                "faces": [face.to_json() for face in faces],
                "image": base64.b64encode(encode(image, rgb)).decode("ascii"),
                "format": SUPPORTED_FORMATS[image.format],
                "model_version": self.model_version,
            }
            context.set_response_content_type(idx, JSON_TYPE)
            return json.dumps(body).encode()
        context.set_response_content_type(idx, output)
        return encode(image, rgb, FORMAT_BY_MEDIA_TYPE[output])

    def _error(self, context: Context, idx: int, exc: Exception) -> bytes:
        if isinstance(exc, ImageError):
            status, code, message = exc.status, exc.code, str(exc)
        else:
            # A bug, not the client's fault: keep the traceback (it holds no pixels) for the logs.
            logger.exception("request %d of the batch failed", idx)
            status, code, message = 500, "internal_error", "the photo could not be processed"
        context.set_response_status(status, code, idx)
        context.set_response_content_type(idx, JSON_TYPE)
        return json.dumps({"code": code, "message": message}).encode()
