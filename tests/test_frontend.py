"""The web page (frontend/) against the real TorchServe of conftest.py and with no server at all:
Streamlit's AppTest for the page's logic, and one end-to-end run in Debian's chromium (Playwright)."""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from streamlit.testing.v1 import AppTest

from benchmarks.clips import make_clip
from frontend import client
from frontend.compare import closeup_box
from frontend.run import APP, REPO, page_ready, streamlit_command
from tests.conftest import LFW, REAL_MASKED
from tests.torchserve_fixture import VERSION

PHOTO = REAL_MASKED / "1003.png"  # one masked face, found by the detector
OTHER = REAL_MASKED / "1008.png"
BARE = sorted(LFW.iterdir())[0]  # a face without a mask (evaluation data, never trained on)
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "out" / "screenshots" / "frontend.png"
PHONE_SCREENSHOT = REPO / "out" / "screenshots" / "frontend_phone.png"
# A prediction on a busy 2-core CPU takes seconds; AppTest's default is 3 s per run.
RUN_TIMEOUT = 120


def encoded(fmt: str, image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_url(server, monkeypatch) -> str:
    url = server.ports.url("inference")
    monkeypatch.setenv("QMASK_API_URL", url)
    return url


@pytest.fixture
def page(api_url) -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()


def texts(elements) -> str:
    return "\n".join(element.value for element in elements)


def test_status_line_and_privacy_note(api_url, page):
    assert not page.exception
    assert f"Server and model ready at `{api_url}`" in texts(page.success)
    assert "processed in memory and not stored" in texts(page.caption)
    assert page.file_uploader[0].accept_multiple_files
    assert set(page.file_uploader[0].allowed_type) >= {".jpg", ".jpeg", ".png", ".webp"}


def test_uploads_are_unmasked_side_by_side_with_downloads(api_url, page):
    page.file_uploader[0].set_value(
        [
            ("face.png", PHOTO.read_bytes(), "image/png"),
            ("other.jpg", encoded("JPEG", Image.open(OTHER).convert("RGB")), "image/jpeg"),
        ]
    ).run()
    assert not page.exception and not page.error
    assert [h.value for h in page.subheader] == ["Gallery", "face.png", "other.jpg"]
    # The gallery (two results), then before and after for each photo.
    assert [img.captions for img in page.image] == [
        ["face.png", "other.jpg"],
        ["Before"],
        ["After"],
        ["Before"],
        ["After"],
    ]
    assert [b.label for b in page.download_button] == ["Download PNG", "Download PNG"]
    assert "1 face found, 1 unmasked" in texts(page.caption)
    # Each unmasked face close up, the first one open.
    titles = [e.label for e in page.expander]
    assert len(titles) == 2 and all(t.startswith("Face 1 (") and "close up" in t for t in titles)
    assert f"model version {VERSION} answered the last photo" in texts(page.success)
    # Options rerun the page without sending the photos again: the answers are kept per session.
    page.radio[0].set_value("JPEG")
    page.toggle[0].set_value(True).run(timeout=10)
    assert [b.label for b in page.download_button] == ["Download JPEG", "Download JPEG"]
    assert not page.exception and not page.error


def test_camera_photo(api_url, page):
    camera_toggle = next(t for t in page.toggle if "camera" in t.label)
    camera_toggle.set_value(True).run()
    shot = encoded("JPEG", Image.open(PHOTO).convert("RGB"))
    page.camera_input[0].set_value(("shot.jpg", shot, "image/jpeg")).run()
    assert not page.exception and not page.error
    assert [h.value for h in page.subheader] == ["camera.jpg"]
    assert [img.captions for img in page.image] == [["Before"], ["After"]]


def test_every_api_failure_has_a_clear_message(api_url, page):
    no_face = encoded("PNG", Image.new("RGB", (200, 200), (120, 60, 60)))
    huge = encoded("PNG", Image.new("1", (8000, 6000)))  # 48 MP in a few KB: refused from the header
    gif = encoded("GIF", Image.open(PHOTO).convert("RGB"))
    page.file_uploader[0].set_value(
        [
            ("notes.png", b"this is not an image", "image/png"),
            ("cut.png", PHOTO.read_bytes()[:2000], "image/png"),
            ("empty.png", no_face, "image/png"),
            ("huge.png", huge, "image/png"),
            ("animated.png", gif, "image/png"),
        ]
    ).run()
    assert not page.exception
    errors = [e.value for e in page.error]
    assert len(errors) == 5
    assert "**notes.png**: This file is not a picture" in errors[0]
    assert "**cut.png**: This picture is cut off or damaged" in errors[1]
    assert "**empty.png**: No face was found" in errors[2]
    assert "**huge.png**: This photo is too large" in errors[3]
    assert "**animated.png**: This image format is not supported" in errors[4]
    assert not page.image and not page.download_button


def test_clip_upload_plays_before_and_after_with_download(api_url, page):
    clip = make_clip("0003", (320, 240), frames=6, fps=15, audio=True)
    page.file_uploader[0].set_value(
        [("clip.mp4", clip.data, "video/mp4"), ("cut.mov", clip.data[:1500], "video/quicktime")]
    ).run()
    assert not page.exception
    assert [h.value for h in page.subheader] == ["clip.mp4", "cut.mov"]
    assert len(page.get("video")) == 2  # before and after
    assert [b.label for b in page.download_button] == ["Download MP4"]
    # A chosen frame close up.
    assert [e.label for e in page.expander] == ["A frame close up: slide to compare"]
    assert page.slider[0].label == "Frame" and page.slider[0].max == 6
    page.slider[0].set_value(2).run()
    assert not page.exception
    assert [e.value for e in page.error] == [
        "**cut.mov**: This clip is cut off or damaged. Save or export it again and retry."
    ]


def test_server_down(monkeypatch):
    monkeypatch.setenv("QMASK_API_URL", f"http://127.0.0.1:{free_port()}")
    page = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert "Server unreachable" in texts(page.error)
    page.file_uploader[0].set_value(("face.png", PHOTO.read_bytes(), "image/png")).run()
    assert not page.exception
    assert "**face.png**: The QMask server cannot be reached" in texts(page.error)
    assert not page.image


def response(status: int, body: object) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body).encode()
    return answer


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": "not_an_image", "message": "m"}, client.NotAnImage),
        (400, {"code": "truncated_image", "message": "m"}, client.TruncatedImage),
        (413, {"code": "too_large", "message": "m"}, client.TooLarge),
        (415, {"code": "unsupported_type", "message": "m"}, client.UnsupportedType),
        (422, {"code": "no_face", "message": "m"}, client.NoFace),
        (422, {"code": "too_many_faces", "message": "m"}, client.TooManyFaces),
        (500, {"code": "internal_error", "message": "m"}, client.InternalError),
        # TorchServe's own answers, before the handler.
        (413, {"code": 413, "type": "TooLongFrameException", "message": "m"}, client.TooLarge),
        (503, {"code": 503, "type": "ServiceUnavailableException", "message": "m"}, client.NotReady),
        (404, {"code": 404, "type": "ModelNotFoundException", "message": "m"}, client.NotReady),
        (502, "<html>bad gateway</html>", client.InternalError),
        (418, {}, client.UnexpectedResponse),
    ],
)
def test_one_exception_type_per_error(status, body, error):
    exc = client.error_from_response(response(status, body))
    assert type(exc) is error and exc.status == status and exc.message


