"""Decode uploaded bytes into pixels and encode results, with limits and clear errors.

Everything happens in memory: uploaded photos are never written to disk.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qmask.errors import InputError

SUPPORTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
FORMAT_BY_MEDIA_TYPE = {v: k for k, v in SUPPORTED_FORMATS.items()}
FORMAT_BY_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
# Brands of ISO media files (an `ftyp` box, as MP4 clips have) that are still images: HEIC, as
# iPhones take photos, and AVIF.
ISO_IMAGE_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
# What PIL raises on a known signature followed by garbage, while reading the header or the pixels.
CORRUPT_IMAGE_ERRORS = (OSError, SyntaxError, EOFError, ValueError)
# JPEG and WebP: high enough that the untouched part of the photo survives the round trip without
# visible loss (and no chroma subsampling for JPEG): only the faces were meant to change.
ENCODE_QUALITY = 95


class NotAnImageError(InputError):
    code = "not_an_image"


class TruncatedImageError(InputError):
    code = "truncated_image"


class ImageTooLargeError(InputError):
    status = 413
    code = "too_large"


class UnsupportedFormatError(InputError):
    status = 415
    code = "unsupported_type"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000  # a 12 MP phone photo fits three times over


# Single-channel modes of more than 8 bits: 16-bit greyscale PNGs open as I;16 (or I). Their
# values are scaled to 8 bits, not clipped (PIL's own conversion clips them, and the photo turns white).
DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")


@dataclass
class DecodedImage:
    """An upright RGB(A) photo and what is needed to encode the result like the input."""

    rgb: np.ndarray  # HxWx3 uint8, EXIF orientation applied
    alpha: np.ndarray | None  # HxW uint8 when the input had transparency
    format: str  # JPEG, PNG or WEBP
    mode: str  # the input's PIL mode, restored on encode
    info: dict  # ICC profile and similar, kept on encode
    # The 16-bit grey plane of a deep greyscale photo, so that untouched pixels keep every bit.
    deep_grey: np.ndarray | None = None


def _deep_grey(image: Image.Image) -> np.ndarray:
    """A 16-bit-range greyscale image (I;16 or I) as uint16."""
    return np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)


ISO_IMAGE_UNSUPPORTED = "HEIC and AVIF photos are not supported; send JPEG, PNG or WebP"


def is_iso_image(head: bytes) -> bool:
    """A HEIC or AVIF still image, by the brands of its `ftyp` box (major or compatible) within the
    first bytes it is given (64 hold the box of every phone photo seen)."""
    if head[4:8] != b"ftyp":
        return False
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    return any(brand in ISO_IMAGE_BRANDS for brand in brands)


def decode(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Bytes -> pixels. Raises an `InputError` subclass for anything we will not process."""
    limits = limits or ImageLimits()
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"the file is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise NotAnImageError("the request has no image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if is_iso_image(data):
            raise UnsupportedFormatError(ISO_IMAGE_UNSUPPORTED) from exc
        raise NotAnImageError("the data is not an image (expected JPEG, PNG or WebP)") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except CORRUPT_IMAGE_ERRORS as exc:
        raise TruncatedImageError(f"the image data is truncated or corrupt ({exc})") from exc
    # MPO (the two-frame JPEG some phones write) is JPEG whose first frame is the photo.
    fmt = "JPEG" if image.format == "MPO" else image.format
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(f"{image.format} images are not supported; send JPEG, PNG or WebP")
    # Check the size from the header, before decoding any pixels (decompression bombs).
    if image.width * image.height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image is {image.width}x{image.height} pixels; the limit is {limits.max_pixels} pixels"
        )
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except CORRUPT_IMAGE_ERRORS as exc:
        raise TruncatedImageError(f"the image data is truncated or corrupt ({exc})") from exc
    info = {k: v for k, v in image.info.items() if k in ("icc_profile", "dpi")}
    if upright.mode in DEEP_GREY_MODES:
        deep = _deep_grey(upright)
        grey = np.rint(deep / 257.0).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        return DecodedImage(rgb=rgb, alpha=None, format=fmt, mode=image.mode, info=info, deep_grey=deep)
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    rgba = upright.convert("RGBA") if has_alpha else None
    rgb = np.array((rgba or upright).convert("RGB"))
    alpha = np.array(rgba)[..., 3] if rgba is not None else None
    return DecodedImage(rgb=rgb, alpha=alpha, format=fmt, mode=image.mode, info=info)


def encode(decoded: DecodedImage, rgb: np.ndarray, fmt: str | None = None) -> bytes:
    """Pixels -> bytes in `fmt` (default: the input's format), restoring mode and transparency."""
    fmt = fmt or decoded.format
    image = Image.fromarray(rgb, "RGB")
    if decoded.deep_grey is not None and fmt == "PNG":
        # 16 bits again: the photo's own values where nothing changed, the new face scaled up.
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        changed = np.any(rgb != decoded.rgb, axis=2)
        image = Image.fromarray(np.where(changed, grey, decoded.deep_grey).astype(np.uint16))
    elif decoded.alpha is not None and fmt != "JPEG":
        image.putalpha(Image.fromarray(decoded.alpha, "L"))
    elif decoded.mode in ("L", *DEEP_GREY_MODES) and fmt != "WEBP":
        image = image.convert("L")
    buffer = io.BytesIO()
    options: dict = {k: v for k, v in decoded.info.items() if k in ("icc_profile", "dpi")}
    if fmt == "JPEG":
        options.update(quality=ENCODE_QUALITY, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=ENCODE_QUALITY)
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
