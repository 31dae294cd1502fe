"""QMask's web page: upload masked photos or clips (or take a photo), see and download them unmasked.

Run from the repository root (`make run`, or `python -m streamlit run frontend/app.py`): the page
holds no model, it sends each photo to TorchServe at `QMASK_API_URL` (frontend/client.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath

import av
import streamlit as st
import streamlit.components.v1 as components
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

# `streamlit run frontend/app.py` puts frontend/ on sys.path, not the folder holding the `frontend`
# package (`python -m streamlit`, as `make run` and the tests use it, has it already).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from frontend.client import (  # noqa: E402
    VIDEO_TYPES,
    ApiError,
    Face,
    InternalError,
    NoFace,
    NotAnImage,
    NotAVideo,
    NotReady,
    QMaskClient,
    Result,
    State,
    Status,
    TooLarge,
    TooManyFaces,
    TruncatedImage,
    TruncatedVideo,
    Unreachable,
    UnsupportedType,
    WorkerDied,
)
from frontend.compare import (  # noqa: E402
    changed_box,
    closeup_box,
    comparison_height,
    comparison_html,
)

DEFAULT_API_URL = "http://127.0.0.1:8080"
# The server refuses more than 25 MiB; stopping bigger files here spares the upload.
MAX_UPLOAD_MB = 25
DOWNLOAD_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
# Failures the next try may not have: not kept, so a rerun asks the server again.
TRANSIENT = (Unreachable, NotReady, InternalError, WorkerDied)
# JPEG re-encoding moves every pixel a little; the replaced region differs by far more.
REGION_THRESHOLD = 24
EDITED_COLOUR = (0, 200, 90)
UNEDITED_COLOUR = (255, 190, 0)
REGION_COLOUR = (255, 0, 200)
# Annotations are drawn on the result enlarged to at least this many pixels on its longer side.
ANNOTATION_SIZE = 600

MESSAGES: dict[type[ApiError], str] = {
    NoFace: "No face was found in this photo. Faces that are small, turned away or in the dark are "
    "hard to find: try a closer, frontal photo.",
    TooManyFaces: "This photo has more faces than QMask edits at once (16). Crop it to fewer people.",
    TooLarge: f"This photo is too large: at most {MAX_UPLOAD_MB} MB and 40 megapixels. Make it smaller.",
    NotAnImage: "This file is not a picture QMask can read. Send a JPEG, PNG or WebP photo.",
    TruncatedImage: "This picture is cut off or damaged. Save or export it again and retry.",
    UnsupportedType: "This image format is not supported. Send a JPEG, PNG or WebP photo.",
    Unreachable: "The QMask server cannot be reached. Check that it is running, then try again.",
    NotReady: "The QMask server is up but its model is not ready (still loading, or busy). Try again "
    "in a moment.",
    InternalError: "The server failed on this photo. Try again; if it keeps failing, tell its operators.",
    WorkerDied: "The server restarted twice while working on this photo. Try again in a minute.",
}
MESSAGES[NotAVideo] = "This file is not a video QMask can read. Send an MP4, QuickTime or WebM clip."
MESSAGES[TruncatedVideo] = "This clip is cut off or damaged. Save or export it again and retry."
# Where a clip needs other words than a photo.
VIDEO_MESSAGES: dict[type[ApiError], str] = {
    TooLarge: f"This clip is too large: at most 30 seconds, 900 frames, 60 frames per second, 1920x1080 "
    f"and {MAX_UPLOAD_MB} MB. Trim or shrink it.",
    NoFace: "No face was found in any frame of this clip. Try a clip with closer, frontal faces.",
    InternalError: "The server failed on this clip (a long clip can run out of time on a busy server). "
    "Try a shorter one; if it keeps failing, tell its operators.",
    WorkerDied: "The server restarted while working on this clip. Try again in a minute.",
}
UNEXPECTED = "The server gave an answer this page does not understand. Try again later."
# Why the server left a face alone (its `reason`), in words for people.
REASONS = {"no_mask": "no mask was seen on it"}


@dataclass(frozen=True)
class Upload:
    """An upload: a photo or, by its suffix, a video clip."""

    name: str
    data: bytes

    @property
    def video_type(self) -> str | None:
        return VIDEO_TYPES.get(PurePath(self.name).suffix.lower())


def api_url() -> str:
    return os.environ.get("QMASK_API_URL", DEFAULT_API_URL)


def client() -> QMaskClient:
    """One client per browser session (its own connection pool), made again if the URL changed."""
    url = api_url()
    current = st.session_state.get("client")
    if current is None or current.base_url != url.rstrip("/"):
        current = st.session_state["client"] = QMaskClient(url)
    return current


@st.cache_data(ttl=15, show_spinner=False)
def server_status(url: str) -> Status:
    # Cached across sessions (it holds no photo) so reruns do not probe the server every time.
    return QMaskClient(url).status()


def show_status() -> None:
    with st.spinner("Asking the server…"):
        status = server_status(api_url())
    version = st.session_state.get("model_version")
    answered = f"model version {version} answered the last photo" if version else "no photo sent yet"
    where = f"`{api_url()}`"
    if status.state is State.READY:
        st.success(f"Server and model ready at {where}; {answered}.", icon=":material/check_circle:")
    elif status.state is State.NOT_READY:
        message = f"Server up at {where}, model not ready yet: {status.detail}"
        st.warning(message, icon=":material/hourglass_top:")
    elif status.state is State.UNHEALTHY:
        st.warning(f"Server at {where} is not healthy: {status.detail}", icon=":material/warning:")
    else:
        st.error(f"Server unreachable at {where}: photos cannot be unmasked now.", icon=":material/link_off:")


def inputs(use_camera: bool) -> list[Upload]:
    files = st.file_uploader(
        "Photos or clips with masked faces (JPEG, PNG, WebP; MP4, MOV, WebM up to 30 s)",
        type=["jpg", "jpeg", "png", "webp", *(suffix.lstrip(".") for suffix in VIDEO_TYPES)],
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
    )
    uploads = [Upload(file.name, file.getvalue()) for file in files or []]
    if use_camera:
        shot = st.camera_input("Take a photo")
        if shot is not None:
            uploads.append(Upload("camera.jpg", shot.getvalue()))
    return uploads


def unmask_clip(upload: Upload, media_type: str) -> bytes:
    """The unmasked clip; the server answers only when done, so progress is the time so far."""
    line = st.empty()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(client().unmask_video, upload.data, media_type)
        while not future.done():
            line.info(
                f"Unmasking every frame of {upload.name} on the server: {time.monotonic() - start:.0f} s "
                "so far (a few frames per second on a CPU server)…",
                icon=":material/movie:",
            )
            time.sleep(0.5)
    line.empty()
    return future.result()


def unmask(upload: Upload) -> Result | bytes | ApiError:
    """The server's answer for a photo (a Result) or a clip (its MP4 bytes), kept in this session so
    reruns (options, downloads) do not send it again. Session state lives in memory and ends with
    the session, unlike st.cache_data, which would share photos between visitors."""
    key = (api_url(), hashlib.sha256(upload.data).hexdigest())
    answers = st.session_state.setdefault("answers", {})
    if key in answers:
        return answers[key]
    with st.spinner(f"Unmasking {upload.name}…"):
        try:
            answer: Result | bytes | ApiError = (
                unmask_clip(upload, upload.video_type) if upload.video_type else client().unmask(upload.data)
            )
        except ApiError as exc:
            answer = exc
    if isinstance(answer, Result):
        st.session_state["model_version"] = answer.model_version
    if not isinstance(answer, TRANSIENT):
        answers[key] = answer
    return answer


def forget_others(uploads: list[Upload]) -> None:
    """Drop the answers for uploads no longer on the page: nothing outlives its upload."""
    keep = {(api_url(), hashlib.sha256(u.data).hexdigest()) for u in uploads}
    answers = st.session_state.get("answers", {})
    for key in set(answers) - keep:
        del answers[key]


def open_image(data: bytes) -> Image.Image:
    # Upright, as the server decodes it (EXIF orientation applied), so both sides line up.
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data)))


def annotate(before: Image.Image, after: Image.Image, result: Result) -> Image.Image:
    """The result with the replaced region outlined and each face's box, score and mask share; small
    photos are enlarged first so that lines and labels stay legible."""
    out = after.convert("RGB")
    scale = max(1.0, ANNOTATION_SIZE / max(out.size))
    size = (round(out.width * scale), round(out.height * scale))
    region = None
    if before.size == out.size:
        # The server keeps every pixel outside the region it replaced, so the region is what changed;
        # the median filter drops isolated pixels that only crossed the threshold by noise.
        diff = ImageChops.difference(before.convert("RGB"), out).split()
        changed = ImageChops.lighter(ImageChops.lighter(diff[0], diff[1]), diff[2])
        region = changed.point(lambda v: 255 if v > REGION_THRESHOLD else 0)
        region = region.filter(ImageFilter.MedianFilter(5))
        region = region.resize(size, Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    out = out.resize(size, Image.Resampling.LANCZOS)
    line = max(2, round(max(size) / 200))
    if region is not None:
        # An outline, not a fill: the painted face inside it is what people want to look at.
        edge = ImageChops.subtract(region.filter(ImageFilter.MaxFilter(2 * (line // 2) + 1)), region)
        out.paste(REGION_COLOUR, mask=edge)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, round(max(size) / 26)))
    for number, face in numbered(result):
        colour = EDITED_COLOUR if face.edited else UNEDITED_COLOUR
        # Boxes of faces cut by the photo's border reach outside it: keep them (and labels) inside.
        x0, y0 = max(0, face.box[0] * scale), max(0, face.box[1] * scale)
        x1, y1 = min(size[0] - 1, face.box[2] * scale), min(size[1] - 1, face.box[3] * scale)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        label = f"{number}: face {face.score:.2f}, mask {face.mask_fraction:.0%}"
        corner = (x0 + 2 * line, y0 + 2 * line)
        draw.text(corner, label, fill=colour, font=font, stroke_width=2, stroke_fill="black")
    return out


def encode_as(result: Result, image: Image.Image, kind: str) -> bytes:
    """The result in the chosen download format; the server's own bytes when they already are."""
    if DOWNLOAD_TYPES[kind] == result.media_type:
        return result.image
    buffer = io.BytesIO()
    if kind == "JPEG":
        # JPEG has no transparency: flatten onto white rather than let transparent pixels turn black.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(buffer, format="JPEG", quality=95, icc_profile=image.info.get("icc_profile"))
    else:
        image.save(buffer, format="PNG", icc_profile=image.info.get("icc_profile"))
    return buffer.getvalue()


