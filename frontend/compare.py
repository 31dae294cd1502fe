"""Close-ups of unmasked faces: where each face is, and a before/after comparison on the same spot.

The comparison is a small self-contained piece of HTML (no script or style from anywhere else,
nothing written to disk): the "after" picture with the "before" picture over it, cut off where a
slider says, plus a button to hold for the whole "before". Both are lossless PNG at the photo's
own resolution, shown at most at their own size (never upscaled), smaller only when the window is.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

# Around a face's box, so the close-up shows the whole lower face and a little of the photo around.
MARGIN = {"left": 0.25, "right": 0.25, "top": 0.15, "bottom": 0.35}
# Height of the slider and button row under the pictures, in CSS pixels.
CONTROLS_PX = 56


def closeup_box(box: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The face's box grown by MARGIN and kept inside a photo of `size` (width, height)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    left = max(0, int(np.floor(x0 - MARGIN["left"] * w)))
    top = max(0, int(np.floor(y0 - MARGIN["top"] * h)))
    right = min(size[0], int(np.ceil(x1 + MARGIN["right"] * w)))
    bottom = min(size[1], int(np.ceil(y1 + MARGIN["bottom"] * h)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def changed_box(
    before: Image.Image, after: Image.Image, threshold: int = 24
) -> tuple[int, int, int, int] | None:
    """The box around the pixels that differ (a clip frame's replaced face), or None."""
    a = np.asarray(before.convert("RGB"), dtype=np.int16)
    b = np.asarray(after.convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return None
    ys, xs = np.nonzero(np.abs(a - b).max(axis=2) > threshold)
    if len(xs) < 16:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def comparison_html(before: Image.Image, after: Image.Image, label: str) -> str:
    """The comparison slider for two pictures of the same size."""
    if before.size != after.size:
        raise ValueError(f"before {before.size} and after {after.size} differ in size")
    width, height = after.size
    name = html.escape(label)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><style>
  body {{ margin: 0; font: 14px system-ui, sans-serif; color: #31333f; }}
  .frame {{ position: relative; width: 100%; max-width: {width}px; line-height: 0; }}
  .frame img {{ width: 100%; height: auto; display: block; }}
  .before {{ position: absolute; inset: 0; clip-path: inset(0 50% 0 0); }}
  .edge {{ position: absolute; top: 0; bottom: 0; left: 50%; width: 2px; background: #fff;
          box-shadow: 0 0 2px #000; pointer-events: none; }}
  .tag {{ position: absolute; top: 6px; padding: 2px 6px; border-radius: 4px; line-height: 1.3;
         background: rgba(0, 0, 0, .55); color: #fff; font-size: 12px; }}
  .controls {{ display: flex; gap: 8px; align-items: center; max-width: {max(width, 240)}px;
              height: {CONTROLS_PX - 8}px; }}
  input[type=range] {{ flex: 1; }}
  button {{ font: inherit; padding: 4px 10px; border: 1px solid #bbb; border-radius: 6px;
           background: #f6f6f8; touch-action: none; }}
</style></head><body>
<div class="frame" role="img" aria-label="{name}: before and after">
  <img class="after" alt="after" src="{_png_data_url(after.convert("RGB"))}"
       width="{width}" height="{height}">
  <img class="before" alt="before" src="{_png_data_url(before.convert("RGB"))}"
       width="{width}" height="{height}">
  <div class="edge"></div>
  <span class="tag" style="left: 6px">Before</span><span class="tag" style="right: 6px">After</span>
</div>
<div class="controls">
  <input type="range" min="0" max="100" value="50" aria-label="Before / after">
  <button type="button">Hold: before</button>
</div>
<script>
(() => {{
  const slider = document.querySelector("input"), cover = document.querySelector(".before"),
        edge = document.querySelector(".edge"), hold = document.querySelector("button");
  function show(percent) {{
    cover.style.clipPath = `inset(0 ${{100 - percent}}% 0 0)`;
    edge.style.left = `${{percent}}%`;
  }}
  slider.addEventListener("input", () => show(slider.value));
  hold.addEventListener("pointerdown", () => show(100));
  for (const end of ["pointerup", "pointerleave", "pointercancel"]) {{
    hold.addEventListener(end, () => show(slider.value));
  }}
}})();
</script>
</body></html>"""


def comparison_height(after: Image.Image) -> int:
    """The component's height at the picture's own size."""
    return after.height + CONTROLS_PX
