"""How often the model repaints a face that wears no mask: the frozen benchmark's truths.

    python -m benchmarks.bare_faces [--weights qmask/weights/default.pt]

Runs the whole pipeline on the 300 `*_target.png` photos of `bench/lfw-synthetic` (the same people
without the drawn mask) and prints the share of photos with a face edited (at most 1% is the goal).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.data import BENCH
from qmask.pipeline import DEFAULT_WEIGHTS, NoFaceError, PipelineConfig, UnmaskPipeline


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    args = parser.parse_args()
    files = sorted(BENCH.glob("*_target.png"))
    edited, no_face = [], 0
    with UnmaskPipeline(PipelineConfig(weights=args.weights)) as pipeline:
        for path in tqdm(files, desc="bare faces", unit="photo"):
            try:
                result = pipeline.unmask_array(np.asarray(Image.open(path).convert("RGB")))
            except NoFaceError:
                no_face += 1
                continue
            if any(face.edited for face in result.faces):
                edited.append(path.name)
    share = len(edited) / max(len(files) - no_face, 1)
    print(
        json.dumps(
            {"photos": len(files), "no_face": no_face, "edited": len(edited), "share": round(share, 4)}
        )
    )
    if edited:
        print("edited:", " ".join(edited))


if __name__ == "__main__":
    main()