def faces_summary(result: Result) -> str:
    edited = sum(face.edited for face in result.faces)
    found = len(result.faces)
    left = found - edited
    alone = f", {left} left alone" if left else ""
    return f"{found} face{'s' * (found != 1)} found, {edited} unmasked{alone} (model {result.model_version})"


def numbered(result: Result) -> list[tuple[int, Face]]:
    """The faces numbered as people read the photo: left to right (the API lists them by size)."""
    return list(enumerate(sorted(result.faces, key=lambda f: (f.box[0], f.box[1])), 1))


def where(face_box: tuple[float, float, float, float], size: tuple[int, int]) -> str:
    """Where a face is in the photo, in words ("left", "top right", ...)."""
    cx, cy = (face_box[0] + face_box[2]) / 2 / size[0], (face_box[1] + face_box[3]) / 2 / size[1]
    row = "top " if cy < 1 / 3 else "bottom " if cy > 2 / 3 else ""
    column = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "middle"
    return (row + column).replace("top middle", "top").replace("bottom middle", "bottom")


def show_comparison(before: Image.Image, after: Image.Image, label: str) -> None:
    components.html(comparison_html(before, after, label), height=comparison_height(after))


def show_error(upload: Upload, error: ApiError) -> None:
    messages = {**MESSAGES, **VIDEO_MESSAGES} if upload.video_type else MESSAGES
    st.error(f"**{upload.name}**: {messages.get(type(error), UNEXPECTED)}")
    # The server's own words help when reporting a problem; a connection failure has none.
    if not isinstance(error, Unreachable):
        st.caption(f"Server: {error.message}")


