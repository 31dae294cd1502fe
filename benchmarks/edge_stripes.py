"""How much the inpainter stripes the painted face at two fixed places of the crop.

    python -m benchmarks.edge_stripes [--weights W] [--limit 60] [--map out/edge_stripes.png]

Models up to 3.2 paint short horizontal stripes (a small barcode-like patch) just inside the left
and right edges of the training photos' window at mouth height (crop x 195-213 and 44-62, y
140-160), whatever the photo: the same place in every crop, so it is the network's, not the
photo's. On a real photo whose mask reaches that far (a close-up, a wide mask) it shows as the
streaks beside the cheek. This runs the pipeline on the frozen benchmark's masked photos, averages
the painted faces' vertical detail (each pixel minus a vertical blur) over the holes, and prints
it at the two places against the cheeks just inside them. The true faces (the bench's targets,
cut out the same way and averaged over the same holes) are not flat there either: their ratio,
printed beside as `truth_ratio` (1.44 on the first 60), is what a painter without stripes would
get. `--map` writes the whole averaged map (4x, the window outlined).
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.data import BENCH
from qmask.align import CROP_SIZE, TRAINING_PHOTO_WINDOW, eyes_to_crop, warp_to_crop
from qmask.imageio import decode
from qmask.pipeline import DEFAULT_WEIGHTS, NoFaceError, PipelineConfig, UnmaskPipeline

# (y0, y1, x0, x1) in the crop: the two places, 18 px wide inside the window's left and right
# edges at mouth height, and the cheeks 8-9 px further in (the boxes measured for 3.1 and 3.2).
_LEFT, _RIGHT = TRAINING_PHOTO_WINDOW[0], TRAINING_PHOTO_WINDOW[2]
MOUTH_ROWS = (140, 160)
STRIPE_SPOTS = ((*MOUTH_ROWS, _RIGHT - 18, _RIGHT), (*MOUTH_ROWS, _LEFT, _LEFT + 18))
CHEEKS = ((*MOUTH_ROWS, _RIGHT - 47, _RIGHT - 27), (*MOUTH_ROWS, _LEFT + 26, _LEFT + 46))


def vertical_detail(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32: the grey image's distance from its own vertical blur (horizontal stripes)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.abs(grey - cv2.GaussianBlur(grey, (1, 5), 0, sigmaY=1.5))


def mean_over(detail: np.ndarray, boxes: tuple[tuple[int, int, int, int], ...]) -> float:
    return float(np.mean([detail[y0:y1, x0:x1].mean() for y0, y1, x0, x1 in boxes]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--limit", type=int, default=60, help="bench photos (first N)")
    parser.add_argument("--map", help="write the averaged map here (PNG)")
    args = parser.parse_args()
    total = np.zeros((CROP_SIZE, CROP_SIZE))
    truth_total = np.zeros((CROP_SIZE, CROP_SIZE))
    count = np.zeros((CROP_SIZE, CROP_SIZE))
    files = sorted(BENCH.glob("*_masked.png"))[: args.limit]
    with UnmaskPipeline(PipelineConfig(weights=args.weights)) as pipeline:
        for path in tqdm(files, desc="edge stripes", unit="photo"):
            rgb = decode(path.read_bytes()).rgb
            try:
                result = pipeline.unmask_array(rgb, debug=True)
            except NoFaceError:
                continue
            truth = decode(path.with_name(path.name.replace("_masked", "_target")).read_bytes()).rgb
            # The debug crops come in the detector's order of faces.
            for face, crop in zip(pipeline.detect(rgb), result.debug, strict=True):
                if crop.painted is None:
                    continue
                hole = crop.edit.hole > 0.5
                total += vertical_detail(crop.painted) * hole
                truth_total += vertical_detail(warp_to_crop(truth, eyes_to_crop(face.eyes))) * hole
                count += hole
    detail = total / np.maximum(count, 1)
    truth_detail = truth_total / np.maximum(count, 1)
    spots, cheeks = mean_over(detail, STRIPE_SPOTS), mean_over(detail, CHEEKS)
    truth_ratio = mean_over(truth_detail, STRIPE_SPOTS) / mean_over(truth_detail, CHEEKS)
    print(
        json.dumps(
            {
                "photos": len(files),
                "spots": round(spots, 2),
                "cheeks": round(cheeks, 2),
                "ratio": round(spots / cheeks, 2),
                "truth_ratio": round(truth_ratio, 2),
            }
        )
    )
    if args.map:
        picture = np.clip(detail * 20, 0, 255).astype(np.uint8)
        x0, y0, x1, y1 = TRAINING_PHOTO_WINDOW
        cv2.rectangle(picture, (x0, y0), (x1, y1), 128, 1)
        size = 4 * CROP_SIZE
        cv2.imwrite(args.map, cv2.resize(picture, (size, size), interpolation=cv2.INTER_NEAREST))


if __name__ == "__main__":
    main()
