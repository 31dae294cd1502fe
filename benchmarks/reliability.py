"""Hostile and broken input against a running TorchServe (`make serve` first), in one run.

    python -m benchmarks.reliability [--url http://127.0.0.1:8080] [--management http://127.0.0.1:8081]

Sends every case of `CASES` (empty, random, truncated, bombs, wrong types, the wrong endpoint, a
second form field, deep and multi-frame images, clips past the limits...), prints the table of
what came back (input, status, code) and then checks that every model still has its READY worker
and that a good photo is still answered. Exits 1 when any answer differs from what README.md
promises. `tests/test_reliability.py` runs the same cases against the test server.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests
from PIL import Image

from benchmarks.clips import encode_frames
from benchmarks.data import BENCH, REAL_MASKED

PHOTO = REAL_MASKED / "1003.png"  # one masked face, found by the detector
TIMEOUT = 300


@dataclass(frozen=True)
class Case:
    name: str  # what is sent, for people
    send: Callable[[str], requests.Response]  # inference base URL -> the answer
    status: int
    code: str | None  # the JSON `code`; None for answers TorchServe gives before the handler


def _post(model: str, body: bytes, media_type: str | None, **kwargs) -> Callable[[str], requests.Response]:
    headers = {"Content-Type": media_type} if media_type else {}

    def send(url: str) -> requests.Response:
        return requests.post(
            f"{url}/predictions/{model}", data=body, headers=headers, timeout=TIMEOUT, **kwargs
        )

    return send


def _form(model: str, fields: list[tuple[str, tuple[str, bytes, str]]]) -> Callable[[str], requests.Response]:
    def send(url: str) -> requests.Response:
        return requests.post(f"{url}/predictions/{model}", files=fields, timeout=TIMEOUT)

    return send


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_clip(frames: int, fps: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """An H.264 MP4 of a real masked photo, `frames` frames at `fps`."""
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize(size))
    return encode_frames([np.roll(photo, i, axis=1) for i in range(frames)], fps)


def faces_grid(count: int = 20) -> bytes:
    """Bench photos side by side: more faces than the limit (16)."""
    tiles = [Image.open(BENCH / f"{i:04d}_target.png").convert("RGB") for i in range(count)]
    grid = Image.new("RGB", (256 * 5, 256 * (count // 5)))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (256 * (i % 5), 256 * (i // 5)))
    return _encoded(grid, "JPEG", quality=92)


def cases() -> list[Case]:
    photo = Image.open(PHOTO).convert("RGB")
    png, jpeg = _encoded(photo, "PNG"), _encoded(photo, "JPEG", quality=92)
    deep = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    mpo = _encoded(
        photo, "MPO", save_all=True, append_images=[photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    )
    bomb = _encoded(Image.new("1", (20000, 20000)), "PNG")  # 400 MP in a few KB
    clip = photo_clip(8, 15)
    return [
        Case("empty body", _post("qmask", b"", "image/png"), 400, "not_an_image"),
        Case(
            "random bytes, no type",
            _post("qmask", bytes(np.random.default_rng(0).integers(0, 256, 65536, np.uint8)), None),
            400,
            "not_an_image",
        ),
        Case(
            "text sent as image/jpeg",
            _post("qmask", b"this is not an image", "image/jpeg"),
            400,
            "not_an_image",
        ),
        Case("PNG cut after 2 KB", _post("qmask", png[:2000], "image/png"), 400, "truncated_image"),
        Case(
            "JPEG cut in half", _post("qmask", jpeg[: len(jpeg) // 2], "image/jpeg"), 400, "truncated_image"
        ),
        Case("over 25 MiB", _post("qmask", b"\xff\xd8" + bytes(25 * 2**20), "image/jpeg"), 413, "too_large"),
        Case("over 26 MiB (TorchServe's limit)", _post("qmask", bytes(27 * 2**20), "image/jpeg"), 413, None),
        Case(
            "8000x6000 PNG (48 MP)",
            _post("qmask", _encoded(Image.new("1", (8000, 6000)), "PNG"), "image/png"),
            413,
            "too_large",
        ),
        Case("decompression bomb, 20000x20000 in 50 KB", _post("qmask", bomb, "image/png"), 413, "too_large"),
        Case("text/plain", _post("qmask", b"hello", "text/plain"), 415, "unsupported_type"),
        Case(
            "GIF as image/gif", _post("qmask", _encoded(photo, "GIF"), "image/gif"), 415, "unsupported_type"
        ),
        Case("GIF, no type", _post("qmask", _encoded(photo, "GIF"), None), 415, "unsupported_type"),
        Case(
            "form-urlencoded body",
            _post("qmask", png, "application/x-www-form-urlencoded"),
            415,
            "unsupported_type",
        ),
        Case(
            "multipart without `data`",
            _form("qmask", [("photo", ("a.png", png, "image/png"))]),
            400,
            "not_an_image",
        ),
        Case(
            "multipart with two `data` parts",
            _form("qmask", [("data", ("a.png", png, "image/png")), ("data", ("b.png", png, "image/png"))]),
            400,
            "not_an_image",
        ),
        Case(
            "no face",
            _post("qmask", _encoded(Image.new("RGB", (200, 200), (120, 60, 60)), "PNG"), "image/png"),
            422,
            "no_face",
        ),
        Case("20 faces", _post("qmask", faces_grid(), "image/jpeg"), 422, "too_many_faces"),
        Case("16-bit greyscale PNG", _post("qmask", _encoded(deep, "PNG"), "image/png"), 200, None),
        Case("MPO (two-frame JPEG)", _post("qmask", mpo, "image/jpeg"), 200, None),
        Case("clip sent to the photo model", _post("qmask", clip, "video/mp4"), 415, "unsupported_type"),
        Case("photo sent to the clip model", _post("qmask-video", png, "image/png"), 415, "unsupported_type"),
        Case("PNG declared video/mp4", _post("qmask-video", png, "video/mp4"), 400, "not_a_video"),
        Case("JPEG declared video/webm", _post("qmask-video", jpeg, "video/webm"), 400, "not_a_video"),
        Case(
            "random bytes declared video/mp4",
            _post("qmask-video", bytes(4096), "video/mp4"),
            400,
            "not_a_video",
        ),
        Case("MP4 cut after 1.5 KB", _post("qmask-video", clip[:1500], "video/mp4"), 400, "truncated_video"),
        Case("clip at 120 fps", _post("qmask-video", photo_clip(12, 120), "video/mp4"), 413, "too_large"),
        Case(
            "clip of 1,000 frames",
            _post("qmask-video", photo_clip(1000, 40, (64, 48)), "video/mp4"),
            413,
            "too_large",
        ),
    ]


@dataclass
class Row:
    case: Case
    status: int
    code: str | None

    @property
    def ok(self) -> bool:
        return self.status == self.case.status and (self.case.code is None or self.code == self.case.code)


def run(url: str, selected: list[Case] | None = None) -> list[Row]:
    rows = []
    for case in selected or cases():
        response = case.send(url.rstrip("/"))
        code = None
        if response.headers.get("Content-Type", "").startswith("application/json"):
            body = response.json()
            code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), str) else None
        rows.append(Row(case, response.status_code, code))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| input | status | code |", "|---|---|---|"]
    for row in rows:
        code = f"`{row.code}`" if row.code else "— (TorchServe's own)" if row.status != 200 else "—"
        mark = "" if row.ok else f" (expected {row.case.status} {row.case.code or ''})"
        lines.append(f"| {row.case.name} | {row.status}{mark} | {code} |")
    return "\n".join(lines)


def still_serving(url: str, management: str) -> list[str]:
    """What is wrong after the cases: a model without a READY worker, or a good photo refused."""
    problems = []
    for model in ("qmask", "qmask-video"):
        workers = requests.get(f"{management}/models/{model}", timeout=30).json()[0]["workers"]
        if not any(w["status"] == "READY" for w in workers):
            problems.append(f"{model} has no READY worker")
    answer = _post("qmask", PHOTO.read_bytes(), "image/png")(url)
    if answer.status_code != 200:
        problems.append(f"a good photo got {answer.status_code}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="inference API")
    parser.add_argument("--management", default="http://127.0.0.1:8081", help="management API")
    args = parser.parse_args(argv)
    rows = run(args.url)
    print(table(rows))
    problems = [f"{r.case.name}: {r.status} {r.code}" for r in rows if not r.ok]
    problems += still_serving(args.url, args.management)
    print(
        "\nafterwards: "
        + ("; ".join(problems) if problems else "every model READY, a good photo answered 200")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