def test_client_against_the_server(server):
    api = client.QMaskClient(server.ports.url("inference"))
    assert api.status().state is client.State.READY
    result = api.unmask(PHOTO.read_bytes())
    assert (result.media_type, result.model_version) == ("image/png", VERSION)
    assert [f.edited for f in result.faces] == [True]
    assert Image.open(io.BytesIO(result.image)).size == Image.open(PHOTO).size
    with pytest.raises(client.NotAnImage):
        api.unmask(b"not a photo")


def test_the_pages_copies_of_the_server_limits_are_the_servers():
    # The page's image has no qmask package, so it states the limits itself: they must agree.
    from frontend import app
    from qmask.imageio import ImageLimits
    from qmask.pipeline import PipelineConfig
    from qmask.video import VIDEO_MEDIA_TYPES, VideoLimits

    photos, clips = ImageLimits(), VideoLimits()
    assert app.MAX_UPLOAD_MB * 2**20 == photos.max_bytes == clips.max_bytes
    assert f"{photos.max_pixels // 1_000_000} megapixels" in app.MESSAGES[client.TooLarge]
    assert f"({PipelineConfig().max_faces})" in app.MESSAGES[client.TooManyFaces]
    clip_too_large = app.VIDEO_MESSAGES[client.TooLarge]
    for words in (
        f"{clips.max_seconds:.0f} seconds",
        f"{clips.max_frames} frames",
        f"{clips.max_fps:.0f} frames per second",
        f"{clips.max_long_side}x{clips.max_short_side}",
    ):
        assert words in clip_too_large
    assert set(client.VIDEO_TYPES.values()) <= set(VIDEO_MEDIA_TYPES)


