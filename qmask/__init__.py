"""QMask: replace face masks in photos with a plausible lower face.

The core library: `imageio` (decode and encode with limits), `faces` (detect), `align` (warp to
and from the canonical crop), `model` (the segmenter and the inpainter), `blend` (the edit: mask
region, hole, blend weight, tone), `pipeline` (the whole photo-in, photo-out job), `video` (clips).
The CLI, the TorchServe handler and training are thin adapters around them.
"""

__version__ = "0.1.0"
