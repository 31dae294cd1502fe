"""The two networks of a QMask model, their discriminator, and model files.

Stage 1, `Segmenter`: where is the mask on the aligned face crop (one logit per pixel).
Stage 2, `Inpainter`: the Pix2Pix generator. It gets the crop with the hole (the grown mask
region) erased and the hole as a fourth channel, and paints the whole face; the pipeline keeps its
output inside the hole and a feathered edge around it. It never sees a pixel of the mask, so
neither the mask's colour nor its print can leak into the new lower face, and it is trained on bare
faces with mask-shaped holes.

Both can be the same `FoldedUNet`: to run well under 100 ms per face on two CPU cores, the 256x256
input is folded into 128x128 by a pixel unshuffle and unfolded again at the end, and the middle
runs residual blocks at 8x8, where each 3x3 conv already sees most of the face (painting a lower
face needs context from the cheeks and the eyes). The segmenter may instead be a `VGGUNet`, whose
encoder is ImageNet's VGG16 (`UNetConfig.encoder`).

`MultiScaleDiscriminator` is the Pix2PixHD critic: 70x70 PatchGANs at full and half resolution,
returning their intermediate features for the feature-matching loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

# A model file is format 2: the two-stage model. Format 1 (models 1.0 and 1.1) was one network.
MODEL_FORMAT = 2


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    out_channels: int
    base_channels: int = 32
    max_channels: int = 256
    depth: int = 4  # downsamplings after the pixel unshuffle: 128 -> 8
    bottleneck_blocks: int = 6
    # "folded": `FoldedUNet`, every weight learnt. "vgg16" (segmenter only): `VGGUNet`, ImageNet
    # VGG16's first seven convs as its encoder (kept as they are in training), a decoder of
    # `base_channels` to `max_channels` with `bottleneck_blocks`; `depth` is not used.
    encoder: str = "folded"

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


SEGMENTER = UNetConfig(in_channels=3, out_channels=1, base_channels=16, max_channels=128, bottleneck_blocks=3)
INPAINTER = UNetConfig(in_channels=4, out_channels=3)


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    k = 4 if stride == 2 else 3
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)
    )


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class _Up(nn.Module):
    """A 1x1 projection, nearest upsampling, added to the skip, then a 3x3 conv.

    Adding instead of concatenating halves the cost of the high-resolution convs; nearest
    upsampling instead of a transposed conv avoids checkerboard artefacts. Projecting before
    upsampling is the same map (nearest upsampling copies pixels, a 1x1 conv maps each alone) at a
    quarter of the projection's cost, on half the channels to upsample: 11% of a forward pass.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.conv = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.project(x), scale_factor=2, mode="nearest")
        return self.conv(x + skip)


