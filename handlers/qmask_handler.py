"""TorchServe handler for the `qmask` model: HTTP requests in, `qmask.pipeline` calls, HTTP answers out.

The .mar built by `serve/archive.py` holds this file, the weights (both stages' state_dicts in one
file, loaded eagerly), `qmask/model.py` as TorchServe's model file (which TorchServe only records)
and the model card. TorchServe runs the archive's copy of this file; everything it imports (the
`qmask` package with its face-detector assets, `handlers.contract`) is the one installed in the
environment TorchServe runs in. So an archive's weights must fit the installed networks
(`initialize` refuses them otherwise), and an archive built before a change of this file goes on
answering with the handler of its time (see README, "Serving").

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
`InputError` raised (400, 413, 415, 422). Every request of a TorchServe batch gets its own answer, so
one bad photo never fails the others, and photos are neither written to disk nor logged.
"""

from __future__ import annotations

import base64
import functools
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

from handlers.contract import JSON_TYPE, MEDIA, Upload, check_media, choose_output, read_upload
from qmask.errors import InputError
from qmask.imageio import FORMAT_BY_MEDIA_TYPE, SUPPORTED_FORMATS, DecodedImage, decode, encode
from qmask.pipeline import FaceResult, PipelineConfig, UnmaskPipeline, UnmaskResult
from qmask.video import OUTPUT_MEDIA_TYPE, VideoConfig, VideoLimits, unmask_video

logger = logging.getLogger(__name__)

# Clips: at most 30 s, 900 frames, 60 fps, 1920x1080 (either way up) and 25 MiB; the defaults of
# VideoLimits.
VIDEO_CONFIG = VideoConfig(limits=VideoLimits())
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


def _header(context: Context, idx: int, name: str) -> str:
    """A request header by case-insensitive name ('' when absent); clients differ in case."""
    for key, value in context.get_all_request_header(idx).items():
        # Parameter-level entries (content type of each form field) are dicts: skip them.
        if isinstance(value, str) and key.lower() == name:
            return value
    return ""


def _upload(item: dict, context: Context, idx: int) -> Upload:
    """What TorchServe gives a worker for one request, read by the API contract."""
    headers = context.get_all_request_header(idx)
    # Parameter-level entries are dicts with each form field's content type; a request header named
    # like a field replaces its entry, and then the bytes decide.
    field_types = {k: v.get("content-type") or "" for k, v in headers.items() if isinstance(v, dict)}
    fields = {k: v for k, v in item.items() if k != FIELD_COUNTS}
    return read_upload(fields, field_types, item.get(FIELD_COUNTS, {}), _header(context, idx, "content-type"))


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
        gpu_id = properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and torch.cuda.is_available() else "cpu"
        weights = model_dir / manifest["serializedFile"]
        try:
            self.pipeline = UnmaskPipeline(PipelineConfig(weights=str(weights), device=device))
        except ValueError as exc:
            # The weights are state_dicts for the networks of the installed qmask package (their
            # configs and parameter names and shapes are checked): refuse an archive made for other
            # networks instead of serving a silently different model.
            raise RuntimeError(
                f"{manifest['modelName']} {manifest['modelVersion']}: {exc}; rebuild the .mar for the "
                "installed qmask, or install the qmask it was built for"
            ) from exc
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
                upload = _upload(item, context, idx)
                check_media(upload, self.media)
                if upload.media == "video":
                    # A clip is a batch of its own (its frames share network batches).
                    answers[idx] = self._video(context, idx, upload.data)
                    continue
                image = decode(upload.data, self.pipeline.config.limits)
                accept = _header(context, idx, "accept")
                decoded[idx] = image, choose_output(accept, SUPPORTED_FORMATS[image.format])
            except Exception as exc:  # one request's failure must not fail its batch
                answers[idx] = self._error(context, idx, exc)
        results = self._unmask([image.rgb for image, _ in decoded.values()])
        for (idx, (image, output)), result in zip(decoded.items(), results, strict=True):
            try:
                if isinstance(result, Exception):
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

    def _unmask(self, images: list[np.ndarray]) -> list[UnmaskResult | Exception]:
        """Every photo's faces in one batch per network. Should that batch fail (out of GPU memory
        with many faces, a bug one photo triggers), each photo goes again on its own, so only the
        photo that fails gets an error."""
        assert self.pipeline is not None
        try:
            return list(self.pipeline.unmask_arrays(images))
        except Exception as exc:
            if len(images) == 1:
                return [exc]
            logger.exception("a batch of %d photos failed; each goes again on its own", len(images))
        results: list[UnmaskResult | Exception] = []
        for rgb in images:
            try:
                results.extend(self.pipeline.unmask_arrays([rgb]))
            except Exception as exc:
                results.append(exc)
        return results

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
        if isinstance(exc, InputError):
            status, code, message = exc.status, exc.code, str(exc)
        else:
            # A bug, not the client's fault: keep the traceback (it holds no pixels) for the logs.
            logger.exception("request %d of the batch failed", idx)
            kind = "clip" if self.media == "video" else "photo"
            status, code, message = 500, "internal_error", f"the {kind} could not be processed"
        context.set_response_status(status, code, idx)
        context.set_response_content_type(idx, JSON_TYPE)
        return json.dumps({"code": code, "message": message}).encode()
