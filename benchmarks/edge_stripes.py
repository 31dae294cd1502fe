"""How much the inpainter stripes the painted face at two fixed places of the crop.

    python -m benchmarks.edge_stripes [--weights W] [--limit 60] [--cut-limit 150]
        [--map out/edge_stripes.png]

The inpainters paint short horizontal stripes (a small barcode-like patch) just inside the left
and right edges of the training photos' window at mouth height (crop x 195-213 and 44-62, y
140-160), whatever the photo: the same place in every crop, so it is the network's, not the
photo's (3.7 times the cheeks up to 3.2; 2.2 with 3.4, trained with the critic on known pixels).
On a real photo whose mask reaches that far (a close-up, a wide mask) it shows as the
streaks beside the cheek. This runs the pipeline on the frozen benchmark's masked photos, averages
the painted faces' vertical detail (each pixel minus a vertical blur) over the holes, and prints
it at the two places against the cheeks just inside them. The true faces (the bench's targets,
cut out the same way and averaged over the same holes) are not flat there either: their ratio,
printed beside as `truth_ratio` (1.44 on the first 60), is what a painter without stripes would
get. `--map` writes the whole averaged map (4x, the window outlined).

On those photos the face goes on past the window. The streaks on real photos are worst where the
photo itself ends there (986, 619, 287: a close-up whose mask runs into the photo's edge). So it
also cuts each of the first `--cut-limit` bench photos at the window's left edge, and again at its
right, at mouth height (as those close-ups are cut), runs the pipeline on what is left, and
compares the output with the truth cut the same way in two bands of the mask at mouth height: the
one along the cut (as wide as the 18 crop pixels above) and one beside it further in. `cut` in
the output: `edge_detail` is the output's vertical detail along the cut over the truth's (1: no
stripes), `inner_detail` the same further in, `edge_error` and `inner_error` the mean absolute
error (0-255) in the two bands, over `cuts` cuts whose bands are mostly mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.data import BENCH
from qmask.align import (
    CROP_SIZE,
    TRAINING_PHOTO_WINDOW,
    eyes_to_crop,
    invert,
    transform_points,
    warp_to_crop,
)
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


def cut_at_window(
    pipeline: UnmaskPipeline, masked: np.ndarray, truth: np.ndarray, alpha: np.ndarray
) -> list[dict[str, float]]:
    """The photo cut at the window's left and then its right edge (each where the cut leaves at
    least 8 px beyond it), unmasked, and its vertical detail and error against the truth in the
    band of the mask along the cut and one further in; a cut whose bands are less than 60% mask
    or whose face is no longer found gives nothing."""
    faces = pipeline.detect(masked)
    if isinstance(faces, Exception) or len(faces) != 1:
        return []
    to_crop = eyes_to_crop(faces[0].eyes)
    band = round(18 / np.hypot(*to_crop[0, :2]))  # the crop's 18 px in photo pixels
    rows: list[dict[str, float]] = []
    for crop_x in (_LEFT, _RIGHT):
        (x, y0), (_, y1) = transform_points(
            np.array([[crop_x, MOUTH_ROWS[0]], [crop_x, MOUTH_ROWS[1]]]), invert(to_crop)
        )
        x, y0, y1 = round(x), round(min(y0, y1)), round(max(y0, y1))
        if not 8 <= x <= masked.shape[1] - 8:
            continue
        if crop_x == _LEFT:
            kept = np.s_[:, x:]
            edge, inner = np.s_[y0:y1, :band], np.s_[y0:y1, band + 8 : 2 * band + 8]
        else:
            kept = np.s_[:, :x]
            edge, inner = np.s_[y0:y1, -band:], np.s_[y0:y1, -(2 * band + 8) : -(band + 8)]
        cut_alpha = alpha[kept]
        if cut_alpha[edge].mean() < 0.6 or cut_alpha[inner].mean() < 0.6:
            continue
        try:
            output = pipeline.unmask_array(np.ascontiguousarray(masked[kept])).image
        except NoFaceError:
            continue
        cut_truth = np.ascontiguousarray(truth[kept])
        error = np.abs(output.astype(np.float32) - cut_truth).mean(axis=-1)
        detail, true_detail = vertical_detail(output), vertical_detail(cut_truth)
        rows.append(
            {
                "edge": detail[edge].mean(),
                "edge_truth": true_detail[edge].mean(),
                "inner": detail[inner].mean(),
                "inner_truth": true_detail[inner].mean(),
                "edge_error": error[edge].mean(),
                "inner_error": error[inner].mean(),
            }
        )
    return rows


def mean_over(detail: np.ndarray, boxes: tuple[tuple[int, int, int, int], ...]) -> float:
    return float(np.mean([detail[y0:y1, x0:x1].mean() for y0, y1, x0, x1 in boxes]))


def _ratio(a: float, b: float) -> float | None:
    """a / b to two places, None where nothing was measured (`--limit 0` or `--cut-limit 0`)."""
    return round(a / b, 2) if b > 0 else None


def bench_item(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frozen-benchmark item from its masked photo's path: masked, truth (RGB) and mask (bool)."""
    truth = path.with_name(path.name.replace("_masked", "_target"))
    alpha = cv2.imread(str(path.with_name(path.name.replace("_masked", "_alpha"))), cv2.IMREAD_GRAYSCALE)
    return decode(path.read_bytes()).rgb, decode(truth.read_bytes()).rgb, alpha > 127


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--limit", type=int, default=60, help="bench photos (first N)")
    parser.add_argument("--cut-limit", type=int, default=150, help="bench photos cut at the window's edges")
    parser.add_argument("--map", help="write the averaged map here (PNG)")
    args = parser.parse_args()
    total = np.zeros((CROP_SIZE, CROP_SIZE))
    truth_total = np.zeros((CROP_SIZE, CROP_SIZE))
    count = np.zeros((CROP_SIZE, CROP_SIZE))
    files = sorted(BENCH.glob("*_masked.png"))
    cuts: list[dict[str, float]] = []
    with UnmaskPipeline(PipelineConfig(weights=args.weights)) as pipeline:
        for path in tqdm(files[: args.limit], desc="edge stripes", unit="photo"):
            masked, truth, _ = bench_item(path)
            try:
                result = pipeline.unmask_array(masked, debug=True)
            except NoFaceError:
                continue
            # The debug crops come in the detector's order of faces.
            for face, crop in zip(pipeline.detect(masked), result.debug, strict=True):
                if crop.painted is None:
                    continue
                hole = crop.edit.hole > 0.5
                total += vertical_detail(crop.painted) * hole
                truth_total += vertical_detail(warp_to_crop(truth, eyes_to_crop(face.eyes))) * hole
                count += hole
        for path in tqdm(files[: args.cut_limit], desc="cut photos", unit="photo"):
            cuts += cut_at_window(pipeline, *bench_item(path))
    detail = total / np.maximum(count, 1)
    truth_detail = truth_total / np.maximum(count, 1)
    spots, cheeks = mean_over(detail, STRIPE_SPOTS), mean_over(detail, CHEEKS)
    truth_spots, truth_cheeks = mean_over(truth_detail, STRIPE_SPOTS), mean_over(truth_detail, CHEEKS)
    mean = {
        key: float(np.mean([c[key] for c in cuts])) if cuts else 0.0
        for key in ("edge", "edge_truth", "inner", "inner_truth", "edge_error", "inner_error")
    }
    print(
        json.dumps(
            {
                "photos": min(len(files), args.limit),
                "spots": round(spots, 2),
                "cheeks": round(cheeks, 2),
                "ratio": _ratio(spots, cheeks),
                "truth_ratio": _ratio(truth_spots, truth_cheeks),
                "cut": {
                    "cuts": len(cuts),
                    "edge_detail": _ratio(mean["edge"], mean["edge_truth"]),
                    "inner_detail": _ratio(mean["inner"], mean["inner_truth"]),
                    "edge_error": round(mean["edge_error"], 2) if cuts else None,
                    "inner_error": round(mean["inner_error"], 2) if cuts else None,
                },
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
