"""Where the new face goes and how it meets the photo, in the canonical crop.

From the segmenter's mask probabilities to an `Edit`: the solid mask region (holes filled, only
pieces that reach the mouth area), whether the face is edited at all, the region widened to the
face's outline from the mesh (a mask runs from cheek to cheek), the mask's colour followed up the
nose, the top edge made symmetric on a frontal face, the ear loops beside it, the blend weight (the
region grown at full weight, then feathered) and the hole the inpainter paints (where the weight is 1).
Then the painted face is toned like the photo when the photo is monochrome.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qmask.align import CROP_SIZE, mesh_eyes
from qmask.loops import ear_loops
from qmask.mesh_points import FACE_OUTLINE, NOSE_AREA, NOSE_TIP

# Between nose tip and mouth in the crop (x0, y0, x1, y1), with room for turned faces.
MOUTH_AREA = (100, 130, 156, 170)
# Rows of the crop below the eyes' centres that the mask's colour is never followed into: the lower
# lids.
EYE_CLEARANCE = 12
# The symmetric top edge (`BlendConfig.symmetric_top_max_yaw`) raises a column only where its mirror
# image's edge is at least this many pixels higher (smaller differences are the segmenter's noise),
# and takes only pixels at least this far (Lab) from the skin between the eyes.
SYMMETRIC_TOP_MIN_STEP = 5
SYMMETRIC_TOP_SKIN_DISTANCE = 30.0


@dataclass(frozen=True)
class BlendConfig:
    mask_threshold: float = 0.5
    # A face is edited only if its mask region covers at least this share of the crop.
    min_mask_fraction: float = 0.08
    # The region is grown by `grow_px` at full weight, so no half-transparent edge of the real mask
    # is blended back (erasing a little skin costs far less than a visible remnant), then the weight
    # falls to 0 over `feather_px` so no seam shows. The inpainter sees the feather's pixels and
    # continues them, so 2 px hides the seam as well as 4 did (looked at on the real photos, the
    # largest 563 px) and paints less of the skin the photo had: frozen bench +0.05 dB, LPIPS
    # -0.0008 with model 3.1 (docs/results.md, "Frozen benchmark").
    grow_px: float = 5.0
    feather_px: float = 2.0
    # Where the face's mesh is known, every row of the region from this far down between the eyes
    # (0) and the nose tip (1) is widened to the face's outline: a mask runs from cheek to cheek,
    # and the segmenter most often misses its sides (edges by the ears, rims, dark or printed
    # cloth), which were left as remnants. Above it the cheeks under the eyes stay (None: off).
    widen_from: float | None = 0.5
    # Where the region covers the nose tip, the nose up to between the eyes and the cheeks below the
    # eyes are erased too where their colour is the mask's (Lab distance at most this; None: off):
    # the segmenter often stops short of a respirator's nose piece or a mask's top edge under the
    # eyes, and the inpainter then continues the pale remnant down the nose or leaves it as a patch.
    mask_colour_distance: float | None = 25.0
    # On a face turned at most this far (the nose tip's offset from the eyes' midpoint, in eye
    # distances; None: off), the region's top edge is raised on one side to its mirror image's on
    # the other where that is higher and the pixels between are not the skin's colour: a mask's
    # top edge is symmetric on a frontal face, and the segmenter often stops lower under one eye than
    # the other at a dark or printed binding, which was left as a stroke. Turned further, the far
    # side of the face is narrower and its edge lower.
    symmetric_top_max_yaw: float | None = 0.1
    # The edit's pixels beyond the window the inpainter's training photos covered
    # (`qmask.align.TRAINING_PHOTO_WINDOW`: a mask's side out by the ear on a turned face or a
    # close-up) are painted blind, as flat orange or grey patches; they are filled instead from
    # around them (OpenCV's Telea, this radius in crop pixels; None: off): from the painted face
    # within the window and the photo beyond the edit.
    unseen_fill_px: float | None = 7.0
    # ... and moved to meet the pixels around it, by the step across its border, fading over this
    # many crop pixels (`qmask.blend.meet_border`; None: off).
    unseen_fade_px: float | None = 4.0
    # The fill also takes the painted face's last columns inside the window's left and right edges
    # (this many crop pixels): the inpainter darkens the face toward the erased edge it was shown
    # (by 8-10 grey levels over the last 8 columns on 1008 and 366) and the fill beside it starts
    # lighter, so a turned face whose edit crosses the edge kept a thin dark line down the cheek;
    # at 3 px it fades. Not at the bottom edge: taken there too, the frozen bench lost LPIPS 0.0003.
    unseen_inset_px: int = 3
    # Ear loops beside the edit (`qmask.loops.ear_loops`) are erased with the mask where a thin
    # line runs from the mask's side corner toward the ear, brighter or darker than both its sides
    # by at least this (median grey levels; None: off). The loops the real photos keep stand out by
    # 16-50; at 15, 4 of the frozen bench's 300 photos (which have none) show a line there.
    ear_loop_min_contrast: float | None = 15.0


@dataclass
class Edit:
    """What happens to one face crop."""

    region: np.ndarray  # (H, W) uint8: the predicted mask, solid (what the segmenter is scored on)
    fraction: float  # share of the crop in the region
    edited: bool
    # (H, W) float32 blend weight of the painted face, from the region widened to the face's
    # outline; all 0 when not edited
    weight: np.ndarray

    @property
    def hole(self) -> np.ndarray:
        """(H, W) float32: 1 where the inpainter paints, the region grown at full weight. The feather
        beyond it is skin the inpainter sees and continues (erasing it too cost 0.2 dB on the frozen
        benchmark), blended with the photo."""
        return (self.weight >= 1).astype(np.float32)


def fill_holes(hard: np.ndarray) -> np.ndarray:
    """Close gaps up to 9 px and fill enclosed holes: a real mask is one solid piece, and a hole in
    the prediction (a valve, a printed pattern) would leave a patch of mask in the result."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    closed = cv2.morphologyEx(hard, cv2.MORPH_CLOSE, kernel)
    count, labels = cv2.connectedComponents(1 - closed)
    touches_edge = np.zeros(count, bool)
    touches_edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    holes = (closed == 0) & ~touches_edge[labels]
    return (closed.astype(bool) | holes).astype(np.uint8)


