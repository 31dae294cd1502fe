import io

import numpy as np
import pytest
from PIL import Image

from qmask.imageio import (
    ImageLimits,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedFormatError,
    decode,
    encode,
)
from tests.conftest import REAL_MASKED


def _jpeg_bytes() -> bytes:
    """A real masked photo as JPEG (the folder holds PNGs)."""
    buffer = io.BytesIO()
    Image.open(sorted(REAL_MASKED.iterdir())[0]).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_not_an_image():
    with pytest.raises(NotAnImageError) as err:
        decode(b"%PDF-1.4 this is not a photo")
    assert err.value.status == 400


def test_truncated_jpeg():
    data = _jpeg_bytes()
    with pytest.raises(TruncatedImageError) as err:
        decode(data[: len(data) // 2])
    assert err.value.status == 400


def test_huge_dimensions_are_refused_from_the_header():
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, format="PNG")  # compresses to a few KB
    data = buffer.getvalue()
    assert len(data) < 1_000_000
    with pytest.raises(ImageTooLargeError) as err:
        decode(data, ImageLimits(max_pixels=50_000_000))
    assert err.value.status == 413


def test_too_many_bytes():
    with pytest.raises(ImageTooLargeError):
        decode(_jpeg_bytes(), ImageLimits(max_bytes=1000))


def test_unsupported_format():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="GIF")
    with pytest.raises(UnsupportedFormatError) as err:
        decode(buffer.getvalue())
    assert err.value.status == 415


def test_heic_and_avif_photos_are_named_as_not_supported():
    # By the major brand, or by a compatible one after a generic major brand.
    for major, compatible in ((b"heic", b"mif1heic"), (b"avif", b"mif1avif"), (b"iso8", b"mif1heic")):
        head = (8 + 8 + len(compatible)).to_bytes(4, "big") + b"ftyp" + major + bytes(4) + compatible
        with pytest.raises(UnsupportedFormatError, match="HEIC and AVIF") as err:
            decode(head + bytes(64))
        assert err.value.status == 415


def test_the_colour_profile_and_resolution_survive_the_round_trip():
    # A photo's colour profile (a phone's Display P3, say) comes back with it, or its colours would shift.
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(_jpeg_bytes())).save(buffer, format="JPEG", icc_profile=profile, dpi=(300, 300))
    decoded = decode(buffer.getvalue())
    for fmt in ("JPEG", "PNG", "WEBP"):
        out = Image.open(io.BytesIO(encode(decoded, decoded.rgb, fmt)))
        assert out.info.get("icc_profile") == profile, fmt
    assert Image.open(io.BytesIO(encode(decoded, decoded.rgb))).info["dpi"] == pytest.approx((300, 300))


def test_exif_orientation_is_applied_and_format_kept():
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    decoded = decode(buffer.getvalue())
    assert decoded.rgb.shape == (40, 20, 3)  # upright: portrait
    out = Image.open(io.BytesIO(encode(decoded, decoded.rgb)))
    assert out.format == "JPEG" and out.size == (20, 40)


def test_png_with_alpha_and_grey_keep_their_mode():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 128
    for mode, array in (("RGBA", rgba), ("L", np.full((16, 16), 77, np.uint8))):
        buffer = io.BytesIO()
        Image.fromarray(array, mode).save(buffer, format="PNG")
        decoded = decode(buffer.getvalue())
        out = Image.open(io.BytesIO(encode(decoded, decoded.rgb)))
        assert out.mode == mode
        assert np.array_equal(np.asarray(out), array)


def test_a_png_signature_followed_by_garbage_is_a_corrupt_image():
    with pytest.raises(TruncatedImageError) as err:
        decode(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert err.value.status == 400


def test_16_bit_greyscale_is_scaled_not_clipped_and_written_back_at_16_bits():
    photo = np.asarray(Image.open(sorted(REAL_MASKED.iterdir())[0]).convert("L"), dtype=np.uint16) * 257 + 100
    buffer = io.BytesIO()
    Image.fromarray(photo.astype(np.uint16)).save(buffer, format="PNG")
    decoded = decode(buffer.getvalue())
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.max() < 255  # not all white
    assert np.abs(decoded.rgb[..., 0].astype(int) - photo // 257).max() <= 1
    edited = decoded.rgb.copy()
    edited[:4] = 0
    out = Image.open(io.BytesIO(encode(decoded, edited)))
    values = np.asarray(out)
    assert out.mode.startswith("I") and values.dtype != np.uint8
    assert np.array_equal(values[4:], photo[4:])  # untouched pixels keep every bit
    assert (values[:4] == 0).all()


def test_mpo_is_read_as_its_first_frame_and_answered_as_jpeg():
    first, second = Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (64, 48), (30, 200, 30))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    decoded = decode(buffer.getvalue())
    assert decoded.format == "JPEG" and decoded.rgb[10, 10, 0] > 150 > decoded.rgb[10, 10, 1]
    assert Image.open(io.BytesIO(encode(decoded, decoded.rgb))).format == "JPEG"
