"""Build the TorchServe archive: `python -m serve.archive [--export-path DIR] [--version X.Y]`.

The .mar holds the handler, the weights (both stages' state_dicts in one file; eager mode,
TorchScript is deprecated in torch 2.13), `qmask/model.py` as the model file they belong to, the
model card and the per-model TorchServe settings. Its version is the model card's `version:` line
unless given.

Each version makes two archives with the same weights: `qmask-VERSION.mar` (photos, batches of 8)
and `qmask-video-VERSION.mar` (clips, one at a time with a long timeout), served as two models so
that clips have their own worker and queue. Files are named MODEL-VERSION.mar, so several versions
share one model store; TorchServe takes the model name and the version from the archive's manifest.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qmask.pipeline import DEFAULT_WEIGHTS
from serve.models import MODEL_NAME, VIDEO_MODEL_NAME

REPO = Path(__file__).resolve().parents[1]
# Each model's TorchServe settings (batching, timeout, and what its handler takes).
MODEL_CONFIGS = {
    MODEL_NAME: REPO / "serve" / "model-config.yaml",
    VIDEO_MODEL_NAME: REPO / "serve" / "model-config-video.yaml",
}
MODEL_CARD = DEFAULT_WEIGHTS.parent / "MODEL_CARD.md"
HANDLER = REPO / "handlers" / "qmask_handler.py"
MODEL_FILE = REPO / "qmask" / "model.py"
DEFAULT_STORE = REPO / "out" / "serve" / "model-store"


def model_card_version(card: Path = MODEL_CARD) -> str:
    """The `version: X.Y` line of the model card."""
    match = re.search(r"^version:\s*(\S+)\s*$", card.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{card} has no 'version: X.Y' line")
    return match.group(1)


def build_mar(
    export_dir: Path,
    version: str | None = None,
    weights: Path = DEFAULT_WEIGHTS,
    model: str = MODEL_NAME,
    card: Path | None = None,
) -> Path:
    """Write `export_dir/MODEL-VERSION.mar` (replacing an older build) and return its path.

    The archive carries `card`, or the shipped model's card when the version is the card's: another
    version (a training job's) goes without one rather than with a card that describes another model."""
    version = version or model_card_version()
    if card is None and version == model_card_version():
        card = MODEL_CARD
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / f"{model}-{version}.mar"
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    # The archiver names its output after the model; build aside, then give it the versioned name.
    with tempfile.TemporaryDirectory(dir=export_dir) as tmp:
        if card is not None and card.name != MODEL_CARD.name:
            # Inside an archive the card always has the shipped card's name.
            card = Path(shutil.copy(card, Path(tmp) / MODEL_CARD.name))
        subprocess.run(
            [
                str(archiver),
                "--model-name", model,
                "--version", version,
                "--model-file", str(MODEL_FILE),
                "--serialized-file", str(weights),
                "--handler", str(HANDLER),
                "--config-file", str(MODEL_CONFIGS[model]),
                "--export-path", tmp,
                *(["--extra-files", str(card)] if card else []),
            ],
            check=True,
        )  # fmt: skip
        shutil.move(Path(tmp) / f"{model}.mar", target)
    return target


def build_mars(
    export_dir: Path, version: str | None = None, weights: Path = DEFAULT_WEIGHTS, card: Path | None = None
) -> list[Path]:
    """Both archives of a version: photos and clips."""
    return [build_mar(export_dir, version, weights, model, card) for model in MODEL_CONFIGS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the qmask and qmask-video TorchServe archives.")
    parser.add_argument("--export-path", type=Path, default=DEFAULT_STORE, help="model store folder")
    parser.add_argument("--version", help="archive version (default: the model card's)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="model file (.pt)")
    parser.add_argument(
        "--card", type=Path, default=None, help="model card (default: the shipped one, for its version)"
    )
    args = parser.parse_args(argv)
    for path in build_mars(args.export_path, args.version, args.weights, args.card):
        print(path)


if __name__ == "__main__":
    main()
