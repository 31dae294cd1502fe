import copy

import numpy as np
import torch

from qmask.model import (
    GeneratorConfig,
    MaskAwareUNet,
    PatchDiscriminator,
    build_generator,
    count_parameters,
    fuse_batchnorm,
    load_generator,
    run_generator,
    save_generator,
)
from qmask.pipeline import DEFAULT_WEIGHTS


def test_generator_fits_the_serving_budget_of_10m_parameters():
    assert count_parameters(MaskAwareUNet(GeneratorConfig())) <= 10_000_000
    _, config, _ = load_generator(DEFAULT_WEIGHTS)
    assert count_parameters(build_generator(config)) <= 10_000_000


def test_outputs_mask_logits_and_a_face_in_range():
    generator = MaskAwareUNet(GeneratorConfig(base_channels=8, max_channels=32, depth=3, bottleneck_blocks=1))
    mask_logits, face = generator(torch.randn(2, 3, 256, 256))
    assert mask_logits.shape == (2, 1, 256, 256) and face.shape == (2, 3, 256, 256)
    assert face.abs().max() <= 1


def test_batchnorm_folding_keeps_the_outputs():
    torch.manual_seed(0)
    generator = MaskAwareUNet(GeneratorConfig(base_channels=8, max_channels=32, depth=3, bottleneck_blocks=2))
    generator.train()
    for _ in range(3):  # give the BatchNorm layers non-trivial running statistics
        generator(torch.randn(4, 3, 256, 256))
    generator.eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = generator(x)
        folded = fuse_batchnorm(copy.deepcopy(generator))
        got = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_saved_weights_round_trip_in_half_precision(tmp_path):
    config = GeneratorConfig(base_channels=8, max_channels=32, depth=3, bottleneck_blocks=1)
    generator = build_generator(config).eval()
    path = tmp_path / "g.pt"
    save_generator(path, generator, config, meta={"steps": 7})
    loaded, loaded_config, meta = load_generator(path)
    assert loaded_config == config and meta == {"steps": 7}
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(fuse_batchnorm(generator)(x)[1], loaded(x)[1], atol=0.02)


def test_patch_discriminator_scores_overlapping_patches():
    scores = PatchDiscriminator(ndf=8)(torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256))
    assert scores.shape == (1, 1, 30, 30)


def test_mirror_average_treats_a_crop_and_its_mirror_image_alike():
    torch.manual_seed(0)
    generator = MaskAwareUNet(GeneratorConfig(base_channels=8, max_channels=32, depth=3, bottleneck_blocks=1))
    crops = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    with torch.no_grad():
        probs, faces = run_generator(generator.eval(), crops, mirror_average=True)
        probs_m, faces_m = run_generator(generator, crops[:, :, ::-1], mirror_average=True)
        plain_probs, _ = run_generator(generator, crops)
    assert np.allclose(probs, probs_m[:, :, ::-1], atol=1e-5)
    assert np.abs(faces.astype(int) - faces_m[:, :, ::-1]).max() <= 1  # rounding only
    assert not np.allclose(probs, plain_probs, atol=1e-3)  # the mirror pass did change something