def test_client_retries_connection_errors_only():
    # Nothing listens: the connection is refused, retried twice with back-off, then reported.
    api = client.QMaskClient(f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(client.Unreachable):
        api.unmask(PHOTO.read_bytes())
    assert time.monotonic() - start >= 0.25  # the back-off ran
    assert api.status().state is client.State.UNREACHABLE
    # A server that answers, even with an error, is asked once: a photo is never run twice.
    posts = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            body = b'{"code": 503, "type": "ServiceUnavailableException", "message": "queue full"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy) as busy:
        threading.Thread(target=busy.serve_forever, daemon=True).start()
        with pytest.raises(client.NotReady):
            client.QMaskClient(f"http://127.0.0.1:{busy.server_address[1]}").unmask(PHOTO.read_bytes())
        busy.shutdown()
    assert posts == ["/predictions/qmask"]


@pytest.fixture
def running_page(api_url) -> Iterator[str]:
    """The page served by `streamlit run` on a free port, as `make run` starts it."""
    port = free_port()
    process = subprocess.Popen(
        streamlit_command(port),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not page_ready(url):
            assert process.poll() is None and time.monotonic() < deadline, "streamlit did not start"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def people_photo() -> bytes:
    """Two real masked photos and a bare face side by side: the real-masked folder holds no photo of
    several people that the detector finds every face of."""
    tiles = [Image.open(p).convert("RGB").resize((240, 240)) for p in (PHOTO, OTHER, BARE)]
    canvas = Image.new("RGB", (720, 240))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (240 * i, 0))
    return encoded("PNG", canvas)


def launch_chromium(playwright):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    )


@pytest.mark.parametrize(
    ("width", "height", "shot"), [(1280, 1400, SCREENSHOT), (390, 1800, PHONE_SCREENSHOT)]
)
def test_browser_end_to_end(running_page, api_url, tmp_path, width, height, shot):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
    upload = tmp_path / "people.png"
    upload.write_bytes(people_photo())
    # The server's answer for the same photo: what the close-up must show, pixel for pixel.
    expected = client.QMaskClient(api_url).unmask(upload.read_bytes())
    output = Image.open(io.BytesIO(expected.image)).convert("RGB")
    # The page numbers faces left to right; its first close-up is the left-most unmasked face.
    first = min((f for f in expected.faces if f.edited), key=lambda f: f.box[0])
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(running_page)
            expect(tab.get_by_text("Server and model ready")).to_be_visible(timeout=30_000)
            tab.locator("input[type=file]").set_input_files(upload)
            expect(tab.get_by_text("3 faces found, 2 unmasked, 1 left alone")).to_be_visible(
                timeout=RUN_TIMEOUT * 1000
            )
            expect(tab.get_by_text("was left alone: no mask was seen on it")).to_be_visible()
            # The first close-up is open; open the second one too.
            closeups = tab.get_by_text("close up: slide to compare")
            expect(closeups).to_have_count(2)
            closeups.nth(1).click()
            frame = tab.frame_locator("iframe").first
            after = frame.locator("img.after")
            expect(after).to_be_visible(timeout=30_000)
            after.evaluate("img => img.decode()")
            # The close-up holds the server's output pixels at full resolution, not upscaled.
            src = after.get_attribute("src")
            shown = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
            assert shown.tobytes() == output.crop(closeup_box(first.box, output.size)).tobytes()
            natural, rendered = after.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
            assert natural == shown.width and rendered <= natural + 0.5
            # The slider moves the edge between before and after; holding the button shows before.
            edge = frame.locator(".edge")
            frame.locator("input[type=range]").fill("20")
            assert edge.evaluate("e => e.style.left") == "20%"
            hold = frame.get_by_role("button", name="Hold: before")
            hold.dispatch_event("pointerdown")
            assert edge.evaluate("e => e.style.left") == "100%"
            hold.dispatch_event("pointerup")
            assert edge.evaluate("e => e.style.left") == "20%"
            # Before the screenshot: the script run is over and every picture is decoded. ("networkidle"
            # is not a signal here: the page's websocket and status probes keep the network busy.)
            expect(tab.locator("[data-testid=stStatusWidget]")).to_have_count(0, timeout=30_000)
            tab.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
            shot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert Image.open(shot).width == width
