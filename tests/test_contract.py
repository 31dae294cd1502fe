"""The API contract of handlers/contract.py, without TorchServe: which part of a request is the
upload, photo or clip, where each kind goes, and what to answer with."""

from collections import Counter

import pytest

from benchmarks.clips import make_clip
from handlers.contract import Upload, check_media, choose_output, read_upload
from qmask.imageio import NotAnImageError, UnsupportedFormatError
from qmask.video import NotAVideoError
from tests.conftest import REAL_MASKED

PNG = (REAL_MASKED / "1003.png").read_bytes()
# How a HEIC file begins: its ftyp box (major brand heic, compatible mif1 and heic), then its meta box.
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic\x00\x00\x01\x00meta" + bytes(252)


def test_a_raw_body_or_the_data_field_is_the_upload():
    assert read_upload({"body": PNG}, {"body": "image/png"}, Counter(["body"]), "image/png") == Upload(
        PNG, "photo"
    )
    form = read_upload(
        {"data": PNG, "note": b"x"}, {"data": "image/png"}, Counter(["data", "note"]), "multipart/x"
    )
    assert form == Upload(PNG, "photo")


def test_clips_are_told_by_their_type_or_their_bytes():
    clip = make_clip("0003", (64, 48), frames=2, fps=10).data
    assert read_upload({"body": clip}, {"body": "video/webm"}, {}, "video/webm").media == "video"
    assert read_upload({"body": clip}, {"body": "application/octet-stream"}, {}, "").media == "video"
    assert read_upload({"body": PNG}, {"body": ""}, {}, "").media == "photo"
    # An iPhone photo (HEIC) begins with an ftyp box as MP4 does: still a photo, not a clip.
    assert read_upload({"body": HEIC_HEAD}, {"body": "application/octet-stream"}, {}, "").media == "photo"


def test_a_heic_photo_at_the_clip_model_is_refused_there_not_sent_to_the_photo_model():
    heic = read_upload({"body": HEIC_HEAD}, {"body": "application/octet-stream"}, {}, "")
    with pytest.raises(UnsupportedFormatError, match="HEIC and AVIF photos are not supported"):
        check_media(heic, "video")
    png = read_upload({"body": PNG}, {"body": ""}, {}, "")
    with pytest.raises(UnsupportedFormatError, match="send photos to /predictions/qmask"):
        check_media(png, "video")


@pytest.mark.parametrize(
    ("fields", "types", "counts", "request_type", "error", "words"),
    [
        (
            {"data": PNG},
            {"data": "image/png"},
            {"data": 2},
            "multipart/form-data",
            NotAnImageError,
            "2 fields",
        ),
        (
            {"photo": PNG},
            {"photo": "image/png"},
            {"photo": 1},
            "multipart/form-data",
            NotAnImageError,
            "no field",
        ),
        (
            {"a=b": b""},
            {},
            {"a=b": 1},
            "application/x-www-form-urlencoded",
            UnsupportedFormatError,
            "x-www-form",
        ),
        (
            {"body": b"hi"},
            {"body": "text/plain"},
            {"body": 1},
            "text/plain",
            UnsupportedFormatError,
            "text/plain",
        ),
    ],
)
def test_requests_without_a_usable_upload_get_clear_errors(fields, types, counts, request_type, error, words):
    with pytest.raises(error, match=words):
        read_upload(fields, types, counts, request_type)


def test_each_model_takes_one_kind_and_says_where_the_other_goes():
    check_media(Upload(PNG, "photo"), "photo")
    with pytest.raises(UnsupportedFormatError, match="/predictions/qmask-video"):
        check_media(Upload(b"clip", "video"), "photo")
    with pytest.raises(UnsupportedFormatError, match="send photos to /predictions/qmask"):
        check_media(Upload(PNG, "photo"), "video")
    # An empty body is neither kind: the endpoint's own 400.
    with pytest.raises(NotAVideoError, match="no data"):
        check_media(read_upload({"body": b""}, {"body": ""}, {}, ""), "video")
    with pytest.raises(NotAnImageError, match="no data"):
        check_media(read_upload({"body": b""}, {"body": ""}, {}, ""), "photo")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "image/jpeg"),
        ("*/*", "image/jpeg"),
        ("image/*", "image/jpeg"),
        ("image/png", "image/png"),
        ("image/webp, application/json;q=0.5", "image/webp"),
        ("application/json", "application/json"),
        ("application/json, */*;q=0.8", "application/json"),
        ("text/html", "image/jpeg"),  # nothing we can make: the input's type
        ("image/png;q=0, image/*", "image/jpeg"),
    ],
)
def test_choose_output(accept, expected):
    assert choose_output(accept or "", "image/jpeg") == expected
