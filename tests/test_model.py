import copy

import numpy as np
import pytest
import torch

from qmask.model import (
    INPAINTER,
    SEGMENTER,
    Inpainter,
    MultiScaleDiscriminator,
    Segmenter,
    UNetConfig,
    count_parameters,
    fuse_batchnorm,
    load_model,
    read_networks,
    run_inpainter,
    run_segmenter,
    save_networks,
)
from qmask.pipeline import DEFAULT_WEIGHTS
from tests.conftest import BENCH, TINY_INPAINTER, TINY_SEGMENTER, load_rgb, tiny_networks


def test_the_stages_fit_their_budgets_of_3m_and_10m_parameters():
    assert count_parameters(Segmenter(SEGMENTER)) <= 3_000_000
    assert count_parameters(Inpainter(INPAINTER)) <= 10_000_000
    model = load_model(DEFAULT_WEIGHTS)
    # The shipped model's stage 1 may be two segmenters joined (SegmenterUnion): 5M for both.
    assert count_parameters(model.segmenter) <= 5_000_000
    assert count_parameters(model.inpainter) <= 10_000_000


def test_outputs_have_the_crop_size_and_the_face_is_in_range():
    nets = tiny_networks()
    x = torch.randn(2, 3, 256, 256)
    assert nets["segmenter"](x).shape == (2, 1, 256, 256)
    face = nets["inpainter"](x, torch.zeros(2, 1, 256, 256))
    assert face.shape == (2, 3, 256, 256) and face.abs().max() <= 1


def test_the_inpainter_never_reads_the_pixels_of_the_hole():
    inpainter = tiny_networks()["inpainter"].eval()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    holes = np.zeros((2, 256, 256), np.float32)
    holes[:, 110:220, 60:196] = 1
    other = crops.copy()
    other[:, 110:220, 60:196] = rng.integers(0, 256, (2, 110, 136, 3), dtype=np.uint8)  # a new "mask"
    assert np.array_equal(run_inpainter(inpainter, crops, holes), run_inpainter(inpainter, other, holes))
    # Outside the hole the pixels do matter.
    other[:, :50] = 0
    assert not np.array_equal(run_inpainter(inpainter, crops, holes), run_inpainter(inpainter, other, holes))


def test_in_bf16_the_inpainter_is_still_blind_to_the_hole_and_close_to_fp32():
    model = load_model(DEFAULT_WEIGHTS)
    crops = np.stack([load_rgb(BENCH / "0003_target.png"), load_rgb(BENCH / "0042_target.png")])
    holes = np.zeros((2, 256, 256), np.float32)
    holes[:, 140:230, 60:196] = 1
    faces = run_inpainter(model.inpainter, crops, holes, bf16=True)
    other = crops.copy()
    other[holes > 0] = np.random.default_rng(0).integers(0, 256, (int(holes.sum()), 3), dtype=np.uint8)
    assert np.array_equal(faces, run_inpainter(model.inpainter, other, holes, bf16=True))
    # bf16 keeps 8 bits of mantissa: the painted faces move by a level or two, no more (measured:
    # 0.28 levels on average, 2 at most).
    error = np.abs(faces.astype(int) - run_inpainter(model.inpainter, crops, holes))[holes > 0]
    assert error.mean() < 0.6 and np.percentile(error, 99) <= 2
    probs = run_segmenter(model.segmenter, crops, bf16=True)
    assert np.abs(probs - run_segmenter(model.segmenter, crops)).max() < 0.01


def test_batchnorm_folding_keeps_the_outputs():
    torch.manual_seed(0)
    inpainter = Inpainter(UNetConfig(**TINY_INPAINTER | {"bottleneck_blocks": 2})).train()
    for _ in range(3):  # give the BatchNorm layers non-trivial running statistics
        inpainter(torch.randn(4, 3, 256, 256), torch.zeros(4, 1, 256, 256))
    inpainter.eval()
    x, hole = torch.randn(1, 3, 256, 256), (torch.rand(1, 1, 256, 256) > 0.5).float()
    with torch.no_grad():
        expected = inpainter(x, hole)
        folded = fuse_batchnorm(copy.deepcopy(inpainter))
        got = folded(x, hole)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(expected, got, atol=1e-4)


