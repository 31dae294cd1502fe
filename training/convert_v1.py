"""Start an inpainter from a one-network model file (format 1: models 1.0 and 1.1).

    git show v1.1-commit:qmask/weights/default.pt > runs/model-1.1.pt
    python -m training.convert_v1 runs/model-1.1.pt runs/inpainter_from_1.1.pt

Model 1.1's generator was the same `FoldedUNet` with 3 input channels and 4 outputs (mask logit
and RGB). The inpainter has a fourth input channel (the hole) and RGB outputs only, so the
weights that read the input get zeros for the hole channel and the mask logit's output weights are
dropped; everything else is kept. That gives the inpainter 1.1's three CPU hours of learning where
a lower face goes and what colour it is, before its own losses teach it to be sharp.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from qmask.model import INPAINTER, Inpainter, save_networks


def convert(old_path: Path) -> Inpainter:
    """Model 1.1's network as an `Inpainter`. PixelUnshuffle(2) turns channel c into channels
    4c..4c+3 and PixelShuffle(2) gathers output channel c from channels 4c..4c+3, so 1.1's RGB are
    input channels 0-11 and output channels 4-15: the hole's 4 folded input channels are added as
    zeros, and 1.1's 4 extra output channels dropped."""
    old = torch.load(old_path, map_location="cpu", weights_only=True)
    if old.get("config", {}).get("arch") != "mask_aware_unet":
        raise ValueError(f"{old_path} is not a format-1 mask-aware model file")
    state = {k: v.float() for k, v in old["state_dict"].items()}
    inpainter = Inpainter(INPAINTER)
    new_state = inpainter.state_dict()
    for key, value in state.items():
        target = f"net.{key}"
        if key == "stem.1.weight":  # (32, 12, 3, 3) -> (32, 16, 3, 3)
            value = torch.cat([value, value.new_zeros(value.shape[0], 4, *value.shape[2:])], dim=1)
        elif key == "head.0.weight":  # (16, 32 + 12, 3, 3) -> (12, 32 + 16, 3, 3)
            widened = torch.cat([value, value.new_zeros(value.shape[0], 4, *value.shape[2:])], dim=1)
            value = widened[4:]
        elif key == "head.0.bias":
            value = value[4:]
        if new_state[target].shape != value.shape:
            raise ValueError(f"{key}: {tuple(value.shape)} does not fit {tuple(new_state[target].shape)}")
        new_state[target] = value
    inpainter.load_state_dict(new_state)
    return inpainter


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", type=Path, help="format-1 model file (models 1.0 and 1.1)")
    parser.add_argument("out", type=Path, help="model file with the inpainter stage only")
    args = parser.parse_args()
    save_networks(args.out, {"inpainter": convert(args.old)}, meta={"converted_from": str(args.old)})
    print(f"{args.old} -> {args.out}")


if __name__ == "__main__":
    main()