def show_result(photo: Upload, result: Result, show_faces: bool, kind: str, index: int) -> None:
    before, after = open_image(photo.data), Image.open(io.BytesIO(result.image))
    st.caption(faces_summary(result))
    left, right = st.columns(2)
    left.image(before, caption="Before", width="stretch")
    right.image(annotate(before, after, result) if show_faces else after, caption="After", width="stretch")
    stem = PurePath(photo.name).stem
    st.download_button(
        f"Download {kind}",
        encode_as(result, after, kind),
        file_name=f"{stem}_unmasked.{kind.lower().replace('jpeg', 'jpg')}",
        mime=DOWNLOAD_TYPES[kind],
        key=f"download-{index}",
        on_click="ignore",  # a download changes nothing on the page
    )
    # Every unmasked face close up, at the photo's own resolution, the first one open.
    edited = [(n, face) for n, face in numbered(result) if face.edited]
    for position, (number, face) in enumerate(edited):
        box = closeup_box(face.box, after.size)
        title = f"Face {number} ({where(face.box, after.size)}) close up: slide to compare"
        with st.expander(title, expanded=position == 0):
            show_comparison(
                before.crop(box), after.convert(before.mode).crop(box), f"{photo.name} face {number}"
            )
    for number, face in numbered(result):
        if not face.edited:
            reason = REASONS.get(face.reason or "", "the server left it as it was")
            st.markdown(
                f":material/face: Face {number} ({where(face.box, after.size)}) was left alone: {reason}. "
                "Turn on *Show detected faces* to see it on the photo."
            )


