"""Geometry: warp a face to the canonical crop the networks see, and paste the result back.

The alignment uses the two eye centres only: a mask never hides the eyes, whereas landmarks of
the nose, mouth and jaw are guesses under a mask. Training crops are made by the same function,
so the networks see faces framed exactly as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.mesh_points import EYE_CORNERS

CROP_SIZE = 256
# Where the eye centres land in the crop: 2.9 eye distances of room below the eyes, so masks
# that reach well under the chin (and sideways up to the ears) fit inside the crop.
CANONICAL_EYES = np.array([[100.0, 92.0], [156.0, 92.0]])
# Where the training photos (UTKFace's aligned faces) lie in the crop, (x0, y0, x1, y1): the 10th
# percentile of their left and top edges, the 90th of their right and bottom edges
# (`python -m training.photo_window`). Beyond it a training crop is the photo's mirrored
# surroundings.
TRAINING_PHOTO_WINDOW = (44, 41, 213, 210)


def training_window(size: int = CROP_SIZE, inset_x: int = 0) -> np.ndarray:
    """(size, size) bool: the crop's pixels within `TRAINING_PHOTO_WINDOW`, less `inset_x` columns
    (in pixels of a `CROP_SIZE` crop) at its left and right edges."""
    x0, y0, x1, y1 = (round(v * size / CROP_SIZE) for v in TRAINING_PHOTO_WINDOW)
    inset = round(inset_x * size / CROP_SIZE)
    window = np.zeros((size, size), bool)
    window[y0:y1, x0 + inset : x1 - inset] = True
    return window


def mesh_eyes(mesh: np.ndarray) -> np.ndarray:
    """Eye centres (midpoints of the eye corners) from a 478-point face mesh."""
    return np.array([(mesh[i] + mesh[j]) / 2 for i, j in EYE_CORNERS], dtype=np.float64)


def eyes_to_crop(eyes: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix that maps the image onto the canonical crop, from the eye centres."""
    src = np.asarray(eyes, dtype=np.float64)
    dst = CANONICAL_EYES
    src_vec, dst_vec = src[1] - src[0], dst[1] - dst[0]
    # Complex division gives rotation and scale in one step: z = dst_vec / src_vec.
    z = complex(*dst_vec) / complex(*src_vec)
    a, b = z.real, z.imag
    rot = np.array([[a, -b], [b, a]])
    shift = dst.mean(axis=0) - rot @ src.mean(axis=0)
    return np.hstack([rot, shift[:, None]])


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp_to_crop(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The canonical crop; outside the photo it is mirrored.

    Mirroring, not replicating the edge: replicated edges are long streaks that dominate crops of
    tightly framed photos (training faces are 200 px forehead-to-chin crops), and a network
    trained on them learnt to paint streaks into lower faces.
    """
    return cv2.warpAffine(
        image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def inside_photo(shape: tuple[int, ...], matrix: np.ndarray) -> np.ndarray:
    """(CROP_SIZE, CROP_SIZE) float32 weight of crop pixels that come from inside the photo (1) or from its
    mirrored surroundings (0), ramping over the one pixel between as bilinear sampling does.

    Computed from the crop's pixel positions, not by warping a photo-sized plane: it runs for
    every face of every photo and video frame.
    """
    h, w = shape[:2]
    ys, xs = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float32)
    inv = invert(matrix)
    x = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    y = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    along_x = np.clip(np.minimum(x + 1, w - x), 0, 1)
    along_y = np.clip(np.minimum(y + 1, h - y), 0, 1)
    return (along_x * along_y).astype(np.float32)


@dataclass(frozen=True)
class AlignedFace:
    """One face in the canonical crop: what every stage after detection works on."""

    matrix: np.ndarray  # 2x3, photo -> crop (`eyes_to_crop`)
    crop: np.ndarray  # (CROP_SIZE, CROP_SIZE, 3), `warp_to_crop`
    inside: np.ndarray  # (CROP_SIZE, CROP_SIZE) float32, `inside_photo`


def align_face(image: np.ndarray, eyes: np.ndarray) -> AlignedFace:
    """The face whose eye centres are `eyes` (image pixels), in the canonical crop."""
    matrix = eyes_to_crop(eyes)
    return AlignedFace(matrix, warp_to_crop(image, matrix), inside_photo(image.shape, matrix))


def paste_back(image: np.ndarray, crop: np.ndarray, weight: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Blend `crop` into `image` (in place) through the inverse of `matrix`, weighted by `weight`.

    Only pixels where the warped weight is above zero change; the rest stay byte-identical.
    Works on the bounding box of the region so a 12 MP photo costs no more than a small one.
    """
    h, w = image.shape[:2]
    ys, xs = np.nonzero(weight > 0)
    if len(xs) == 0:
        return image
    corners = np.array(
        [
            [xs.min() - 1, ys.min() - 1],
            [xs.max() + 1, ys.min() - 1],
            [xs.min() - 1, ys.max() + 1],
            [xs.max() + 1, ys.max() + 1],
        ],
        dtype=np.float64,
    )
    inv = invert(matrix)
    box = transform_points(corners, inv)
    x0, y0 = np.floor(box.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(box.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return image
    # Inverse warp into the box only: shift the crop->image map by the box origin.
    local = inv.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    wgt = cv2.warpAffine(
        weight, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    patch = cv2.warpAffine(crop, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    region = image[y0:y1, x0:x1]
    # Where the weight is 1 (most of a large face) the patch is copied as it is; only the feather's
    # ring is blended in float (the same values a blend of every pixel gives, at a fraction of the
    # cost: 500 ms of a 12 MP photo's face went to blending whole boxes).
    full = wgt >= 1
    np.copyto(region, patch, where=full[..., None])
    ring = (wgt > 0) & ~full
    w = wgt[ring][:, None]
    mixed = w * patch[ring].astype(np.float32) + (1 - w) * region[ring].astype(np.float32)
    region[ring] = np.clip(np.rint(mixed), 0, 255).astype(image.dtype)
    return image
