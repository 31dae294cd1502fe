"""Build the TorchServe archive: `python -m serve.archive [--export-path DIR] [--version X.Y]`.

The .mar holds the handler, the generator weights as a state_dict (eager mode; TorchScript is
deprecated in torch 2.13), `qmask/model.py` as the model file they belong to, the model card and the
per-model TorchServe settings. Its version is the model card's `version:` line unless given. The
file is named `qmask-VERSION.mar`, so several versions can share one model store; TorchServe takes
the model name (`qmask`) and the version from the archive's manifest, not from the file name.
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

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "qmask"
MODEL_CARD = DEFAULT_WEIGHTS.parent / "MODEL_CARD.md"
HANDLER = REPO / "handlers" / "qmask_handler.py"
MODEL_FILE = REPO / "qmask" / "model.py"
MODEL_CONFIG = REPO / "serve" / "model-config.yaml"
DEFAULT_STORE = REPO / "out" / "serve" / "model-store"


def model_card_version(card: Path = MODEL_CARD) -> str:
    """The `version: X.Y` line of the model card."""
    match = re.search(r"^version:\s*(\S+)\s*$", card.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{card} has no 'version: X.Y' line")
    return match.group(1)


def build_mar(export_dir: Path, version: str | None = None, weights: Path = DEFAULT_WEIGHTS) -> Path:
    """Write `export_dir/qmask-VERSION.mar` (replacing an older build) and return its path."""
    version = version or model_card_version()
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / f"{MODEL_NAME}-{version}.mar"
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    # The archiver names its output after the model; build aside, then give it the versioned name.
    with tempfile.TemporaryDirectory(dir=export_dir) as tmp:
        subprocess.run(
            [
                str(archiver),
                "--model-name", MODEL_NAME,
                "--version", version,
                "--model-file", str(MODEL_FILE),
                "--serialized-file", str(weights),
                "--handler", str(HANDLER),
                "--extra-files", str(MODEL_CARD),
                "--config-file", str(MODEL_CONFIG),
                "--export-path", tmp,
            ],
            check=True,
        )  # fmt: skip
        shutil.move(Path(tmp) / f"{MODEL_NAME}.mar", target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the qmask TorchServe archive.")
    parser.add_argument("--export-path", type=Path, default=DEFAULT_STORE, help="model store folder")
    parser.add_argument("--version", help="archive version (default: the model card's)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="generator weights (.pt)")
    args = parser.parse_args(argv)
    print(build_mar(args.export_path, args.version, args.weights))


if __name__ == "__main__":
    main()