def clip_frame(data: bytes, index: int) -> Image.Image | None:
    """Frame `index` of a clip, upright (as the server processes it), or None past its end."""
    with av.open(io.BytesIO(data)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                image = frame.to_image()
                turns = round(frame.rotation or 0) // 90
                return image.rotate(90 * turns, expand=True) if turns % 4 else image
    return None


def frame_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for _ in container.decode(video=0))


def show_clip(upload: Upload, clip: bytes, index: int) -> None:
    left, right = st.columns(2)
    with left:
        st.caption("Before")
        st.video(upload.data, format=upload.video_type)
    with right:
        st.caption("After")
        st.video(clip, format="video/mp4")
    st.download_button(
        "Download MP4",
        clip,
        file_name=f"{PurePath(upload.name).stem}_unmasked.mp4",
        mime="video/mp4",
        key=f"download-{index}",
        on_click="ignore",
    )
    frames = frame_count(clip)
    with st.expander("A frame close up: slide to compare", expanded=True):
        number = (
            st.slider("Frame", 1, max(frames, 1), (frames + 1) // 2, key=f"frame-{index}")
            if frames > 1
            else 1
        )
        before, after = clip_frame(upload.data, number - 1), clip_frame(clip, number - 1)
        box = changed_box(before, after) if before is not None and after is not None else None
        if box is None:
            st.caption("Nothing was replaced in this frame.")
            return
        # The replaced region, grown like a face's close-up.
        close = closeup_box(box, after.size)
        show_comparison(before.crop(close), after.crop(close), f"{upload.name} frame {number}")


def main() -> None:
    st.set_page_config(page_title="QMask", page_icon=":material/face:", layout="centered")
    with st.sidebar:
        st.header("Options")
        show_faces = st.toggle("Show detected faces and mask regions")
        kind = st.radio("Download as", list(DOWNLOAD_TYPES), horizontal=True)
        use_camera = st.toggle("Take a photo with the camera")
    st.title("QMask")
    # The server's state under the title, where a phone shows it too (its sidebar starts closed):
    # filled at once (a spinner, then the state) and again at the end, to name the model version
    # that answered this run's uploads.
    status_slot = st.empty()
    with status_slot.container():
        show_status()
    st.write(
        "Upload photos or short clips of people wearing face masks: each mask is replaced by a painted "
        "lower face (in clips, in every frame, with the sound kept)."
    )
    st.caption(
        ":material/lock: Privacy: photos and clips are processed in memory and not stored, neither by this "
        "page nor by the server; they are gone when you leave the page."
    )
    uploads = inputs(use_camera)
    forget_others(uploads)
    gallery_slot = st.empty()
    results = []
    for index, upload in enumerate(uploads):
        with st.container(border=True):
            st.subheader(upload.name)
            answer = unmask(upload)
            if isinstance(answer, ApiError):
                show_error(upload, answer)
                continue
            if isinstance(answer, bytes):
                show_clip(upload, answer, index)
                continue
            results.append((upload, answer))
            try:
                show_result(upload, answer, show_faces, kind, index)
            except Exception:  # the page must never show a traceback; the photo alone is at fault
                st.error(f"**{upload.name}**: this photo could not be shown. Try another format.")
    if len(results) > 1:
        with gallery_slot.container():
            st.subheader("Gallery")
            st.image([r.image for _, r in results], caption=[p.name for p, _ in results], width=180)
    with status_slot.container():
        show_status()


# Streamlit runs the page as __main__; tests import it for its constants.
if __name__ == "__main__":
    main()
