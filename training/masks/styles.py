"""The drawn mask styles: styles.yaml (each style's share, random fit and material, and what holds it
on) and the sampler that turns a style into one random fit, material and holder.

The file's header describes the forms a value takes. Sampling draws in the order the file is
written, so the same seed gives the same mask for as long as the file keeps its order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from training.masks.face import Face
from training.masks.geometry import Fit
from training.masks.light import Material

STYLES_FILE = Path(__file__).parent / "styles.yaml"
HOLDERS = ("loops", "fabric_loops", "straps", "harness", "")
# `sides`: how far a side that reaches the ear goes past the visible contour, and where the far side
# of a turned face ends: at the contour (the cheek hides the rest), or, for a share of masks, standing
# off the cheek past it, as a mask bridging from the nose to the far ear does.
EAR_EXT = (0.15, 0.32)
FAR_EXT = (-0.03, 0.02)
STAND_OFF_EXT = (0.03, 0.15)
STAND_OFF_SHARE = 0.5

_KEYS = {"weight", "holder", "flags", "fit", "material", "like"}
_FIELDS = {
    "fit": {f.name for f in dataclasses.fields(Fit)},
    "material": {f.name for f in dataclasses.fields(Material)},
}
_FIT_REQUIRED = {f.name for f in dataclasses.fields(Fit) if f.default is dataclasses.MISSING}


def load_styles(path: Path = STYLES_FILE) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The shared draws and the styles (name -> entry, `like` resolved) of a style file, checked."""
    table = yaml.safe_load(path.read_text())
    shared, entries = table.get("shared") or {}, table["styles"]
    styles = {}
    for name, entry in entries.items():
        if "like" in entry:
            base = entries[entry["like"]]
            entry = {**{k: base[k] for k in ("holder", "flags", "fit", "material") if k in base}, **entry}
            del entry["like"]
        unknown = set(entry) - _KEYS
        if unknown:
            raise ValueError(f"{path}: style {name!r} has unknown keys {sorted(unknown)}")
        if entry.get("holder") not in HOLDERS:
            raise ValueError(
                f"{path}: style {name!r} has holder {entry.get('holder')!r}, not one of {HOLDERS}"
            )
        if not isinstance(entry.get("weight"), int | float) or entry["weight"] < 0:
            raise ValueError(f"{path}: style {name!r} needs a weight >= 0")
        for part, fields in _FIELDS.items():
            unknown = set(entry.get(part, {})) - fields
            if unknown:
                raise ValueError(f"{path}: style {name!r} {part} has unknown fields {sorted(unknown)}")
        missing = _FIT_REQUIRED - set(entry.get("fit", {}))
        if missing:
            raise ValueError(f"{path}: style {name!r} fit lacks {sorted(missing)}")
        styles[name] = entry
    return shared, styles


SHARED, STYLES = load_styles()
DRAWN_KINDS = tuple(STYLES)
DRAWN_WEIGHTS = {name: float(entry["weight"]) for name, entry in STYLES.items()}


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    """A mix of styles, name -> weight, with every drawn style (0 for those left out)."""
    unknown = sorted(set(weights) - set(DRAWN_KINDS))
    if unknown:
        raise ValueError(f"unknown mask style(s) {unknown}: the drawn styles are {DRAWN_KINDS}")
    out = {name: float(weights.get(name, 0.0)) for name in DRAWN_KINDS}
    if not all(np.isfinite(w) and w >= 0 for w in out.values()):
        raise ValueError(f"style weights must be finite and >= 0: {weights}")
    return out


def style_fit(
    style: str, face: Face, rng: np.random.Generator, both_ears: float = 0.0
) -> tuple[Fit, Material, str]:
    """Random fit and material of a drawn style, and what holds it on (see styles.yaml); with
    probability `both_ears` a mask's sides both reach the ears (`_sides`)."""

    def draw(name: str, spec: Any) -> Any:
        if isinstance(spec, bool | int | float):
            return spec
        if spec == "shared":
            return shared[name]
        if isinstance(spec, list):
            if len(spec) == 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in spec):
                return rng.uniform(spec[0], spec[1])
            return tuple(draw(name, x) for x in spec)
        if isinstance(spec, dict) and set(spec) == {"beta"}:
            return float(rng.beta(*spec["beta"]))
        if isinstance(spec, dict) and set(spec) == {"sides"}:
            return _sides(*spec["sides"], face, rng, both_ears)
        if isinstance(spec, dict) and set(spec) == {"if", "then", "else"}:
            # A probability is drawn before the value it chooses; a flag was drawn before the fit.
            cond = flags[spec["if"]] if isinstance(spec["if"], str) else rng.random() < spec["if"]
            return draw(name, spec["then"] if cond else spec["else"])
        raise ValueError(f"style {style!r}: {name} has a value styles.yaml does not describe: {spec!r}")

    # The shared values come first and for every style, whether it uses them or not: drawing them
    # only where used would change every mask drawn from a given seed.
    shared: dict[str, Any] = {}
    flags: dict[str, bool] = {}
    for name, spec in SHARED.items():
        shared[name] = draw(name, spec)
    entry = STYLES[style]
    flags.update({name: rng.random() < p for name, p in entry.get("flags", {}).items()})
    fit = Fit(**{name: draw(name, spec) for name, spec in entry["fit"].items()})
    mat = Material(**{name: draw(name, spec) for name, spec in entry.get("material", {}).items()})
    return fit, mat, entry["holder"]


def _sides(
    lo: float, hi: float, ears: float, face: Face, rng: np.random.Generator, both_ears: float = 0.0
) -> tuple[float, float]:
    """`ext` (left, right): each side in [lo, hi]; with probability `ears` one side reaches the ear
    (the near one of a turned face), with probability `both_ears` every side that can (both of a
    frontal face); the far side of a turned face ends at the visible contour or stands off the
    cheek past it."""
    far = face.far_side
    ext = [rng.uniform(lo, hi), rng.uniform(lo, hi)]
    if rng.random() < ears:
        ext[int(rng.integers(2)) if far < 0 else 1 - far] = rng.uniform(*EAR_EXT)
    # Drawn only when asked for: every mask drawn from a given seed stays as it was.
    if both_ears > 0 and rng.random() < both_ears:
        ext = [rng.uniform(*EAR_EXT), rng.uniform(*EAR_EXT)]
    if far >= 0:
        ext[far] = rng.uniform(*(STAND_OFF_EXT if rng.random() < STAND_OFF_SHARE else FAR_EXT))
    return ext[0], ext[1]
