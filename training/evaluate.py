"""Held-out evaluation on aligned crops with a fixed seed.

    python -m training.evaluate --faces ../shared/data/eval/lfw --masks synthetic --limit 300 \
        --out out/eval_synthetic.json

Masks are drawn by our renderer (`synthetic`) or warped from the held-out mask templates never
used in training (`templates`). Methods: ours (the pipeline's own stages on the aligned crop:
segment, plan the edit with the product's thresholds, inpaint, blend), OpenCV Telea and
Navier-Stokes inpainting given the true mask, and copying the input. Metrics: PSNR and SSIM over
the crop, PSNR and L1 (0-255) inside the mask, LPIPS (AlexNet) over the crop, IoU of the predicted
mask region and the share of the mask's thin parts (ear loops, straps; `training.stages.thin_parts`)
it takes in, all counted inside the photo only (the crop mirrors it beyond its edges). With
`--groups` (UTKFace-named files) it also reports ours per race and age group on the slice of the
training folder that training never sees.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from qmask.align import align_face, mesh_eyes, transform_points, warp_to_crop
from qmask.pipeline import DEFAULT_WEIGHTS, PipelineConfig, UnmaskPipeline
from training.landmarks import list_images, load_landmarks
from training.masks import MaskRenderer
from training.pack import is_heldout
from training.perceptual import LPIPS
from training.stages import LossConfig, thin_parts

DEFAULT_TEMPLATES = Path("../shared/data/mask-templates")
RACES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "others"}
AGE_GROUPS = ((0, 17, "0-17"), (18, 39, "18-39"), (40, 64, "40-64"), (65, 200, "65+"))
METRICS = ("psnr", "ssim", "psnr_mask", "l1_mask", "lpips", "mask_iou", "thin_recall")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Gaussian-window SSIM on 0-255 images, as the frozen benchmark's scorer computes it."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    m = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(m[5:-5, 5:-5].mean())


def psnr(mse: float) -> float:
    return 10 * math.log10(255**2 / max(mse, 1e-10))


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    pred_mask: np.ndarray | None,
    lpips: LPIPS,
    thin: np.ndarray | None = None,
) -> dict:
    """`thin`: the mask's thin parts, whose share within `pred_mask` is `thin_recall` (None where
    there are none or no predicted mask)."""
    err = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2
    inside = mask[..., None].astype(np.float64)
    n = max(3 * inside.sum(), 1.0)
    iou = thin_recall = None
    if pred_mask is not None:
        union = np.logical_or(pred_mask, mask).sum()
        iou = float(np.logical_and(pred_mask, mask).sum() / union) if union else 1.0
        if thin is not None and thin.any():
            thin_recall = float(pred_mask[thin].mean())
    return {
        "psnr": psnr(err.mean()),
        "ssim": ssim(pred, truth),
        "psnr_mask": psnr((err * inside).sum() / n),
        "l1_mask": float((np.sqrt(err) * inside).sum() / n),
        "lpips": lpips.images(pred, truth),
        "mask_iou": iou,
        "thin_recall": thin_recall,
    }


class Methods:
    """Every method maps (masked crop, true mask, in-photo pixels) to (output crop, predicted mask
    region or None)."""

    def __init__(self, pipeline: UnmaskPipeline) -> None:
        self.pipeline = pipeline

    def edits_bare_face(self, crop: np.ndarray) -> bool:
        """Whether ours would repaint this crop of a face that wears no mask (it should not)."""
        return self.pipeline.plan(self.pipeline.segment(crop[None])[0]).edited

    def __call__(
        self, masked: np.ndarray, mask: np.ndarray, inside: np.ndarray, crop_mesh: np.ndarray | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """`crop_mesh`: the face mesh in crop pixels, with which ours widens its region as the
        pipeline does (None: not widened)."""
        ours = self.pipeline.unmask_crops(
            masked[None], inside[None].astype(np.float32), crop_meshes=[crop_mesh]
        )[0]
        hole = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
        return {
            "ours": (ours.output, ours.edit.region.astype(bool)),
            "telea": (cv2.inpaint(masked, hole, 5, cv2.INPAINT_TELEA), None),
            "navier_stokes": (cv2.inpaint(masked, hole, 5, cv2.INPAINT_NS), None),
            "copy_input": (masked, None),
        }


def age_group(age: int) -> str:
    return next(name for lo, hi, name in AGE_GROUPS if lo <= age <= hi)


def evaluate(
    faces_dir: Path,
    masks: str,
    limit: int,
    methods: Methods,
    landmarks: Path | None,
    templates: Path,
    seed: int = 0,
    groups: bool = False,
) -> dict:
    files = list_images(faces_dir)
    if groups:
        files = [f for f in files if is_heldout(f.name) and len(f.name.split("_")) >= 4]
    files = files[:limit]
    meshes = load_landmarks(landmarks) if landmarks else {}
    renderer = MaskRenderer(templates, split="heldout") if masks == "templates" else MaskRenderer(None)
    per_method: dict[str, list[dict]] = defaultdict(list)
    per_group: dict[str, list[dict]] = defaultdict(list)
    per_style: dict[str, list[dict]] = defaultdict(list)
    bare_edited: list[bool] = []
    lpips = LPIPS()
    detector = methods.pipeline.detector
    for index, path in enumerate(tqdm(files, desc=f"evaluate {masks}", unit="face")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        mesh = meshes.get(path.name)
        if mesh is None:
            found = [f for f in detector.detect(rgb) if f.mesh is not None]
            if not found:
                continue
            mesh = found[0].mesh
        drawn = renderer.render(rgb, mesh, np.random.default_rng([seed, index]))
        aligned = align_face(rgb, mesh_eyes(mesh))
        truth, matrix = aligned.crop, aligned.matrix
        masked, mask = warp_to_crop(drawn.image, matrix), warp_to_crop(drawn.alpha, matrix) > 0.5
        # Only the photo is scored: around it the crop is a mirror image of it, nobody's face.
        inside = aligned.inside > 0.5
        as_plane = torch.from_numpy(mask[None, None].astype(np.float32))
        thin = thin_parts(as_plane, LossConfig().thin_px)[0, 0].numpy() > 0
        bare_edited.append(methods.edits_bare_face(truth))
        # The mesh of the photo without its mask (as cached): the pipeline fits it on the masked
        # photo, where it is a little less sure of the jaw.
        crop_mesh = transform_points(mesh, matrix)
        for name, (pred, pred_mask) in methods(masked, mask, inside, crop_mesh).items():
            pred = np.where(inside[..., None], pred, truth)
            pred_mask = None if pred_mask is None else pred_mask & inside
            row = score(pred, truth, mask & inside, pred_mask, lpips, thin & inside)
            per_method[name].append(row)
            if name == "ours":
                per_style[mask_style(drawn.kind)].append(row)
            if groups and name == "ours":
                age, _, race = path.name.split("_")[:3]
                per_group[f"race:{RACES.get(int(race), race)}"].append(row)
                per_group[f"age:{age_group(int(age))}"].append(row)
    result = {masks: {name: mean_metrics(rows) for name, rows in per_method.items()}}
    # Segmentation by the kind of mask drawn: where a style is missed, it shows here first.
    result["styles"] = {
        style: {
            "n": len(rows),
            "mask_iou": mean_metrics(rows)["mask_iou"],
            "thin_recall": mean_metrics(rows)["thin_recall"],
            "psnr_mask": mean_metrics(rows)["psnr_mask"],
        }
        for style, rows in sorted(per_style.items())
    }
    if groups:
        result["groups"] = {
            name: mean_metrics(rows) | {"n": len(rows)} for name, rows in sorted(per_group.items())
        }
    result["n"] = len(per_method["ours"])
    # The same faces without a mask: the share that ours would still repaint.
    result["bare_faces_edited"] = round(float(np.mean(bare_edited)), 4) if bare_edited else None
    return result


def mask_style(kind: str) -> str:
    """The style of a drawn mask's kind string: "cloth_photo:floral/x.jpg" -> "cloth_photo",
    "template:KN95_left" -> "template:KN95", "template:cloth+fruits/y.png" -> "template:cloth+print"."""
    style, _, detail = kind.partition(":")
    if style != "template":
        return style
    family = detail.split("+")[0].removesuffix("_left").removesuffix("_right")
    return f"template:{family}" + ("+print" if "+" in detail else "")


def mean_metrics(rows: list[dict]) -> dict:
    out = {}
    for key in METRICS:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(float(np.mean(values)), 4) if values else None
    return out


def markdown_table(result: dict, masks: str) -> str:
    lines = [
        f"| method ({masks} masks) | PSNR | SSIM | PSNR in mask | L1 in mask | LPIPS | mask IoU "
        "| thin parts taken |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result[masks].items():
        cells = [
            f"{m[k]:.4f}"
            if k in ("ssim", "lpips", "mask_iou", "thin_recall") and m[k] is not None
            else ("—" if m[k] is None else f"{m[k]:.2f}")
            for k in METRICS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("bare_faces_edited") is not None:
        lines += [
            "",
            f"The same faces without a mask: ours repaints {result['bare_faces_edited']:.1%} of them.",
        ]
    if result.get("styles"):
        lines += [
            "",
            "| mask style (ours) | n | mask IoU | thin parts taken | PSNR in mask |",
            "|---|---|---|---|---|",
        ]
        for style, m in result["styles"].items():
            thin = "—" if m["thin_recall"] is None else f"{m['thin_recall']:.4f}"
            lines.append(f"| {style} | {m['n']} | {m['mask_iou']:.4f} | {thin} | {m['psnr_mask']:.2f} |")
    if "groups" in result:
        lines += [
            "",
            "| group (ours) | n | PSNR | SSIM | PSNR in mask | L1 in mask | LPIPS |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in result["groups"].items():
            lines.append(
                f"| {name} | {m['n']} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_mask']:.2f} | "
                f"{m['l1_mask']:.2f} | {m['lpips']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=Path, required=True, help="folder of unmasked faces (eval/lfw)")
    parser.add_argument("--masks", choices=("synthetic", "templates"), required=True)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument(
        "--out", type=Path, required=True, help="JSON result; a .md table is written beside it"
    )
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="our model file")
    parser.add_argument("--landmarks", type=Path, default=None, help="cached meshes (training.landmarks)")
    parser.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES)
    parser.add_argument(
        "--groups", action="store_true", help="per race/age table on the held-out UTKFace slice"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with UnmaskPipeline(PipelineConfig(weights=str(args.weights))) as pipeline:
        result = evaluate(
            args.faces,
            args.masks,
            args.limit,
            Methods(pipeline),
            args.landmarks,
            args.templates,
            args.seed,
            args.groups,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    table = markdown_table(result, args.masks)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
