"""Small image helpers that shading, fabrics and accessories share."""

from __future__ import annotations

import cv2
import numpy as np


def sample_tiled(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a tiling noise field at texel coordinates."""
    return cv2.remap(
        field, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
    )


def smoothstep(edge: float | np.ndarray, width: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 below `edge` to 1 above it, over `width` (a linear ramp: anti-aliased pattern edges)."""
    return np.clip((x - edge) / width + 0.5, 0.0, 1.0)


def soft(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Alpha smoothed about as much as a Gaussian of `sigma` would (a box filter, much cheaper)."""
    k = max(3, int(3.46 * sigma) | 1)
    return cv2.blur(alpha, (k, k))
