"""Per-stage timing of the pipeline on a 1 MP and a 12 MP photo.

    python -m benchmarks.photo [--photo PATH] [--repeats 5] [--device cpu] [--precision auto]

The photo (default: a real masked photo from ../shared/data) is scaled to each size and encoded
as JPEG, so decoding and encoding are timed on realistic files. Prints the median of each stage.
"""

from __future__ import annotations

import argparse
import io
import statistics
from pathlib import Path

import torch
from PIL import Image

from benchmarks.data import REAL_MASKED
from qmask.pipeline import PRECISIONS, PipelineConfig, UnmaskPipeline

DEFAULT_PHOTO = REAL_MASKED / "1237.png"
SIZES = {"1 MP": (1155, 866), "12 MP": (4000, 3000)}
STAGES = ("decode", "detect", "align", "segment", "plan", "inpaint", "paste_back", "encode")


def jpeg_of_size(photo: Path, size: tuple[int, int]) -> bytes:
    image = Image.open(photo).convert("RGB")
    # Letterbox into the target aspect so the face keeps its shape, then scale.
    side = max(image.width * size[1] / size[0], image.height)
    canvas = Image.new("RGB", (round(side * size[0] / size[1]), round(side)), (128, 128, 128))
    canvas.paste(image, ((canvas.width - image.width) // 2, (canvas.height - image.height) // 2))
    buffer = io.BytesIO()
    canvas.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    args = parser.parse_args()
    config = PipelineConfig(device=args.device, bf16=PRECISIONS[args.precision])
    with UnmaskPipeline(config) as pipeline:
        precision = "bf16" if pipeline.bf16 else "fp32"
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {precision}"
        )
        print(f"| photo | faces | {' | '.join(STAGES)} | total |")
        print("|---" * (len(STAGES) + 3) + "|")
        for label, size in SIZES.items():
            data = jpeg_of_size(args.photo, size)
            pipeline.unmask_bytes(data)  # warm-up
            runs = []
            for _ in range(args.repeats):
                _, result = pipeline.unmask_bytes(data)
                runs.append(result.timings)
            medians = {s: statistics.median(r.get(s, 0.0) for r in runs) * 1000 for s in STAGES}
            cells = " | ".join(f"{medians[s]:.1f}" for s in STAGES)
            total = sum(medians.values())
            print(f"| {label} {size[0]}x{size[1]} | {len(result.faces)} | {cells} | {total:.1f} ms |")


if __name__ == "__main__":
    main()
