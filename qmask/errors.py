"""What the library refuses, as exceptions that carry the answer an API gives (status and code).

Subclasses say what was wrong: the image (`qmask.imageio`), the clip (`qmask.video`) or what was
found in it (`qmask.pipeline`: no face, too many faces)."""

from __future__ import annotations


class InputError(ValueError):
    """An input the pipeline refuses; `status` is the HTTP status an API answers with, `code` the
    stable name programs can test."""

    status = 400
    code = "bad_input"
