"""The synthetic mask renderer: exact alpha, every style, split separation, determinism."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from qmask.faces import FaceDetector
from tests.conftest import DATA
from training.masks import (
    HELDOUT_TEMPLATES,
    HELDOUT_TEXTURES,
    TRAIN_TEMPLATES,
    MaskRenderer,
    RenderedMask,
    fitting_points,
)
from training.masks.occluders import occlude
from training.masks.styles import EAR_EXT, FAR_EXT, STAND_OFF_EXT, STAND_OFF_SHARE, _sides, load_styles

TEMPLATES = DATA / "mask-templates"
FACES = DATA / "train" / "utkface"
EYES = (33, 133, 362, 263, 159, 145, 386, 374)
COVERED = (13, 14, 1)  # inner lips and nose tip

pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"face data not found at {DATA}")


@pytest.fixture(scope="module")
def faces(detector: FaceDetector) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few UTKFace images with their meshes, detected here (no landmark cache in CI)."""
    out = []
    for path in sorted(FACES.glob("*.jpg"))[:8]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        found = detector.detect(rgb)
        if found and found[0].mesh is not None:
            out.append((rgb, found[0].mesh))
        if len(out) == 3:
            break
    assert len(out) == 3, "the detector found too few faces"
    return out


@pytest.fixture(scope="module")
def train() -> MaskRenderer:
    return MaskRenderer(TEMPLATES, split="train")


@pytest.fixture(scope="module")
def heldout() -> MaskRenderer:
    return MaskRenderer(TEMPLATES, split="heldout")