def test_a_vgg16_segmenter_learns_only_its_decoder_and_its_files_round_trip(tmp_path):
    torch.manual_seed(0)
    config = UNetConfig(**TINY_SEGMENTER | {"encoder": "vgg16"})
    segmenter = Segmenter(config).train()
    assert not any(p.requires_grad for p in segmenter.net.encoder.parameters())
    assert all(p.requires_grad for name, p in segmenter.named_parameters() if ".encoder." not in name)
    for _ in range(2):  # non-trivial BatchNorm statistics in the decoder
        segmenter(torch.randn(2, 3, 256, 256))
    segmenter.eval()
    path = tmp_path / "m.pt"
    save_networks(path, {"segmenter": segmenter, "inpainter": Inpainter(UNetConfig(**TINY_INPAINTER)).eval()})
    networks, _ = read_networks(path)
    assert networks["segmenter"][0] == config
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = segmenter(x)
        got = load_model(path).segmenter(x.contiguous(memory_format=torch.channels_last))
    assert expected.shape == (1, 1, 256, 256)
    assert torch.allclose(expected, got, atol=0.05)


def test_an_unknown_encoder_and_a_vgg16_inpainter_are_refused():
    with pytest.raises(ValueError, match="unknown segmenter encoder 'resnet'"):
        Segmenter(UNetConfig(**TINY_SEGMENTER | {"encoder": "resnet"}))
    with pytest.raises(ValueError, match="a segmenter's encoder"):
        Inpainter(UNetConfig(**TINY_INPAINTER | {"encoder": "vgg16"}))


def test_model_files_round_trip_in_half_precision(tmp_path):
    nets = {name: net.eval() for name, net in tiny_networks().items()}
    path = tmp_path / "m.pt"
    save_networks(path, nets, meta={"version": "9.9"})
    networks, meta = read_networks(path)
    assert meta == {"version": "9.9"}
    assert networks["segmenter"][0] == UNetConfig(**TINY_SEGMENTER)
    model = load_model(path)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(fuse_batchnorm(nets["segmenter"])(x), model.segmenter(x), atol=0.02)


def test_a_one_stage_file_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"config": {"arch": "mask_aware_unet"}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a two-stage QMask model file"):
        read_networks(path)
    save_networks(path, {"segmenter": tiny_networks()["segmenter"]})
    with pytest.raises(ValueError, match="lacks the inpainter stage"):
        load_model(path)


def test_multiscale_discriminator_scores_patches_at_each_scale_with_features():
    critic = MultiScaleDiscriminator(7, ndf=8, fine_window=(slice(96, 224), slice(64, 192)))
    outputs = critic(torch.randn(1, 4, 256, 256), torch.randn(1, 3, 256, 256))
    assert len(outputs) == 2 and all(len(features) == 5 for features in outputs)
    # Both judge 128 px: the window at full resolution, the whole crop at half.
    assert outputs[0][-1].shape == outputs[1][-1].shape == (1, 1, 14, 14)


def test_mirror_average_treats_a_crop_and_its_mirror_image_alike():
    segmenter = tiny_networks()["segmenter"].eval()
    crops = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    probs = run_segmenter(segmenter, crops, mirror_average=True)
    mirrored = run_segmenter(segmenter, crops[:, :, ::-1], mirror_average=True)
    assert np.allclose(probs, mirrored[:, :, ::-1], atol=1e-5)
    assert not np.allclose(probs, run_segmenter(segmenter, crops), atol=1e-3)  # the mirror pass counts


def test_the_mirror_averaged_inpainter_is_symmetric_and_still_blind_to_the_hole():
    inpainter = tiny_networks()["inpainter"].eval()
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    holes = np.zeros((2, 256, 256), np.float32)
    holes[:, 110:220, 50:180] = 1
    faces = run_inpainter(inpainter, crops, holes, mirror_average=True)
    mirrored = run_inpainter(inpainter, crops[:, :, ::-1], holes[:, :, ::-1], mirror_average=True)
    assert np.abs(faces.astype(int) - mirrored[:, :, ::-1]).max() <= 1  # rounding only
    other = crops.copy()
    other[holes > 0] = 0
    assert np.array_equal(faces, run_inpainter(inpainter, other, holes, mirror_average=True))


def test_channels_last_inference_computes_what_the_networks_compute_in_nchw():
    # load_model lays the weights out channels-last for speed; the maths must stay the networks' own.
    model = load_model(DEFAULT_WEIGHTS)
    crop = torch.from_numpy(load_rgb(BENCH / "0003_masked.png")[:256, :256].copy()).permute(2, 0, 1)[None]
    x = crop.float() / 127.5 - 1
    hole = torch.zeros(1, 1, 256, 256)
    hole[..., 140:220, 60:196] = 1
    for network, inputs in ((model.segmenter, (x,)), (model.inpainter, (x, hole))):
        nchw = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
        conv_weight = next(p for p in network.parameters() if p.dim() == 4)
        assert conv_weight.is_contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            assert torch.allclose(network(*inputs), nchw(*inputs), atol=1e-4)
