"""Synthetic face masks drawn on unmasked faces: the inputs of the segmenter's training pairs (the
inpainter's pairs need no mask: bare faces with mask-shaped holes, `training.holes`).

The segmenter never sees a real mask in training, so how closely these look like photographed masks
decides how well it finds real ones (the first one-network model, trained on flat, naive masks, left
ghosts of black cloth masks, valved N95s and masks that reach the ears or sit high on the nose).
Two sources:

* drawn masks: surgical, N95, KN95, cloth (plain, printed, photo textures), scarves, respirators,
  clear masks and a flat "bench" style,
  shaped on the face mesh from the nose to under the chin across the visible face contour, shaded
  with a lighting direction and exposure read from the photo, with folds, seams, loops and valves;
* template masks: the RGBA pictures of `mask-templates/`, warped onto the face by a homography
  between six fitting points on the template and on the face (see `fitting_points`).

`MaskRenderer.render` returns the composite and the exact coverage: image = alpha * mask_rgb +
(1 - alpha) * input, so pixels with alpha == 0 keep their input bytes (a clear mask's film hides
less of the face than alpha, its coverage, says: it is composited by its own opacity).

Modules, one job each:

* `renderer`: MaskRenderer (picks a style, draws or warps it, puts it on the face) and RenderedMask;
* `styles` and `styles.yaml`: the drawn styles' mix and random fit and material, as data;
* `face`: mesh indices, the upright face frame (Face) and the template fitting points;
* `geometry`: a drawn mask's shape on the face, its surface attributes and rasterizing;
* `light`: the photo's light, mask materials and shading;
* `fabrics`: colours, printed patterns, graphics and photo textures of the fabric;
* `accessories`: ear loops, head straps, valves and respirator cartridges;
* `occluders`: hands and collars drawn over the photo, never mask (the segmenter's hard negatives);
* `templates`: the template pictures' split, config and fitting;
* `compositing`: layers, and putting the mask on the photo like the photo's camera would;
* `filters`: small sampling and smoothing helpers the others share.

Preview a grid of masked faces:

    python -m training.masks --faces ../shared/data/train/utkface --landmarks cache/utkface.npz \
        --split train --out out/mask_preview_train.png
"""

from training.masks.face import fitting_points
from training.masks.renderer import MaskRenderer, RenderedMask
from training.masks.styles import DRAWN_KINDS, DRAWN_WEIGHTS
from training.masks.templates import (
    HELDOUT_TEMPLATES,
    HELDOUT_TEXTURES,
    HELDOUT_WEIGHTS,
    TEMPLATE_SHARE,
    TRAIN_TEMPLATES,
    TRAIN_TEXTURES,
)

__all__ = [
    "DRAWN_KINDS",
    "DRAWN_WEIGHTS",
    "HELDOUT_TEMPLATES",
    "HELDOUT_TEXTURES",
    "HELDOUT_WEIGHTS",
    "TEMPLATE_SHARE",
    "TRAIN_TEMPLATES",
    "TRAIN_TEXTURES",
    "MaskRenderer",
    "RenderedMask",
    "fitting_points",
]
