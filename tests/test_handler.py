"""The TorchServe handler in-process, without Java: a real .mar (tiny untrained generator) is built and
unpacked, and requests reach the handler in the form TorchServe's worker gives them (`ts.service`)."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from ts.context import Context
from ts.service import Service

from benchmarks.clips import make_clip
from handlers.qmask_handler import QMaskHandler
from qmask.video import VideoConfig, VideoLimits
from serve.archive import build_mar
from tests.conftest import REAL_MASKED

PHOTO = REAL_MASKED / "1003.png"  # one masked face, found by the detector
VERSION = "9.9"


def model_dir(tmp: Path, weights: Path, model: str = "qmask", version: str = VERSION) -> Path:
    """A .mar built like `make mar` does, unpacked as TorchServe unpacks it for a worker."""
    mar = build_mar(tmp / "store", version, weights, model)
    target = tmp / model
    with zipfile.ZipFile(mar) as zf:
        zf.extractall(target)
    return target


def make_context(directory: Path, gpu: int | None = None) -> Context:
    """The context TorchServe's worker makes (ts/service.py): the manifest and the model's config."""
    manifest = json.loads((directory / "MAR-INF" / "MANIFEST.json").read_text())
    model = manifest["model"]
    config = yaml.safe_load((directory / model["configFile"]).read_text())
    return Context(
        model["modelName"],
        str(directory),
        manifest,
        batch_size=config["batchSize"],
        gpu=gpu,
        mms_version="0.12.0",
        model_yaml_config=config,
    )


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, tiny_model) -> Path:
    return model_dir(tmp_path_factory.mktemp("mar"), tiny_model)


@pytest.fixture(scope="module")
def handler(unpacked) -> Iterator[QMaskHandler]:
    handler = QMaskHandler()
    handler.initialize(make_context(unpacked))
    yield handler
    handler.pipeline.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, tiny_model) -> Path:
    return model_dir(tmp_path_factory.mktemp("mar"), tiny_model, "qmask-video")


@pytest.fixture(scope="module")
def video_handler(clips) -> Iterator[QMaskHandler]:
    handler = QMaskHandler()
    handler.initialize(make_context(clips))
    yield handler
    handler.pipeline.close()


def wire(
    body: bytes,
    content_type: str | None = "image/png",
    accept: str | None = None,
    field: str = "body",
) -> dict:
    """One request as the frontend sends it to the worker: headers, and the body (or a multipart
    field) as a parameter carrying its own content type."""
    headers = {"Accept": accept}
    if field == "body":
        headers["Content-Type"] = content_type
    else:
        headers["Content-Type"] = "multipart/form-data; boundary=x"
    return {
        "requestId": str(uuid.uuid4()).encode(),
        "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items() if v is not None],
        "parameters": [{"name": field, "contentType": content_type or "", "value": bytearray(body)}],
    }


def handle(handler: QMaskHandler, context: Context, *requests: dict) -> list[tuple[int, str, bytes]]:
    """(status, content type, body) per request, after one handler call for the whole batch."""
    headers, inputs, ids = Service.retrieve_data_for_inference(list(requests))
    context.request_processor = headers
    context.request_ids = ids
    bodies = handler.handle(inputs, context)
    assert len(bodies) == len(requests)
    return [
        (context.get_response_status(i)[0], context.get_response_content_type(i), body)
        for i, body in enumerate(bodies)
    ]


@pytest.fixture
def context(unpacked) -> Context:
    return make_context(unpacked)


def encoded(fmt: str, path: Path = PHOTO) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def test_photo_round_trip_keeps_size_and_type(handler, context):
    for fmt, media_type in [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]:
        [(status, ctype, body)] = handle(handler, context, wire(encoded(fmt), media_type))
        assert (status, ctype) == (200, media_type)
        out = Image.open(io.BytesIO(body))
        assert out.format == fmt
        assert out.size == Image.open(PHOTO).size


def test_accept_picks_the_output(handler, context):
    png = PHOTO.read_bytes()
    [(status, ctype, body)] = handle(handler, context, wire(png, accept="image/jpeg"))
    assert (status, ctype, Image.open(io.BytesIO(body)).format) == (200, "image/jpeg", "JPEG")
    [(status, ctype, body)] = handle(handler, context, wire(png, accept="application/json"))
    assert (status, ctype) == (200, "application/json")
    answer = json.loads(body)
    assert set(answer) == {"faces", "image", "format", "model_version"}
    assert answer["format"] == "image/png" and answer["model_version"] == VERSION
    [face] = answer["faces"]
    assert len(face["box"]) == 4 and 0 < face["score"] <= 1 and 0 <= face["mask_fraction"] <= 1
    image = Image.open(io.BytesIO(base64.b64decode(answer["image"])))
    assert (image.format, image.size) == ("PNG", Image.open(PHOTO).size)


def test_multipart_field_and_sniffed_bytes(handler, context):
    png = PHOTO.read_bytes()
    answers = handle(
        handler,
        context,
        wire(png, "image/png", field="data"),
        wire(png, "application/octet-stream", field="data"),
        wire(png, None),  # no Content-Type at all: the bytes say PNG
    )
    assert [(s, t) for s, t, _ in answers] == [(200, "image/png")] * 3


def test_batch_answers_each_request_and_runs_each_network_once(handler, context, monkeypatch):
    calls = []
    segment, inpaint = handler.pipeline.segment, handler.pipeline.inpaint

    def counting_segment(crops):
        calls.append(len(crops))
        return segment(crops)

    def counting_inpaint(crops, edits, inside=None, erased=None):
        calls.append(len(crops))
        return inpaint(crops, edits, inside, erased)

    monkeypatch.setattr(handler.pipeline, "segment", counting_segment)
    monkeypatch.setattr(handler.pipeline, "inpaint", counting_inpaint)
    noface = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 60, 60)).save(noface, format="PNG")
    answers = handle(
        handler,
        context,
        wire(PHOTO.read_bytes()),
        wire(b"not an image"),
        wire(noface.getvalue()),
        wire(encoded("JPEG", REAL_MASKED / "1237.png"), "image/jpeg", accept="application/json"),
        wire(b"hello", "text/plain"),
    )
    assert [(s, t) for s, t, _ in answers] == [
        (200, "image/png"),
        (400, "application/json"),
        (422, "application/json"),
        (200, "application/json"),
        (415, "application/json"),
    ]
    codes = [json.loads(answers[i][2])["code"] for i in (1, 2, 4)]
    assert codes == ["not_an_image", "no_face", "unsupported_type"]
    faces = len(json.loads(answers[3][2])["faces"])
    # Both photos' faces in one segmenter call, and (all edited: the tiny segmenter sees mask
    # everywhere) in one inpainter call.
    assert calls == [1 + faces, 1 + faces]


def png_of_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")  # a few KB whatever the size
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("request_", "status", "code"),
    [
        (wire(b""), 400, "not_an_image"),
        (wire(b"\x89PNG\r\n\x1a\n garbage"), 400, "truncated_image"),  # PIL raises a bare OSError
        (wire(PHOTO.read_bytes()[:2000]), 400, "truncated_image"),
        (wire(b"\xff\xd8" + bytes(25 * 2**20)), 413, "too_large"),
        (wire(png_of_size(8000, 6000)), 413, "too_large"),  # 48 MP: over the pixel limit
        (wire(png_of_size(20000, 20000)), 413, "too_large"),  # PIL's decompression-bomb guard
        (wire(b"hello", "text/plain"), 415, "unsupported_type"),
        (wire(b"{}", "application/json"), 415, "unsupported_type"),
        (wire(b"GIF89a", "image/gif"), 415, "unsupported_type"),
        (wire(encoded("GIF"), "application/octet-stream"), 415, "unsupported_type"),
        (wire(encoded("GIF"), None, field="data"), 415, "unsupported_type"),
        (wire(PHOTO.read_bytes(), field="photo"), 400, "not_an_image"),  # multipart without `data`
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_errors_are_json_with_status(handler, context, request_, status, code):
    [(got_status, ctype, body)] = handle(handler, context, request_)
    answer = json.loads(body)
    assert (got_status, ctype, answer["code"]) == (status, "application/json", code)
    assert set(answer) == {"code", "message"} and answer["message"]


def test_form_fields_instead_of_a_photo_get_415(handler, context):
    request_ = wire(b"", "application/x-www-form-urlencoded")
    request_["parameters"] = [{"name": "x", "contentType": "", "value": bytearray(b"1")}]
    [(status, _, body)] = handle(handler, context, request_)
    assert (status, json.loads(body)["code"]) == (415, "unsupported_type")


def test_unexpected_failure_stays_with_its_request(handler, context, monkeypatch):
    import handlers.qmask_handler as module

    encode = module.encode

    def failing(decoded, rgb, fmt=None):
        if decoded.format == "JPEG":
            raise RuntimeError("a bug")
        return encode(decoded, rgb, fmt)

    monkeypatch.setattr(module, "encode", failing)
    answers = handle(handler, context, wire(encoded("JPEG"), "image/jpeg"), wire(PHOTO.read_bytes()))
    assert [s for s, _, _ in answers] == [500, 200]
    assert json.loads(answers[0][2])["code"] == "internal_error"


def test_a_failing_network_batch_fails_only_the_photo_that_breaks_it(handler, context, monkeypatch):
    # As when one photo's faces exhaust the GPU's memory or meet a bug: the batch goes again photo by
    # photo, and only the photo that breaks it gets the 500.
    unmask_arrays = handler.pipeline.unmask_arrays
    breaking = REAL_MASKED / "1237.png"
    breaking_shape = np.asarray(Image.open(breaking)).shape[:2]
    calls = []

    def failing_with(images, debug=False):
        calls.append(len(images))
        if any(rgb.shape[:2] == breaking_shape for rgb in images):
            raise RuntimeError("CUDA out of memory")
        return unmask_arrays(images, debug)

    monkeypatch.setattr(handler.pipeline, "unmask_arrays", failing_with)
    requests = [wire(PHOTO.read_bytes()), wire(encoded("PNG", breaking)), wire(encoded("JPEG"), "image/jpeg")]
    answers = handle(handler, context, *requests)
    assert [s for s, _, _ in answers] == [200, 500, 200]
    assert json.loads(answers[1][2])["code"] == "internal_error"
    assert calls == [3, 1, 1, 1]


def test_cpu_when_the_context_names_a_gpu_but_there_is_none(unpacked, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    handler = QMaskHandler()
    handler.initialize(make_context(unpacked, gpu=0))
    try:
        assert handler.pipeline.device.type == "cpu"
    finally:
        handler.pipeline.close()


def test_an_archive_carries_a_model_card_only_for_the_version_it_describes(unpacked, tmp_path, tiny_model):
    from serve.archive import MODEL_CARD, model_card_version

    assert not (unpacked / "MODEL_CARD.md").exists()  # version 9.9: the shipped card describes another
    shipped = model_dir(tmp_path, tiny_model, version=model_card_version())
    assert (shipped / "MODEL_CARD.md").read_text() == MODEL_CARD.read_text()
    # Another version's own card, whatever its file is called, is the archive's MODEL_CARD.md.
    card = tmp_path / "card-9.8.md"
    card.write_text("version: 9.8\n")
    mar = build_mar(tmp_path / "other", "9.8", tiny_model, card=card)
    with zipfile.ZipFile(mar) as archive:
        assert archive.read("MODEL_CARD.md") == b"version: 9.8\n"


def test_refuses_weights_that_do_not_fit_the_installed_networks(tmp_path, tiny_model):
    payload = torch.load(tiny_model, weights_only=True)
    payload["networks"]["segmenter"]["config"]["base_channels"] = 16  # the weights are 8 wide
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(RuntimeError, match="segmenter weights do not fit"):
        QMaskHandler().initialize(make_context(model_dir(tmp_path, other)))


def test_an_edit_of_model_py_does_not_break_a_built_archive(tmp_path, tiny_model):
    directory = model_dir(tmp_path, tiny_model)
    model_py = directory / "model.py"
    model_py.write_text('"""A docstring changed since the archive was built."""\n' + model_py.read_text())
    handler = QMaskHandler()
    context = make_context(directory)
    handler.initialize(context)
    [(status, _, _)] = handle(handler, context, wire(PHOTO.read_bytes()))
    handler.pipeline.close()
    assert status == 200


def test_clips_come_back_as_mp4_and_limits_answer_413(video_handler, clips, monkeypatch):
    import handlers.qmask_handler as module

    context = make_context(clips)
    clip = make_clip("0003", (320, 240), frames=6, fps=15, audio=True)
    answers = handle(
        video_handler,
        context,
        wire(clip.data, "video/mp4"),
        wire(clip.data, "application/octet-stream"),  # sniffed: an MP4 container
        wire(clip.data[:1500], "video/quicktime"),
        wire(encoded("PNG"), "video/mp4"),  # a photo declared as a clip
    )
    assert [(s, t) for s, t, _ in answers] == [
        (200, "video/mp4"),
        (200, "video/mp4"),
        (400, "application/json"),
        (400, "application/json"),
    ]
    for _, _, body in answers[:2]:
        with av.open(io.BytesIO(body)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 6
    assert [json.loads(answers[i][2])["code"] for i in (2, 3)] == ["truncated_video", "not_a_video"]
    monkeypatch.setattr(module, "VIDEO_CONFIG", VideoConfig(limits=VideoLimits(max_seconds=0.2)))
    [(status, ctype, body)] = handle(video_handler, context, wire(clip.data, "video/webm"))
    answer = json.loads(body)
    assert (status, ctype, answer["code"]) == (413, "application/json", "too_large")
    assert "the limit is 0.2 s" in answer["message"]


def test_photos_and_clips_each_go_to_their_own_model(handler, context, video_handler, clips):
    clip = make_clip("0003", (320, 240), frames=3, fps=15)
    [(status, _, body)] = handle(handler, context, wire(clip.data, "video/mp4"))
    assert status == 415 and "/predictions/qmask-video" in json.loads(body)["message"]
    [(status, _, body)] = handle(video_handler, make_context(clips), wire(encoded("PNG"), "image/png"))
    assert status == 415 and "/predictions/qmask" in json.loads(body)["message"]


def test_two_data_parts_are_refused_not_silently_merged(handler, context):
    request = wire(encoded("PNG"), "image/png", field="data")
    request["parameters"].append(dict(request["parameters"][0]))
    [(status, _, body)] = handle(handler, context, request)
    assert (status, json.loads(body)["code"]) == (400, "not_an_image")
    assert "2 fields 'data'" in json.loads(body)["message"]
