"""Join a trained segmenter and inpainter into one shippable model file.

    python -m training.export --segmenter runs/cpu_segmenter/segmenter.pt \
        --inpainter runs/cpu_inpainter/inpainter.pt --version 2.0 -o runs/model-2.0.pt
    python -m training.export --segmenter runs/cpu_segmenter --inpainter runs/cpu_inpainter ...

A stage is a file a run exported, a model file (its stage, e.g. the shipped inpainter beside a
new segmenter), or a run folder: then its last checkpoint, to measure a run that is still going.
The file keeps each stage's training record (config, commit, steps, minutes, device) under
`meta["stages"]`, so a shipped model says what it was trained on and from which code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from qmask.model import UNetConfig, build_network, read_networks, save_networks


def read_stage(path: Path, stage: str) -> tuple[torch.nn.Module, dict]:
    """The stage's network and its training record, from an exported file or a run folder."""
    if path.is_dir():
        config = yaml.safe_load((path / "config.yaml").read_text())
        ckpt = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
        # A run with `ema_decay` exports its weights' average, so its checkpoint is read the same way.
        state = ckpt["ema"] if "ema" in ckpt else ckpt["networks"][stage]
        net = build_network(stage, UNetConfig(**config["network"]), state)
        record = {"steps": ckpt["step"], "minutes": round(ckpt["elapsed_s"] / 60, 1), "config": config}
        # Checkpoints older than 2026-12-06 lack the device and the processes.
        written = {key: ckpt.get(key) for key in ("images_seen", "device", "processes", "commit")}
        return net, record | written | {"from_checkpoint": True}
    found, meta = read_networks(path)
    if stage not in found:
        raise SystemExit(f"{path} has no {stage} stage")
    # A shipped model file keeps each stage's record under "stages"; a run's export has its own.
    record = meta["stages"][stage] if "stages" in meta else meta.get("training", meta)
    return build_network(stage, *found[stage]), record


def export(segmenter: Path, inpainter: Path, version: str, out: Path) -> None:
    networks, stages = {}, {}
    for stage, path in (("segmenter", segmenter), ("inpainter", inpainter)):
        networks[stage], stages[stage] = read_stage(path, stage)
    save_networks(out, networks, meta={"version": version, "stages": stages})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--segmenter", type=Path, required=True, help="a file with the stage, or a run folder"
    )
    parser.add_argument(
        "--inpainter", type=Path, required=True, help="a file with the stage, or a run folder"
    )
    parser.add_argument("--version", required=True, help="the model version, e.g. 2.0")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    export(args.segmenter, args.inpainter, args.version, args.out)
    print(f"model {args.version} -> {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