def _values(alpha: np.ndarray, mesh: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    h, w = alpha.shape
    pts = np.round(mesh[list(indices)]).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    return alpha[pts[inside, 1], pts[inside, 0]]


def _check(out: RenderedMask, rgb: np.ndarray, mesh: np.ndarray) -> None:
    assert out.image.dtype == np.uint8 and out.image.shape == rgb.shape
    assert out.alpha.dtype == np.float32 and out.alpha.shape == rgb.shape[:2]
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1
    clear = out.alpha == 0
    assert np.array_equal(out.image[clear], rgb[clear]), "pixels without mask changed"
    full = out.alpha == 1
    assert full.sum() > 0.05 * full.size, f"{out.kind}: mask too small"
    changed = np.any(out.image[full] != rgb[full], axis=-1).mean()
    assert changed > 0.9, f"{out.kind}: only {changed:.0%} of fully masked pixels show the mask"
    assert np.all(_values(out.alpha, mesh, COVERED) == 1), f"{out.kind}: mouth or nose tip not covered"
    assert np.all(_values(out.alpha, mesh, EYES) == 0), f"{out.kind}: covers an eye"


def test_every_style_matches_its_alpha(train: MaskRenderer, faces: list) -> None:
    rng = np.random.default_rng(0)
    kinds = [k for k in train.kinds if k != "template"] + [f"template:{t}" for t in TRAIN_TEMPLATES]
    assert {"surgical", "n95", "kn95", "cloth", "cloth_printed", "cloth_photo", "bench"} <= set(kinds)
    for kind in kinds:
        for rgb, mesh in faces:
            out = train.render(rgb, mesh, rng, kind=kind)
            assert out.kind.split(":")[0] == kind.split(":")[0]
            if kind.startswith("template:"):
                assert out.kind.removeprefix("template:").startswith(kind.removeprefix("template:"))
            _check(out, rgb, mesh)


def test_random_masks_keep_the_rules(train: MaskRenderer, heldout: MaskRenderer, faces: list) -> None:
    rng = np.random.default_rng(1)
    for renderer in (train, heldout):
        for _ in range(8):
            for rgb, mesh in faces:
                _check(renderer.render(rgb, mesh, rng), rgb, mesh)


def _is_heldout(kind: str) -> bool:
    template = kind.removeprefix("template:")
    texture = kind.rpartition("+")[2] if "+" in kind else kind.partition(":")[2]
    return any(template.startswith(t) for t in HELDOUT_TEMPLATES) or texture.split("/")[0] in HELDOUT_TEXTURES


def test_splits_stay_apart(train: MaskRenderer, heldout: MaskRenderer, faces: list) -> None:
    rng = np.random.default_rng(2)
    rgb, mesh = faces[0]
    held = [heldout.render(rgb, mesh, rng).kind for _ in range(40)]
    assert all(k.startswith("template:") and _is_heldout(k) for k in held), held
    assert any("KN95" in k for k in held) and any("gas" in k for k in held)
    assert any(f"{t}/" in k for k in held for t in HELDOUT_TEXTURES)
    seen = [train.render(rgb, mesh, rng).kind for _ in range(60)]
    for kind in ("template", "cloth_photo"):
        seen += [train.render(rgb, mesh, rng, kind=kind).kind for _ in range(30)]
    assert not any(_is_heldout(k) for k in seen), seen
    assert any(k.startswith("template:") for k in seen) and any(not k.startswith("template:") for k in seen)
    with pytest.raises(ValueError):
        heldout.render(rgb, mesh, rng, kind="surgical")
    with pytest.raises(ValueError):
        train.render(rgb, mesh, rng, kind="template:KN95")


def test_drawn_only_without_templates(faces: list) -> None:
    renderer = MaskRenderer(None)
    assert "template" not in renderer.kinds and "cloth_photo" not in renderer.kinds
    rng = np.random.default_rng(3)
    rgb, mesh = faces[1]
    for _ in range(10):
        assert not renderer.render(rgb, mesh, rng).kind.startswith("template")


def test_same_seed_same_mask(train: MaskRenderer, faces: list) -> None:
    rgb, mesh = faces[2]
    a = [train.render(rgb, mesh, np.random.default_rng(7)) for _ in range(2)]
    assert a[0].kind == a[1].kind
    assert np.array_equal(a[0].image, a[1].image) and np.array_equal(a[0].alpha, a[1].alpha)
    b = train.render(rgb, mesh, np.random.default_rng(8))
    assert not np.array_equal(a[0].image, b.image)


def test_fitting_points(faces: list) -> None:
    for _, mesh in faces:
        points = fitting_points(mesh)
        assert points.shape == (6, 2)
        a, b, c, d, e, f = points
        iod = np.linalg.norm((mesh[362] + mesh[263]) / 2 - (mesh[33] + mesh[133]) / 2)
        assert a[0] < mesh[1, 0] < c[0] and d[0] < mesh[17, 0] < f[0]  # either side of nose and lips
        assert abs(a[1] - mesh[1, 1]) < 0.25 * iod and abs(d[1] - mesh[17, 1]) < 0.25 * iod
        assert mesh[168, 1] < b[1] < mesh[1, 1]  # on the nose bridge
        assert e[1] > mesh[17, 1]  # below the lips


def test_style_weights_set_the_mix(faces: list) -> None:
    with pytest.raises(ValueError, match="unknown mask style"):
        MaskRenderer(None, style_weights={"scarf": 1.0, "balaclava": 1.0})
    with pytest.raises(ValueError):
        MaskRenderer(None, style_weights={"scarf": -1.0})
    with pytest.raises(ValueError):  # cloth_photo needs the textures of templates_dir
        MaskRenderer(None, style_weights={"cloth_photo": 1.0})
    renderer = MaskRenderer(None, style_weights={"scarf": 1.0})
    rng = np.random.default_rng(4)
    rgb, mesh = faces[0]
    assert {renderer.render(rgb, mesh, rng).kind for _ in range(6)} == {"scarf"}
    # Forcing a style still works when the mix leaves it out.
    assert renderer.render(rgb, mesh, rng, kind="surgical").kind == "surgical"


def test_every_style_in_the_table_renders(faces: list) -> None:
    _, styles = load_styles()
    rgb, mesh = faces[0]
    renderer = MaskRenderer(TEMPLATES, split="train", print_faces=lambda rng: rgb)
    for style in styles:
        out = renderer.render(rgb, mesh, np.random.default_rng(5), kind=style)
        assert out.kind.partition(":")[0] == style
        assert out.alpha.max() > 0, f"{style}: nothing drawn"


def test_a_clear_mask_shows_the_face_through_it_and_is_mask_all_the_same(
    train: MaskRenderer, faces: list
) -> None:
    rng = np.random.default_rng(3)
    shows_face = []
    for rgb, mesh in faces:
        for _ in range(4):
            out = train.render(rgb, mesh, rng, kind="clear")
            _check(out, rgb, mesh)  # the truth covers the mouth and the nose tip, not the eyes
            change = np.abs(out.image.astype(int) - rgb).max(axis=-1)[out.alpha == 1]
            shows_face.append(float((change < 20).mean()))
            assert (change > 30).mean() > 0.04, "no opaque trim or cloth"
    # Clear all over (most of it shows the face) and cloth with a clear window (some of it does).
    assert max(shows_face) > 0.5 and min(shows_face) < 0.35 and min(shows_face) > 0.04, shows_face


def test_the_far_side_of_a_turned_face_ends_at_its_cheek_or_stands_off_it() -> None:
    # Only `far_side` of the face is read; 1: the face is turned to image left, its right cheek away.
    turned, frontal = SimpleNamespace(far_side=1), SimpleNamespace(far_side=-1)
    rng = np.random.default_rng(9)
    far = np.array([_sides(-0.03, 0.1, 0.2, turned, rng)[1] for _ in range(400)])
    at_cheek = (far >= FAR_EXT[0]) & (far <= FAR_EXT[1])
    stand_off = (far >= STAND_OFF_EXT[0]) & (far <= STAND_OFF_EXT[1])
    assert np.all(at_cheek | stand_off)
    # The two ranges overlap by nothing, so the shares can be told apart.
    assert abs(stand_off.mean() - STAND_OFF_SHARE) < 0.08
    # A frontal face's sides keep the style's range, or reach an ear.
    sides = np.array([_sides(-0.03, 0.1, 0.2, frontal, rng) for _ in range(400)])
    in_range = (sides >= -0.03) & (sides <= 0.1)
    at_ear = (sides >= EAR_EXT[0]) & (sides <= EAR_EXT[1])
    assert np.all(in_range | at_ear) and np.all(in_range.sum(axis=1) >= 1)
    # Asked for, a share of masks reach both ears (a turned face's far side still ends at its cheek).
    both = np.array([_sides(-0.03, 0.1, 0.2, frontal, rng, both_ears=0.5) for _ in range(400)])
    both_at_ears = ((both >= EAR_EXT[0]) & (both <= EAR_EXT[1])).all(axis=1)
    assert abs(both_at_ears.mean() - 0.5) < 0.08
    turned_far = np.array([_sides(-0.03, 0.1, 0.2, turned, rng, both_ears=1.0)[1] for _ in range(100)])
    assert np.all(turned_far <= STAND_OFF_EXT[1])
    # Not asked for, nothing more is drawn: the masks of a seed stay as they were.
    one, other = np.random.default_rng(3), np.random.default_rng(3)
    assert _sides(-0.03, 0.1, 0.2, frontal, one) == _sides(-0.03, 0.1, 0.2, frontal, other, both_ears=0.0)
    assert one.random() == other.random()


def test_hands_and_collars_hide_the_photo_and_its_mask_and_are_never_mask(
    train: MaskRenderer, faces: list
) -> None:
    rng = np.random.default_rng(6)
    hidden = []
    for photo, mesh in faces:
        # On a canvas reaching under the chin, as training shows the photo (a collar sits there).
        rgb = np.pad(photo, ((0, photo.shape[0] // 2), (0, 0), (0, 0)), mode="edge")
        for masked in (True, False):
            drawn = (
                train.render(rgb, mesh, rng, kind="surgical")
                if masked
                else RenderedMask(rgb, np.zeros(rgb.shape[:2], np.float32), "none")
            )
            out = occlude(drawn, mesh, rng)
            changed = np.any(out.image != drawn.image, axis=-1)
            assert changed.mean() > 0.01, "nothing drawn"
            assert np.all(out.alpha <= drawn.alpha + 1e-6), "an occluder became mask"
            # What it left unchanged keeps its truth (a faint edge may round to the same bytes).
            assert np.allclose(out.alpha[~changed], drawn.alpha[~changed], atol=0.1)
            hidden.append(bool((out.alpha < drawn.alpha - 0.5).any()))
            assert masked or not out.alpha.any()
    assert any(hidden), "no hand or collar hid any of a mask"
