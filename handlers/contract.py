"""The HTTP contract of QMask's API (README, "The API") as plain logic, without TorchServe:
which part of a request is the upload, whether it is a photo or a clip, and what to answer with.
`handlers/qmask_handler.py` feeds it what TorchServe hands a worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qmask.imageio import (
    FORMAT_BY_MEDIA_TYPE,
    ISO_IMAGE_UNSUPPORTED,
    SUPPORTED_FORMATS,
    NotAnImageError,
    UnsupportedFormatError,
    is_iso_image,
)
from qmask.video import VIDEO_MEDIA_TYPES, NotAVideoError, looks_like_video

JSON_TYPE = "application/json"
# Declared types that say nothing about the format: the bytes decide (PIL sniffs them).
SNIFFED_TYPES = ("", "application/octet-stream")
# The multipart field that carries the photo; TorchServe names a raw body "body".
FORM_FIELD = "data"
RAW_BODY = "body"
# What each model takes (the `handler: {media: ...}` key of its model config), in words, and where.
MEDIA = {"photo": ("photos", "/predictions/qmask"), "video": ("clips", "/predictions/qmask-video")}


@dataclass(frozen=True)
class Upload:
    data: bytes
    media: str  # "photo" or "video"


def media_type(value: str) -> str:
    """A Content-Type without its parameters, in lower case."""
    return value.split(";")[0].strip().lower()


def read_upload(
    fields: Mapping[str, bytes | bytearray],
    field_types: Mapping[str, str],
    field_counts: Mapping[str, int],
    request_type: str,
) -> Upload:
    """The upload from a request: its raw body, or the multipart field `data` (`fields` by name,
    `field_types` their declared Content-Types, `field_counts` how often each name came, and the
    request's own Content-Type). Raises an `InputError` for a request that carries no usable upload.
    """
    if field_counts.get(FORM_FIELD, 0) > 1:
        raise NotAnImageError(f"the request has {field_counts[FORM_FIELD]} fields {FORM_FIELD!r}; send one")
    field = FORM_FIELD if FORM_FIELD in fields else RAW_BODY if RAW_BODY in fields else None
    if field is None:
        # The body was taken apart as form fields: it was sent as a form (curl --data-binary
        # without -H sends application/x-www-form-urlencoded), or as multipart without `data`.
        declared = media_type(request_type)
        if declared.startswith("multipart/"):
            raise NotAnImageError(f"the multipart request has no field {FORM_FIELD!r} with the photo")
        raise UnsupportedFormatError(
            f"Content-Type {declared or 'missing'} is not supported: send the photo with Content-Type "
            f"image/jpeg, image/png or image/webp, or as the multipart field {FORM_FIELD!r}"
        )
    declared = media_type(field_types.get(field, ""))
    if declared not in FORMAT_BY_MEDIA_TYPE and declared not in SNIFFED_TYPES + VIDEO_MEDIA_TYPES:
        raise UnsupportedFormatError(
            f"Content-Type {declared} is not supported; send image/jpeg, image/png or image/webp, "
            "or video/mp4, video/quicktime or video/webm"
        )
    data = bytes(fields[field])
    video = declared in VIDEO_MEDIA_TYPES or (declared in SNIFFED_TYPES and looks_like_video(data[:64]))
    return Upload(data, "video" if video else "photo")


def check_media(upload: Upload, served: str) -> None:
    """Each model takes one kind: a photo at the clip model (or a clip at the photo model) is a 415
    that says where to send it. An empty body is neither: a 400 in the endpoint's own terms."""
    if not upload.data:
        empty = NotAVideoError if served == "video" else NotAnImageError
        raise empty(f"the request has no data: send {MEDIA[served][0]} to {MEDIA[served][1]} as its body")
    if upload.media != served:
        if is_iso_image(upload.data[:64]):
            # Sent to the clip model, a HEIC photo would be sent on to the photo model to be refused.
            raise UnsupportedFormatError(ISO_IMAGE_UNSUPPORTED)
        what, where = MEDIA[upload.media]
        raise UnsupportedFormatError(f"this endpoint takes {MEDIA[served][0]}; send {what} to {where}")


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


def _specificity(media_range: str, candidate: str) -> int:
    """How closely a range of `Accept` names a type: 3 exactly, 2 as type/*, 1 as */*, 0 not."""
    if media_range == candidate:
        return 3
    if media_range == candidate.split("/")[0] + "/*":
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