class FoldedUNet(nn.Module):
    """(N, in_channels, H, W) -> (N, out_channels, H, W), H and W divisible by 2**(depth + 1)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        widths = [min(config.base_channels * 2**i, config.max_channels) for i in range(config.depth + 1)]
        folded = 4 * config.in_channels
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(folded, widths[0], 3, 1, 1), nn.LeakyReLU(0.2, True)
        )
        self.down = nn.ModuleList(
            _conv_block(widths[i], widths[i + 1], stride=2) for i in range(config.depth)
        )
        self.middle = nn.Sequential(*(_ResBlock(widths[-1]) for _ in range(config.bottleneck_blocks)))
        self.up = nn.ModuleList(_Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth)))
        # The folded input joins the last features, so the output can keep full-resolution detail.
        self.head = nn.Sequential(
            nn.Conv2d(widths[0] + folded, 4 * config.out_channels, 3, 1, 1), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        h = self.middle(skips.pop())
        for up in self.up:
            h = up(h, skips.pop())
        folded = F.pixel_unshuffle(x, 2)
        if h.is_contiguous(memory_format=torch.channels_last):
            # Inference runs channels-last (`load_model`): joined in one layout, the copy is cheap.
            folded = folded.contiguous(memory_format=torch.channels_last)
        return self.head(torch.cat([h, folded], dim=1))


# ImageNet's mean and std restated for inputs in [-1, 1] (the LPIPS scaling layer), which the
# VGG16 and AlexNet weights expect, and VGG16's layout: the channels of its convs, "M" a 2x2 max pool.
IMAGENET_SHIFT = (-0.030, -0.088, -0.188)
IMAGENET_SCALE = (0.458, 0.448, 0.450)
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_blocks(blocks: int) -> nn.ModuleList:
    """VGG16's first `blocks` blocks (1-5), untrained: each its convs with ReLUs, every block after
    the first starting with its 2x2 max pool; the output of block i is the relu{i}_2 or _3 map."""
    pools = [i for i, item in enumerate(VGG16_LAYOUT) if item == "M"]
    layers: list[list[nn.Module]] = [[]]
    c_in = 3
    for item in VGG16_LAYOUT[: pools[blocks - 1] if blocks <= len(pools) else len(VGG16_LAYOUT)]:
        if item == "M":
            layers.append([nn.MaxPool2d(2)])
        else:
            layers[-1] += [nn.Conv2d(c_in, item, 3, 1, 1), nn.ReLU(True)]
            c_in = item
    return nn.ModuleList(nn.Sequential(*layer) for layer in layers)


class VGGUNet(nn.Module):
    """(N, 3, 256, 256) in [-1, 1] -> (N, out_channels, 256, 256) logits, from VGG16's first three
    blocks (to relu3_3) on the crop at half size and a small decoder.

    Segmenters learn only drawn masks; from random weights a `FoldedUNet` learnt their look and
    stopped at real prints, lettering and folds it had never seen drawn. This one starts from
    features learnt on ImageNet's photos and keeps them as they are (`requires_grad` off), fitting
    only the decoder: it takes unseen drawn masks and some real ones the `FoldedUNet` misses, and
    misses others it takes, so model 3.8 joins the two (`SegmenterUnion`). On the crop at half
    size (the mask's outline loses nothing the hole's 5 px grow would keep) it still costs about
    four times the `FoldedUNet` segmenter (docs/results.md, "Speed").
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(IMAGENET_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(IMAGENET_SCALE).view(1, 3, 1, 1))
        self.encoder = vgg16_blocks(3)
        self.encoder.requires_grad_(False)
        top, mid, low = config.max_channels, config.max_channels // 2, config.base_channels
        # Laterals bring each block's features (64 ch at 128 px, 128 at 64, 256 at 32) to the
        # decoder's width there; the middle runs at 16 px, where a 3x3 conv sees most of the face.
        self.lateral = nn.ModuleList([_conv_block(64, low), _conv_block(128, mid), _conv_block(256, top)])
        self.down = _conv_block(top, top, stride=2)
        self.middle = nn.Sequential(*(_ResBlock(top) for _ in range(config.bottleneck_blocks)))
        self.up = nn.ModuleList([_Up(top, top), _Up(top, mid), _Up(mid, low)])
        self.head = nn.Conv2d(low, config.out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d((x - self.shift) / self.scale, 2)
        skips = []
        for block, lateral in zip(self.encoder, self.lateral, strict=True):
            h = block(h)
            skips.append(lateral(h))
        h = self.middle(self.down(skips[-1]))
        for up in self.up:
            h = up(h, skips.pop())
        return F.interpolate(self.head(h), scale_factor=2, mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    """Aligned crop (N, 3, 256, 256) in [-1, 1] -> mask logits (N, 1, 256, 256)."""

    def __init__(self, config: UNetConfig = SEGMENTER) -> None:
        super().__init__()
        self.config = config
        if config.encoder not in ("folded", "vgg16"):
            raise ValueError(f"unknown segmenter encoder {config.encoder!r}: folded or vgg16")
        self.net = VGGUNet(config) if config.encoder == "vgg16" else FoldedUNet(config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class Inpainter(nn.Module):
    """Aligned crop (N, 3, 256, 256) in [-1, 1] and hole (N, 1, 256, 256), 1 where the face is to be
    painted -> the whole face (N, 3, 256, 256) in [-1, 1].

    The hole's pixels are erased here, not by the caller, so nothing of what lies under the hole
    (the mask) can reach the output whatever is passed in.
    """

    def __init__(self, config: UNetConfig = INPAINTER) -> None:
        super().__init__()
        if config.encoder != "folded":
            raise ValueError(f"the inpainter is a folded U-Net; {config.encoder!r} is a segmenter's encoder")
        self.config = config
        self.net = FoldedUNet(config)

    @staticmethod
    def condition(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """What the network reads (N, 4, H, W): the crop with the hole (0/1) erased, and the hole;
        the critics judge a face against the same."""
        return torch.cat([image * (1 - hole), hole], dim=1)  # 0 is mid grey in [-1, 1]

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.condition(image, (hole > 0.5).to(image.dtype))))


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN: one real/fake logit per overlapping patch, plus the features on the way."""

    def __init__(self, in_channels: int, ndf: int = 64) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)),
                _conv_block(ndf, ndf * 2, stride=2),
                _conv_block(ndf * 2, ndf * 4, stride=2),
                nn.Sequential(
                    nn.Conv2d(ndf * 4, ndf * 8, 4, 1, 1, bias=False),
                    nn.BatchNorm2d(ndf * 8),
                    nn.LeakyReLU(0.2, True),
                ),
                nn.Conv2d(ndf * 8, 1, 4, 1, 1),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features  # the last one is the logit map


class MultiScaleDiscriminator(nn.Module):
    """PatchGANs on (condition, image): the fine one at full resolution, each further one at half
    the previous resolution (`scales` in all). The coarse ones judge the face's overall shape, the
    fine one its texture, and only within `fine_window` (rows, columns): where the painting is, at a
    fraction of the cost."""

    def __init__(
        self,
        in_channels: int,
        fine_window: tuple[slice, slice],
        ndf: int = 64,
        scales: int = 2,
    ) -> None:
        super().__init__()
        self.critics = nn.ModuleList(PatchDiscriminator(in_channels, ndf) for _ in range(scales))
        self.fine_window = fine_window

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([condition, image], dim=1)
        outputs = []
        for i, critic in enumerate(self.critics):
            if i == 0:
                outputs.append(critic(x[..., self.fine_window[0], self.fine_window[1]]))
                continue
            if i:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outputs.append(critic(x))
        return outputs


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1] on `device`: what the networks take."""
    # A writable copy: callers pass read-only and flipped (negative-stride) arrays, which torch cannot
    # wrap. Moved as uint8, a quarter of the bytes of float.
    x = torch.from_numpy(np.array(images)).to(device)
    return x.movedim(-1, -3).float().div(127.5).sub(1)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 on the CPU: the inverse of `images_to_tensor`."""
    return x.detach().float().add(1).mul(127.5).round().clamp(0, 255).byte().movedim(-3, -1).cpu().numpy()


def supports_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes in bf16 natively, so that bf16 autocast is faster than fp32, not
    slower: GPUs from Ampere on, CPUs with AVX512-BF16 or AMX (oneDNN's check)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return device.type == "cpu" and bool(native and native())


def bf16_autocast(device: torch.device | str, bf16: bool) -> torch.autocast:
    """bf16 autocast on `device` where `bf16`, else a context that changes nothing (fp32)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


@torch.inference_mode()
def run_segmenter(
    segmenter: nn.Module,
    crops: np.ndarray,
    device: torch.device | str = "cpu",
    mirror_average: bool = False,
    bf16: bool = False,
) -> np.ndarray:
    """(N, 256, 256, 3) uint8 crops -> mask probabilities (N, 256, 256) float32.

    `mirror_average` also runs the mirrored crops and averages both logits (mirrored back); `bf16`
    runs the network in bf16 autocast (see `supports_bf16`).
    """
    x = images_to_tensor(crops, device)
    if mirror_average:
        x = torch.cat([x, x.flip(-1)])
    with bf16_autocast(device, bf16):
        logits = segmenter(x).float()
    if mirror_average:
        logits = (logits[: len(crops)] + logits[len(crops) :].flip(-1)) / 2
    return torch.sigmoid(logits)[:, 0].cpu().numpy()


@torch.inference_mode()
def run_inpainter(
    inpainter: nn.Module,
    crops: np.ndarray,
    holes: np.ndarray,
    device: torch.device | str = "cpu",
    mirror_average: bool = False,
    bf16: bool = False,
) -> np.ndarray:
    """(N, 256, 256, 3) uint8 crops and (N, 256, 256) holes (1: paint) -> faces (N, 256, 256, 3) uint8.

    `mirror_average` also paints the mirrored crops and averages both faces (mirrored back); `bf16`
    runs the network in bf16 autocast (see `supports_bf16`).
    """
    x = images_to_tensor(crops, device)
    hole = torch.from_numpy(np.array(holes, dtype=np.float32)).to(device)[:, None]
    with bf16_autocast(device, bf16):
        face = paint(inpainter, x, hole, mirror_average)
    return tensor_to_images(face)


def paint(inpainter: nn.Module, x: torch.Tensor, hole: torch.Tensor, mirror_average: bool) -> torch.Tensor:
    """The faces (N, 3, H, W, float32) the inpainter paints for crops `x` and `hole`s (Inpainter's
    tensors); with `mirror_average`, the mean of the faces painted for the crops and for their mirror images
    (mirrored back), in one call of the network (a DistributedDataParallel module allows one per
    step). The pipeline shows this average, and training may score it (`LossConfig.mirror_average`)."""
    if not mirror_average:
        return inpainter(x, hole).float()
    face = inpainter(torch.cat([x, x.flip(-1)]), torch.cat([hole, hole.flip(-1)])).float()
    return (face[: len(x)] + face[len(x) :].flip(-1)) / 2


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv before it (a quarter of CPU inference time)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            layers = list(child)
            for i in range(len(layers) - 1):
                conv, bn = layers[i], layers[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    layers[i] = fuse_conv_bn_eval(conv, bn)
                    layers[i + 1] = nn.Identity()
            setattr(module, name, nn.Sequential(*layers))
        fuse_batchnorm(getattr(module, name))
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SegmenterUnion(nn.Module):
    """Segmenters whose masks are joined: per pixel the largest of their logits, so a pixel is mask
    where any of them says so. Segmenters of different designs miss different real masks (a
    `FoldedUNet` and a `VGGUNet`: docs/results.md, "A second segmenter with an ImageNet encoder")."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.members[0](image)
        for member in self.members[1:]:
            logits = torch.maximum(logits, member(image))
        return logits


# The stages every model file has, and the optional second segmenter joined with the first.
STAGES = {"segmenter": Segmenter, "inpainter": Inpainter}
SECOND_SEGMENTER = "second_segmenter"
NETWORKS = STAGES | {SECOND_SEGMENTER: Segmenter}


@dataclass
class QMaskModel:
    """Both stages in eval mode (batch norm folded) and what the model file says about them; the
    segmenter is a `SegmenterUnion` where the file has a second one."""

    segmenter: Segmenter | SegmenterUnion
    inpainter: Inpainter
    meta: dict

    @property
    def inpainter_erases_outside_photo(self) -> bool:
        """Whether the inpainter was trained with the crop's mirrored surroundings erased as well
        as the hole (`erase_outside_photo` in its training record): then it must get them so."""
        return erases_outside_photo(self.meta.get("stages", {}).get("inpainter", {}))


def erases_outside_photo(record: dict) -> bool:
    """`erase_outside_photo` of an inpainter's training record; an averaged record's (`training.export`
    with several runs) from its first run, since export averages only runs that agree on it, and
    down to a run: a part of an average may be a model file that was an average itself."""
    while "average_of" in record:
        record = record["average_of"][0]
    return bool(record.get("config", {}).get("erase_outside_photo", False))


def save_networks(path: Path, networks: dict[str, nn.Module], meta: dict | None = None) -> None:
    """A model file: each stage's config and half-precision weights (small to ship), and `meta`
    (version, training provenance). A training run writes one stage; a shipped model has both."""
    payload = {
        "format": MODEL_FORMAT,
        "networks": {
            name: {
                "config": asdict(net.config),
                "state_dict": {
                    k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()
                },
            }
            for name, net in networks.items()
        },
        "meta": meta or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def read_networks(path: Path) -> tuple[dict[str, tuple[UNetConfig, dict[str, torch.Tensor]]], dict]:
    """{stage: (config, float32 training-form weights)} and the meta of a model file."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path} is not a two-stage QMask model file (format {payload.get('format', 1)}, "
            f"this version reads format {MODEL_FORMAT})"
        )
    networks = {
        name: (
            UNetConfig.from_dict(entry["config"]),
            {k: v.float() if v.is_floating_point() else v for k, v in entry["state_dict"].items()},
        )
        for name, entry in payload["networks"].items()
    }
    return networks, payload.get("meta", {})


class IncompatibleWeightsError(ValueError):
    """Weights that do not fit the network this version of qmask builds from their config."""


def build_network(stage: str, config: UNetConfig, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The stage's network for `config`, with `state` loaded; the weights must fit it exactly (names
    and shapes), so a file from another version of the code is refused instead of half loaded."""
    net = NETWORKS[stage](config)
    if state is not None:
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != expected:
            missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
            reshaped = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
            raise IncompatibleWeightsError(
                f"the {stage} weights do not fit the {stage} this qmask builds for {config}: "
                f"missing {missing[:3]}, unexpected {extra[:3]}, other shapes {reshaped[:3]}"
            )
        net.load_state_dict(state)
    return net


def load_model(path: Path, device: str | torch.device = "cpu") -> QMaskModel:
    """Both stages of a model file, ready for inference on `device`."""
    networks, meta = read_networks(path)
    missing = set(STAGES) - set(networks)
    if missing:
        raise ValueError(f"{path} lacks the {', '.join(sorted(missing))} stage")
    # Channels-last weights: oneDNN's convolutions run on that layout natively (NCHW is converted
    # to and fro around every conv); the inpainter's pass took 17 ms instead of 30 in bf16 on one
    # core of this CPU, with the very same output.
    nets = {
        stage: fuse_batchnorm(build_network(stage, *networks[stage]).eval()).to(
            device, memory_format=torch.channels_last
        )
        for stage in NETWORKS
        if stage in networks
    }
    segmenter = nets["segmenter"]
    if SECOND_SEGMENTER in nets:
        segmenter = SegmenterUnion([segmenter, nets[SECOND_SEGMENTER]])
    return QMaskModel(segmenter=segmenter, inpainter=nets["inpainter"], meta=meta)
