"""A small client for QMask's TorchServe inference API (README, "Serving"), used by the web page.

Only the inference API: the management API stays inside the server's pod in production, so
readiness is judged from `/ping` and from how the model's endpoint answers a probe.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from enum import Enum

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

MODEL = "qmask"
# Clips have a model of their own (own worker and queue), so photos never wait behind them.
VIDEO_MODEL = "qmask-video"
# (connect, read) seconds: a dead address fails fast, a busy CPU server gets time to answer.
PREDICT_TIMEOUT = (3.05, 120.0)
STATUS_TIMEOUT = (3.05, 10.0)
# A clip is every frame of it: minutes on a CPU server.
VIDEO_TIMEOUT = (3.05, 900.0)
# What the page sends clips as, by file suffix; the answer is always MP4.
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
# Connection errors happen before the server has seen a request, so retrying them (POST included)
# never runs a photo twice; read errors, timeouts and error statuses are not retried here.
CONNECT_RETRIES = Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0, backoff_factor=0.25)
# When the worker dies with the request (killed, out of memory), TorchServe answers with its own body
# {"code": 507 or 500, "type": ..., "message": "Worker died."} (507 once it has seen the kill's exit
# status) and starts a new worker within seconds. Unmasking a photo changes nothing on the server,
# so a photo is sent once more after this pause; a clip is not (minutes of work; the page says retry).
WORKER_DIED_MESSAGE = "Worker died."
WORKER_RESTART_S = 6.0
# The body of the readiness probe: the handler rejects it before any model runs.
PROBE_BODY = b"qmask readiness probe"


class ApiError(Exception):
    """A failed request; `message` is the server's text for people (or ours when it gave none)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# One type per `code` of the handler's JSON errors.
class NotAnImage(ApiError):
    """400 not_an_image: the bytes are not a picture."""


class TruncatedImage(ApiError):
    """400 truncated_image: the picture is cut off or corrupt."""


class TooLarge(ApiError):
    """413 too_large: too many bytes or pixels (also TorchServe's own 413 for huge bodies)."""


class UnsupportedType(ApiError):
    """415 unsupported_type: an image format other than JPEG, PNG or WebP."""


class NotAVideo(ApiError):
    """400 not_a_video: the bytes sent as a clip are not one."""


class TruncatedVideo(ApiError):
    """400 truncated_video: the clip is cut off or corrupt."""


class NoFace(ApiError):
    """422 no_face: the detector found no face."""


class TooManyFaces(ApiError):
    """422 too_many_faces: more faces than the server edits in one photo."""


class InternalError(ApiError):
    """500 internal_error: a bug on the server."""


# Failures that are not about the photo.
class Unreachable(ApiError):
    """No connection to the server, or no answer within the timeout."""


class NotReady(ApiError):
    """The server answers but the model does not: not registered (404) or no free worker (503)."""


class WorkerDied(ApiError):
    """507 or 500 "Worker died.": the worker died with the request; worth one retry once a new one is up."""


class UnexpectedResponse(ApiError):
    """An answer outside the API contract."""


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    "not_an_image": NotAnImage,
    "truncated_image": TruncatedImage,
    "too_large": TooLarge,
    "unsupported_type": UnsupportedType,
    "not_a_video": NotAVideo,
    "truncated_video": TruncatedVideo,
    "no_face": NoFace,
    "too_many_faces": TooManyFaces,
    "internal_error": InternalError,
}


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    score: float
    mask_fraction: float
    edited: bool
    reason: str | None = None  # why a face was left alone (the API's `reason`, e.g. "no_mask")


@dataclass(frozen=True)
class Result:
    image: bytes
    media_type: str
    faces: list[Face]
    model_version: str


class State(Enum):
    UNREACHABLE = "unreachable"
    UNHEALTHY = "unhealthy"
    NOT_READY = "not ready"
    READY = "ready"


@dataclass(frozen=True)
class Status:
    state: State
    detail: str


