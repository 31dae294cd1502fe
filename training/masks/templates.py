"""Template masks: the pictures of `mask-templates/` and their split, read from masks.cfg and fitted
to the face by a homography between fitting points."""

from __future__ import annotations

import configparser
from pathlib import Path

import cv2
import numpy as np

from qmask.mesh_points import NOSE_TIP
from training.masks.face import EYE_CONTOURS, Face, fitting_points

TEMPLATE_SHARE = 0.25  # of the train split's masks; the rest are drawn
TRAIN_TEMPLATES = ("surgical", "surgical_blue", "surgical_green", "N95", "cloth")
HELDOUT_TEMPLATES = ("KN95", "gas")
TRAIN_TEXTURES = ("check", "floral")
HELDOUT_TEXTURES = ("fruits", "others")
# Held-out split: KN95 and gas templates as they are, or the cloth template printed with a
# held-out texture (probabilities).
HELDOUT_WEIGHTS = {"KN95": 0.4, "gas": 0.25, "cloth+texture": 0.35}


TEMPLATE_MAX_SIDE = 420  # templates are pictures up to 1,800 px; faces are ~200 px
TEXTURE_MAX_SIDE = 384

TEXTURE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def fit_template(
    alpha: np.ndarray, src: np.ndarray, face: Face, rng: np.random.Generator
) -> np.ndarray | None:
    """Homography from template to face, slightly off as real masks sit, that keeps the eyes clear
    and covers the nose tip and the mouth (some pictures are tall, e.g. KN95 and gas masks); the
    last one tried if none of the eight does, None if none could be computed."""
    mesh = face.to_image(face.true)
    ring = np.array([[0, 0], [3, 0], [-3, 0], [0, 3], [0, -3]], np.float64)  # pixels around each point
    eyes = (mesh[list(EYE_CONTOURS)][:, None] + ring).reshape(-1, 2)
    cover = (mesh[[NOSE_TIP, 13, 14]][:, None] + ring).reshape(-1, 2)
    base = fitting_points(mesh).astype(np.float64)
    down = face.rot[:, 1] * face.iod  # the face's "down" in the image, one iod long
    homography = None
    for attempt in range(8):
        if attempt < 4:  # a common shift and small independent offsets
            dst = base + rng.normal(0, 0.03, 2) * face.iod + rng.normal(0, 0.025, (6, 2)) * face.iod
        else:  # lower and lower, for pictures that would reach the eyes
            dst = base + down * 0.06 * (attempt - 3)
        homography, _ = cv2.findHomography(src, dst, 0)
        if homography is None:
            continue
        at = cv2.perspectiveTransform(np.concatenate([eyes, cover])[None], np.linalg.inv(homography))[0]
        coverage = cv2.remap(
            alpha, at[:, :1].astype(np.float32), at[:, 1:].astype(np.float32), cv2.INTER_LINEAR
        )
        if coverage[: len(eyes)].max() == 0 and coverage[len(eyes) :].min() > 0.99:
            break
    return homography


def read_config(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Template name -> (picture, fitting points a..f (6, 2)) from masks.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(root / "masks.cfg")
    out = {}
    for name in cfg.sections():
        section = cfg[name]
        if "template" not in section:
            continue
        points = np.array([[float(c) for c in section[f"mask_{k}"].split(",")] for k in "abcdef"])
        out[name] = (root / "templates" / Path(section["template"]).name, points)
    return out
