"""QMask: replace face masks in photos with a plausible lower face.

The core library: `faces` (detect), `align` (warp to and from the canonical crop), `model`
(the mask-aware generator), `pipeline` (the whole photo-in, photo-out job), `imageio` (decode and
encode with limits). The CLI, TorchServe handler and training are thin adapters around them.
"""

__version__ = "0.1.0"