def error_from_response(response: requests.Response) -> ApiError:
    """The exception for an error answer: the handler's JSON `code` decides, else the status."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    message = message if isinstance(message, str) and message else f"HTTP {response.status_code}"
    if isinstance(code, str) and code in ERRORS_BY_CODE:
        return ERRORS_BY_CODE[code](message, response.status_code)
    # TorchServe's own answers, before the handler: {"code": 404, "type": ..., "message": ...}.
    if response.status_code == 413:
        return TooLarge(message, 413)
    if response.status_code in (500, 507) and message == WORKER_DIED_MESSAGE:
        return WorkerDied(message, response.status_code)
    if response.status_code in (404, 503):
        return NotReady(message, response.status_code)
    if response.status_code >= 500:
        return InternalError(message, response.status_code)
    return UnexpectedResponse(message, response.status_code)


class QMaskClient:
    """Talks to one server; the session keeps connections open between requests."""

    def __init__(self, base_url: str, worker_restart_s: float = WORKER_RESTART_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.worker_restart_s = worker_restart_s
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=CONNECT_RETRIES)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _request(self, method: str, path: str, timeout: tuple[float, float], **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.base_url + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(f"no answer from {self.base_url} ({type(exc).__name__})") from exc

    def _predict_raw(self, photo: bytes, timeout: tuple[float, float]) -> requests.Response:
        # application/octet-stream: the server looks at the bytes, whatever the file was called.
        headers = {"Content-Type": "application/octet-stream", "Accept": "application/json"}
        return self._request("POST", f"/predictions/{MODEL}", timeout, data=photo, headers=headers)

    def unmask(self, photo: bytes) -> Result:
        """The unmasked photo (the input's format) with the faces found; raises an `ApiError`.

        A worker that died with the photo gets the photo once more, after a pause.
        """
        response = self._predict_raw(photo, PREDICT_TIMEOUT)
        if response.status_code != 200 and isinstance(error_from_response(response), WorkerDied):
            time.sleep(self.worker_restart_s)
            response = self._predict_raw(photo, PREDICT_TIMEOUT)
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            faces = [
                Face(
                    tuple(f["box"]),
                    float(f["score"]),
                    float(f["mask_fraction"]),
                    bool(f["edited"]),
                    f.get("reason"),
                )
                for f in body["faces"]
            ]
            return Result(
                base64.b64decode(body["image"], validate=True),
                str(body["format"]),
                faces,
                str(body["model_version"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise UnexpectedResponse("the server's answer could not be read", 200) from exc

    def unmask_video(self, clip: bytes, media_type: str) -> bytes:
        """The unmasked clip (MP4, with the input's sound); raises an `ApiError`."""
        headers = {"Content-Type": media_type, "Accept": "video/mp4"}
        path = f"/predictions/{VIDEO_MODEL}"
        response = self._request("POST", path, VIDEO_TIMEOUT, data=clip, headers=headers)
        if response.status_code != 200:
            raise error_from_response(response)
        if not response.headers.get("Content-Type", "").startswith("video/mp4"):
            raise UnexpectedResponse("the server did not answer with a video", 200)
        return response.content

    def status(self) -> Status:
        """Whether the server is up and the model answers; never raises."""
        try:
            ping = self._request("GET", "/ping", STATUS_TIMEOUT)
        except Unreachable as exc:
            return Status(State.UNREACHABLE, exc.message)
        if ping.status_code != 200:
            return Status(State.UNHEALTHY, f"/ping answered HTTP {ping.status_code}")
        # /ping is Healthy before a worker has loaded the model, so ask the model itself, with a body
        # its handler refuses at once: that answer (400) can only come from a loaded worker.
        try:
            probe = self._predict_raw(PROBE_BODY, STATUS_TIMEOUT)
        except Unreachable as exc:
            return Status(State.UNREACHABLE, exc.message)
        error = error_from_response(probe)
        if isinstance(error, NotAnImage):
            return Status(State.READY, "the model is loaded")
        if isinstance(error, NotReady):
            return Status(State.NOT_READY, error.message)
        return Status(State.UNHEALTHY, f"the model answered a probe with HTTP {probe.status_code}")
