"""Join a trained segmenter and inpainter into one shippable model file.

    python -m training.export --segmenter runs/cpu_segmenter/segmenter.pt \
        --inpainter runs/cpu_inpainter/inpainter.pt --version 2.0 -o runs/model-2.0.pt
    python -m training.export --segmenter runs/cpu_segmenter --inpainter runs/cpu_inpainter ...
    python -m training.export --segmenter qmask/weights/default.pt \
        --inpainter runs/run_a runs/run_b --shares 0.6 0.4 --version 3.7 -o runs/model-3.7.pt

A stage is a file a run exported, a model file (its stage, e.g. the shipped inpainter beside a
new segmenter), or a run folder: then its last checkpoint, to measure a run that is still going.
The file keeps each stage's training record (config, commit, steps, minutes, device) under
`meta["stages"]`, so a shipped model says what it was trained on and from which code.

Several inpainters (fine-tunes from the same weights) are joined as their weights' average, each
weighted by its share: such an average can beat both runs on PSNR and LPIPS at once where their
own points trade one for the other (docs/results.md, Training of model 3.7). Its record is
`{"average_of": [{"share": ..., <each run's record>}, ...]}`.

`--second-segmenter` adds a segmenter whose mask the pipeline joins with the first's
(`qmask.model.SegmenterUnion`); from a model file that has one, that one, else its segmenter. A
model file given as `--segmenter` brings its second segmenter along unless another is given:

    python -m training.export --segmenter runs/model-3.7.pt --second-segmenter runs/cpu_segmenter_vgg \
        --inpainter runs/model-3.7.pt --version 3.8 -o runs/model-3.8.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from qmask.model import (
    SECOND_SEGMENTER,
    UNetConfig,
    build_network,
    erases_outside_photo,
    read_networks,
    save_networks,
)


def read_stage(path: Path, stage: str) -> tuple[torch.nn.Module, dict]:
    """The stage's network and its training record, from an exported file or a run folder (a
    `SECOND_SEGMENTER` from a run folder or file of a segmenter)."""
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
    # A second segmenter is read from a model file's own, or else from its (or a run's) segmenter.
    name = stage if stage in found or stage != SECOND_SEGMENTER else "segmenter"
    if name not in found:
        raise SystemExit(f"{path} has no {stage} stage")
    # A shipped model file keeps each stage's record under "stages"; a run's export has its own.
    record = meta["stages"][name] if "stages" in meta else meta.get("training", meta)
    return build_network(stage, *found[name]), record


def average_stage(paths: list[Path], shares: list[float], stage: str) -> tuple[torch.nn.Module, dict]:
    """The stage's weights averaged over `paths` (each as `read_stage` reads it), weighted by
    `shares` (normalised to sum to 1); the record lists each one's record with its share."""
    if len(shares) != len(paths) or min(shares) <= 0:
        raise SystemExit(f"{len(paths)} {stage} weights need as many shares, all positive; got {shares}")
    read = [read_stage(path, stage) for path in paths]
    # The pipeline shows the inpainter its input as its training did (read from the record):
    # runs trained on different inputs make no one network.
    erased = {erases_outside_photo(record) for _, record in read}
    if len(erased) > 1:
        raise SystemExit(f"the {stage} runs differ in erase_outside_photo: no one input fits their average")
    shares = [share / sum(shares) for share in shares]
    states = [net.state_dict() for net, _ in read]
    averaged = {}
    for name, tensor in states[0].items():
        # Integer buffers (BatchNorm's batch count) are kept from the first: a count, not a weight.
        if not tensor.is_floating_point():
            averaged[name] = tensor
            continue
        averaged[name] = sum(share * state[name] for share, state in zip(shares, states, strict=True))
    records = [{"share": round(share, 6)} | record for share, (_, record) in zip(shares, read, strict=True)]
    return build_network(stage, read[0][0].config, averaged), {"average_of": records}


def export(
    segmenter: Path,
    inpainter: Path | list[Path],
    version: str,
    out: Path,
    shares: list[float] | None = None,
    second_segmenter: Path | None = None,
) -> None:
    """Join the segmenter (and a second one, whose mask the pipeline joins with the first's) and
    the inpainter (or several, averaged by `shares`, equal by default)."""
    networks, stages = {}, {}
    networks["segmenter"], stages["segmenter"] = read_stage(segmenter, "segmenter")
    # A model file's segmenters go together: the pair is the stage 1 it was measured with.
    if second_segmenter is None and segmenter.is_file() and SECOND_SEGMENTER in read_networks(segmenter)[0]:
        second_segmenter = segmenter
    if second_segmenter is not None:
        networks[SECOND_SEGMENTER], stages[SECOND_SEGMENTER] = read_stage(second_segmenter, SECOND_SEGMENTER)
    inpainters = inpainter if isinstance(inpainter, list) else [inpainter]
    if len(inpainters) == 1 and shares is None:
        networks["inpainter"], stages["inpainter"] = read_stage(inpainters[0], "inpainter")
    else:
        shares = shares or [1.0] * len(inpainters)
        networks["inpainter"], stages["inpainter"] = average_stage(inpainters, shares, "inpainter")
    save_networks(out, networks, meta={"version": version, "stages": stages})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--segmenter", type=Path, required=True, help="a file with the stage, or a run folder"
    )
    parser.add_argument(
        "--second-segmenter",
        type=Path,
        help="a segmenter (a file with one, or a run folder) whose mask is joined with the first's "
        "(default: the --segmenter model file's own, if it has one)",
    )
    parser.add_argument(
        "--inpainter",
        type=Path,
        nargs="+",
        required=True,
        help="a file with the stage, or a run folder; several: their weights' average",
    )
    parser.add_argument(
        "--shares", type=float, nargs="+", help="each inpainter's share of the average (default equal)"
    )
    parser.add_argument("--version", required=True, help="the model version, e.g. 2.0")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    export(args.segmenter, args.inpainter, args.version, args.out, args.shares, args.second_segmenter)
    print(f"model {args.version} -> {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