def mask_region(mask_prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The predicted mask as a solid (H, W) uint8 region: thresholded, holes filled, and only the
    pieces that reach the mouth area (every mask covers it). Stray pieces elsewhere (a collar,
    hair, the photo's edge) are dropped rather than repainted with face."""
    hard = fill_holes((mask_prob >= threshold).astype(np.uint8))
    count, labels = cv2.connectedComponents(hard)
    x0, y0, x1, y1 = (np.array(MOUTH_AREA) * mask_prob.shape[0] / CROP_SIZE).round().astype(int)
    kept = np.zeros(count, bool)
    kept[labels[y0:y1, x0:x1]] = True
    kept[0] = False  # the background
    return kept[labels].astype(np.uint8)


def face_area(crop_mesh: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8: 1 inside the face's outline from the mesh (`crop_mesh`, in crop pixels)."""
    area = np.zeros(shape, np.uint8)
    cv2.fillPoly(area, [np.round(crop_mesh[list(FACE_OUTLINE)]).astype(np.int32)], 1)
    return area


def widen_to_face(
    region: np.ndarray, crop_mesh: np.ndarray, from_nose: float, inside: np.ndarray | None = None
) -> np.ndarray:
    """The region with each of its rows, from `from_nose` of the way between the eyes and the nose
    tip down, reaching at least from one side of the face's outline to the other (`crop_mesh`: the
    478 mesh points in crop pixels). Only within the photo (`inside` > 0.5, where given): the
    mirrored surroundings never show, and erased they would only take context from the inpainter."""
    outline = face_area(crop_mesh, region.shape)
    eye_row = mesh_eyes(crop_mesh)[:, 1].mean()
    top = max(0, round(float(eye_row + from_nose * (crop_mesh[NOSE_TIP, 1] - eye_row))))
    rows = np.arange(region.shape[0])
    chosen = (rows >= top) & region.any(axis=1) & outline.any(axis=1)
    both = region.astype(bool) | outline.astype(bool)
    left = np.argmax(both, axis=1)
    right = region.shape[1] - 1 - np.argmax(both[:, ::-1], axis=1)
    cols = np.arange(region.shape[1])
    span = (cols[None] >= left[:, None]) & (cols[None] <= right[:, None]) & chosen[:, None]
    if inside is not None:
        span &= inside > 0.5
    return (region.astype(bool) | span).astype(np.uint8)


def follow_mask_colour(
    edit_region: np.ndarray,
    region: np.ndarray,
    crop: np.ndarray,
    crop_mesh: np.ndarray,
    max_distance: float,
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """`edit_region` with the rest of the mask added where the segmenter stopped short of it: pixels
    of the nose up to between the eyes (`NOSE_AREA`) and of the face below the eyes whose colour
    is within `max_distance` (Lab) of the predicted mask `region`'s own pixels on the nose,
    connected to `edit_region`. Only where the region covers the nose tip (a mask worn under the nose
    keeps its nose: its colour says nothing of what lies above) and within the photo. Skin,
    glasses, brows and eyes differ in colour from the mask, so they stay."""
    x, y = np.round(crop_mesh[NOSE_TIP]).astype(int)
    if not (0 <= y < region.shape[0] and 0 <= x < region.shape[1]) or not region[y, x]:
        return edit_region
    eye_row = round(float(mesh_eyes(crop_mesh)[:, 1].mean()))
    nose = np.zeros_like(region)
    cv2.fillConvexPoly(nose, cv2.convexHull(np.round(crop_mesh[list(NOSE_AREA)]).astype(np.int32)), 1)
    face = face_area(crop_mesh, region.shape)
    face[: eye_row + EYE_CLEARANCE] = 0
    reach = nose | face
    photo = np.ones_like(region) if inside is None else (inside > 0.5).astype(np.uint8)
    reach &= photo
    on_nose = (nose & reach & region).astype(bool)
    if on_nose.sum() < 50:
        return edit_region
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    # Colour distances only where a pixel may join (a fifth of the crop or so): this runs per face.
    where = reach.astype(bool)
    colours = lab[where]
    to_mask = np.linalg.norm(colours - np.median(lab[on_nose], axis=0), axis=-1)
    near = to_mask <= max_distance
    skin = skin_between_eyes(lab, crop_mesh, edit_region.astype(bool) | ~photo.astype(bool))
    if skin is not None:
        # Skin as pale as the mask is no remnant: only pixels nearer the mask's colour than the
        # skin's between the eyes join.
        near &= to_mask < np.linalg.norm(colours - skin, axis=-1)
    candidates = np.zeros(region.shape, bool)
    candidates[where] = near
    return _join_connected(edit_region, candidates)


def skin_between_eyes(lab: np.ndarray, crop_mesh: np.ndarray, excluded: np.ndarray) -> np.ndarray | None:
    """The median Lab colour of the skin between and above the eyes (never masked) in the crop's
    `lab` image, leaving out `excluded` pixels; None where fewer than 50 are left."""
    eye_row = round(float(mesh_eyes(crop_mesh)[:, 1].mean()))
    nose_x = np.round(crop_mesh[list(NOSE_AREA), 0]).astype(int)
    band = np.zeros(lab.shape[:2], bool)
    band[max(0, eye_row - 25) : max(0, eye_row - 5), max(0, nose_x.min()) : max(0, nose_x.max() + 1)] = True
    band &= ~excluded
    return np.median(lab[band], axis=0) if band.sum() >= 50 else None


def _join_connected(edit_region: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """`edit_region` with the `candidates` (bool) that connect to it, holes filled."""
    grown = (edit_region.astype(bool) | candidates).astype(np.uint8)
    count, labels = cv2.connectedComponents(grown)
    joined = np.zeros(count, bool)
    joined[labels[edit_region.astype(bool)]] = True
    return fill_holes((joined[labels] & grown.astype(bool)).astype(np.uint8))


def symmetric_top(
    edit_region: np.ndarray,
    crop: np.ndarray,
    crop_mesh: np.ndarray,
    max_yaw: float,
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """`edit_region` with its top edge raised, column by column, to the edge of the column mirrored
    about the nose tip where that is at least `SYMMETRIC_TOP_MIN_STEP` higher, never above the
    lower lids, taking only pixels of the photo (`inside`) whose colour is far from the skin's
    between the eyes. Faces turned further than `max_yaw` keep `edit_region` as it is."""
    eyes = mesh_eyes(crop_mesh)
    eye_distance = abs(float(eyes[1, 0] - eyes[0, 0]))
    nose_x = float(crop_mesh[NOSE_TIP, 0])
    if eye_distance < 1 or abs(nose_x - eyes[:, 0].mean()) > max_yaw * eye_distance:
        return edit_region
    height, width = edit_region.shape
    present = edit_region.any(axis=0)
    top = np.where(present, np.argmax(edit_region, axis=0), height)
    mirror = np.round(2 * nose_x - np.arange(width)).astype(int)
    mirrored = np.full(width, height)
    within = (mirror >= 0) & (mirror < width)
    mirrored[within] = top[mirror[within]]
    lowest = round(float(eyes[:, 1].mean())) + EYE_CLEARANCE
    new_top = np.maximum(mirrored, lowest)
    raised = present & (mirrored <= top - SYMMETRIC_TOP_MIN_STEP) & (new_top < top)
    rows = np.arange(height)[:, None]
    added = raised[None] & (rows >= new_top[None]) & (rows < top[None])
    if inside is not None:
        added &= inside > 0.5
    if not added.any():
        return edit_region
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    photo = np.ones(edit_region.shape, bool) if inside is None else inside > 0.5
    skin = skin_between_eyes(lab, crop_mesh, edit_region.astype(bool) | ~photo)
    if skin is None:
        return edit_region
    far = np.zeros_like(added)
    far[added] = np.linalg.norm(lab[added] - skin, axis=-1) >= SYMMETRIC_TOP_SKIN_DISTANCE
    return _join_connected(edit_region, far)


def blend_weight(region: np.ndarray, grow: float, feather: float) -> np.ndarray:
    """Blend weight in the crop from the solid region: exactly 1 within `grow` pixels of it, then
    falling linearly to 0 over `feather` pixels; beyond grow + feather exactly 0."""
    if not region.any():
        return np.zeros(region.shape, np.float32)
    dist = cv2.distanceTransform(1 - region, cv2.DIST_L2, 5)
    return np.clip((grow + feather - dist) / max(feather, 1e-6), 0.0, 1.0).astype(np.float32)


def plan_edit(
    mask_prob: np.ndarray,
    config: BlendConfig,
    crop_mesh: np.ndarray | None = None,
    inside: np.ndarray | None = None,
    crop: np.ndarray | None = None,
) -> Edit:
    """The region, the edit decision and the blend weight for one face's mask probabilities;
    `crop_mesh` (478 points in crop pixels, or None where the mesh was not fitted) widens the
    region to the face's outline within the photo (`inside`, see `qmask.align.inside_photo`) and,
    with the `crop` itself, follows the mask's colour up the nose and under the eyes, makes the
    top edge symmetric where the other side says the mask goes higher and takes the ear loops
    beside the mask. The decision is the segmenter's alone: a bare face is never widened into an edit."""
    region = mask_region(mask_prob, config.mask_threshold)
    fraction = float(region.mean())
    edited = fraction >= config.min_mask_fraction
    edit_region = region
    if edited and crop_mesh is not None and config.widen_from is not None:
        edit_region = widen_to_face(region, crop_mesh, config.widen_from, inside)
    if edited and crop_mesh is not None and crop is not None and config.mask_colour_distance is not None:
        edit_region = follow_mask_colour(
            edit_region, region, crop, crop_mesh, config.mask_colour_distance, inside
        )
    if edited and crop_mesh is not None and crop is not None and config.symmetric_top_max_yaw is not None:
        edit_region = symmetric_top(edit_region, crop, crop_mesh, config.symmetric_top_max_yaw, inside)
    if not edited:
        return Edit(region=region, fraction=fraction, edited=False, weight=np.zeros(region.shape, np.float32))
    weight = blend_weight(edit_region, config.grow_px, config.feather_px)
    if crop_mesh is not None and crop is not None and config.ear_loop_min_contrast is not None:
        loops = ear_loops(crop, region, weight >= 1, crop_mesh, config.ear_loop_min_contrast, inside)
        if loops.any():  # the weight of the region and the loops together: the larger of the two
            weight = np.maximum(weight, blend_weight(loops, config.grow_px, config.feather_px))
    return Edit(region=region, fraction=fraction, edited=True, weight=weight)


def blend(crop: np.ndarray, face: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The crop with the painted face blended in by `weight` (what paste-back does in the photo)."""
    w = weight[..., None]
    return np.clip(np.rint(w * face + (1 - w) * crop), 0, 255).astype(np.uint8)


def fill_unseen(
    crop: np.ndarray,
    painted: np.ndarray,
    weight: np.ndarray,
    unseen: np.ndarray,
    radius: float,
    outside: np.ndarray | None = None,
    fade_px: float | None = None,
) -> np.ndarray:
    """`painted` (the inpainter's face for `crop`) with its `unseen` pixels (bool, (H, W)) replaced
    by OpenCV's Telea fill, `radius` pixels deep, of the crop as it will show (`painted` blended in
    by `weight`) from around them, never from the `outside` pixels (bool: the photo's mirrored
    surroundings, which mirror the mask too), and moved to meet the pixels it borders, the move
    fading over `fade_px` (None: as filled; `meet_border`). The fill runs at half the size: a
    smooth fill loses nothing there, and Telea's cost grows with the square of its radius (7 px at
    full size took up to 60 ms for a large region on this machine's CPU, 4 ms at half)."""
    if not unseen.any():
        return painted
    height, width = unseen.shape
    half = (width // 2, height // 2)

    def halved(pixels: np.ndarray) -> np.ndarray:
        # A half-size pixel is unknown if any of its four is: no blind or mirrored colour is
        # averaged into the pixels the fill starts from.
        return cv2.resize(pixels.astype(np.float32), half, interpolation=cv2.INTER_AREA) > 0

    visible = blend(crop, painted, weight)
    shown = cv2.resize(visible, half, interpolation=cv2.INTER_AREA)
    target = halved(unseen)
    unknown = target if outside is None else (target | halved(outside))
    # Telea fills every unknown pixel it is given, and the mirrored surroundings can be most of the
    # crop: it runs on the box within its reach of the pixels to fill (8 ms a face became 2).
    reach = int(np.ceil(radius / 2)) + 2
    ys, xs = np.nonzero(target)
    y0, y1 = max(0, ys.min() - reach), min(half[1], ys.max() + reach + 1)
    x0, x1 = max(0, xs.min() - reach), min(half[0], xs.max() + reach + 1)
    box = np.s_[y0:y1, x0:x1]
    shown[box] = cv2.inpaint(shown[box], unknown[box].astype(np.uint8), radius / 2, cv2.INPAINT_TELEA)
    filled = cv2.resize(shown, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if fade_px is not None:
        known = ~unseen if outside is None else ~(unseen | outside)
        filled = meet_border(filled, visible.astype(np.float32), unseen, known, fade_px)
    result = painted.copy()
    result[unseen] = np.clip(np.rint(filled[unseen]), 0, 255).astype(np.uint8)
    return result


def meet_border(
    fill: np.ndarray, around: np.ndarray, unseen: np.ndarray, known: np.ndarray, fade_px: float
) -> np.ndarray:
    """`fill` ((H, W, 3) float32) with its `unseen` pixels moved to meet `around` where they border
    the `known` ones: at each known pixel of the border the step from the fill just across it to
    the pixel itself, smoothed along the border (2 px), is added to the unseen pixels it is
    nearest, fading with their distance (`fade_px`). A fill made at half size starts a pixel or two
    in from the border and from pixels on both sides of it, so it does not quite meet either: the
    step showed as a thin line where a painted cheek met its fill."""
    rows, cols = np.nonzero(unseen)
    if len(rows) == 0:
        return fill
    # Within a box round the unseen pixels, wide enough that the smoothing along the border never
    # reaches its edge: the same result, at a tenth of the cost on the whole crop.
    box = np.s_[max(rows.min() - 8, 0) : rows.max() + 9, max(cols.min() - 8, 0) : cols.max() + 9]
    inner, fill_box = unseen[box], fill[box]
    border = known[box] & (cv2.dilate(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if not border.any():
        return fill
    # The fill just across: the mean of each pixel's unseen neighbours.
    is_unseen = inner.astype(np.float32)
    count = cv2.boxFilter(is_unseen, -1, (3, 3), normalize=False)
    across = cv2.boxFilter(fill_box * is_unseen[..., None], -1, (3, 3), normalize=False)
    across /= np.maximum(count, 1)[..., None]
    step = np.where(border[..., None], around[box] - across, 0).astype(np.float32)
    share = cv2.GaussianBlur(border.astype(np.float32), (0, 0), 2)
    step = cv2.GaussianBlur(step, (0, 0), 2) / np.maximum(share, 1e-6)[..., None]
    distance, nearest = cv2.distanceTransformWithLabels(
        (~border).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(border)
    step_of = np.zeros((nearest.max() + 1, 3), np.float32)
    step_of[nearest[ys, xs]] = step[ys, xs]
    moved = fill.copy()
    shift = step_of[nearest] * np.exp(-distance / fade_px)[..., None]
    moved[box] = np.where(inner[..., None], fill_box + shift, fill_box)
    return moved


def match_monochrome(
    crops: np.ndarray, faces: np.ndarray, photo: np.ndarray | None = None, tolerance: float = 3.0
) -> np.ndarray:
    """Painted faces ((N,) H, W, 3 uint8) recoloured like their photo when it is black and white
    or toned (sepia, cyanotype); colour photos keep the painted colours.

    The inpainter is trained mostly on colour photos and paints skin tones into such photos. Each
    channel of a monochrome photo is a linear function of its luminance: fitted on the crop's
    pixels that show the photo (`photo`, (N,) H, W bool: inside the photo and outside the
    predicted mask, which may be coloured; default all), it counts as monochrome when the fit is
    off by less than `tolerance` levels (RMS), and the face's luminance is mapped through it.
    """
    single = faces.ndim == 3
    if single:
        crops, faces = crops[None], faces[None]
        photo = None if photo is None else photo[None]
    out = faces.copy()
    luma = np.array([0.299, 0.587, 0.114])
    for i, (crop, face) in enumerate(zip(crops, faces, strict=True)):
        pixels = crop.reshape(-1, 3).astype(np.float64)
        if photo is not None:
            pixels = pixels[photo[i].reshape(-1)]
        if len(pixels) < 64:
            continue
        design = np.stack([pixels @ luma, np.ones(len(pixels))], axis=1)
        coef, *_ = np.linalg.lstsq(design, pixels, rcond=None)
        if np.sqrt(((design @ coef - pixels) ** 2).mean()) < tolerance:
            face_luma = face.reshape(-1, 3).astype(np.float64) @ luma
            recoloured = np.stack([face_luma, np.ones_like(face_luma)], axis=1) @ coef
            out[i] = np.clip(np.rint(recoloured), 0, 255).reshape(face.shape).astype(np.uint8)
    return out[0] if single else out
