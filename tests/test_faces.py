import numpy as np

from qmask.align import mesh_eyes
from qmask.faces import box_iou
from tests.conftest import load_rgb


def test_detector_finds_a_face_on_at_least_90_percent_of_real_masked_photos(detector, real_masked_sample):
    found = [bool(detector.detect(load_rgb(p))) for p in real_masked_sample]
    assert len(found) >= 25
    assert sum(found) / len(found) >= 0.9, f"{sum(found)}/{len(found)}"


def test_eyes_come_from_the_mesh_and_lie_in_the_box(detector, real_masked_sample):
    meshed = 0
    for path in real_masked_sample[:10]:
        rgb = load_rgb(path)
        for face in detector.detect(rgb):
            x0, y0, x1, y1 = face.box
            # Boxes stop at the photo's edge; the eye of a face cut off by it may lie beyond it.
            height, width = rgb.shape[:2]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            left, top = (x0 - 2 if x0 > 0 else -np.inf), (y0 - 2 if y0 > 0 else -np.inf)
            right, bottom = (x1 + 2 if x1 < width else np.inf), (y1 + 2 if y1 < height else np.inf)
            assert left <= face.eyes[:, 0].min() and face.eyes[:, 0].max() <= right
            assert top <= face.eyes[:, 1].min() and face.eyes[:, 1].max() <= bottom
            assert face.eyes[0, 0] < face.eyes[1, 0]  # image-left eye first
            if face.mesh is not None:
                meshed += 1
                assert (face.eyes == mesh_eyes(face.mesh)).all()
    assert meshed >= 8


def test_small_faces_of_a_large_group_photo_are_found_with_the_extra_pass():
    """Eight masked faces of 90 px in a 4000x2400 photo: about 29 px once downscaled to 1280."""
    from PIL import Image

    from qmask.faces import DetectorConfig, FaceDetector
    from tests.conftest import BENCH

    canvas = Image.new("RGB", (4000, 2400), (110, 120, 130))
    for i in range(8):
        face = Image.open(BENCH / f"{i:04d}_masked.png").convert("RGB").resize((90, 90))
        canvas.paste(face, (300 + 450 * i, 800 + (i % 3) * 400))
    rgb = np.asarray(canvas)
    with FaceDetector(DetectorConfig(small_faces_max_side=2560)) as detector:
        found = detector.detect(rgb)
    with FaceDetector() as detector:
        default = detector.detect(rgb)
    assert len(found) >= 5 > len(default)
    assert all(60 < f.size < 120 for f in found)


def test_a_masked_face_cut_in_half_by_the_photos_edge_is_found_in_the_black_frame(detector):
    """140: a nurse in a respirator beside a second one whose face the photo's left edge cuts at the
    nose; both detectors miss the second without room around the photo to see its shape."""
    from qmask.faces import DetectorConfig, FaceDetector
    from tests.conftest import REAL_MASKED

    rgb = load_rgb(REAL_MASKED / "140.png")
    framed = detector.detect(rgb)
    with FaceDetector(DetectorConfig(frame_cut_pad=None)) as unframed_detector:
        unframed = unframed_detector.detect(rgb)
    assert len(unframed) == 1 and len(framed) == 2
    cut = min(framed, key=lambda f: f.box[0])
    assert cut.box[0] == 0 and cut.box[2] < rgb.shape[1] / 2  # clipped to the photo, on its left
    assert all(box_iou(cut.box, f.box) < 0.3 for f in unframed)
