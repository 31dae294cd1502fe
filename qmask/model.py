"""The mask-aware Pix2Pix generator, its PatchGAN discriminator, and weight files.

`MaskAwareUNet` sees the masked, aligned face and predicts two things: where the mask is (one
logit channel) and the face beneath it (three channels). The result is the composite: predicted
face inside the mask, input everywhere else. To serve at well under 100 ms per face on two CPU
cores, the U-Net works at half resolution: the 256x256 input is folded into 128x128x12 by a pixel
unshuffle and unfolded again at the end, and its middle runs residual blocks at 8x8, where each 3x3 conv
already sees most of the face (inpainting needs context from the cheeks and the eyes).

`UNet256` is the reference pix2pix generator (Isola et al., 2017), kept as the baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class GeneratorConfig:
    arch: str = "mask_aware_unet"  # or "unet256" (plain pix2pix baseline)
    base_channels: int = 32
    max_channels: int = 256
    depth: int = 4  # downsamplings after the pixel unshuffle: 128 -> 8
    bottleneck_blocks: int = 6

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


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
    """Nearest upsampling, a 1x1 projection added to the skip, then a 3x3 conv.

    Adding instead of concatenating halves the cost of the high-resolution convs; nearest
    upsampling instead of a transposed conv avoids checkerboard artefacts.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.conv = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.project(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.conv(x + skip)


class MaskAwareUNet(nn.Module):
    """Input: (N, 3, 256, 256) in [-1, 1]. Output: mask logits (N, 1, H, W) and face (N, 3, H, W)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        widths = [min(config.base_channels * 2**i, config.max_channels) for i in range(config.depth + 1)]
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12, widths[0], 3, 1, 1), nn.LeakyReLU(0.2, True)
        )
        self.down = nn.ModuleList(
            _conv_block(widths[i], widths[i + 1], stride=2) for i in range(config.depth)
        )
        self.middle = nn.Sequential(*(_ResBlock(widths[-1]) for _ in range(config.bottleneck_blocks)))
        self.up = nn.ModuleList(_Up(widths[i + 1], widths[i]) for i in reversed(range(config.depth)))
        # 4 output channels (mask logit + RGB) per pixel of the 256 grid, folded back by the shuffle.
        self.head = nn.Sequential(nn.Conv2d(widths[0] + 12, 4 * 4, 3, 1, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        folded = F.pixel_unshuffle(x, 2)
        h = self.stem(x)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        h = self.middle(skips.pop())
        for up in self.up:
            h = up(h, skips.pop())
        out = self.head(torch.cat([h, folded], dim=1))
        return out[:, :1], torch.tanh(out[:, 1:])


class UNet256(nn.Module):
    """The original pix2pix U-Net-256 generator (8 downsamplings, ngf 64, dropout in the decoder)."""

    def __init__(self, ngf: int = 64) -> None:
        super().__init__()
        w = [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8, ngf * 8, ngf * 8, ngf * 8]
        self.down = nn.ModuleList()
        c_in = 3
        for i, c in enumerate(w):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=False))
            if 0 < i < len(w) - 1:
                layers.append(nn.BatchNorm2d(c))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(len(w))):
            c_out = 3 if i == 0 else w[i - 1]
            c_up_in = w[i] if i == len(w) - 1 else w[i] * 2
            layers = [nn.ReLU(True), nn.ConvTranspose2d(c_up_in, c_out, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
                if len(w) - 5 < i < len(w) - 1:
                    layers.append(nn.Dropout(0.5))
            else:
                layers.append(nn.Tanh())
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.up[0](skips.pop())
        for up in self.up[1:]:
            x = up(torch.cat([x, skips.pop()], dim=1))
        return None, x


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN on (condition, image) pairs: one real/fake logit per overlapping patch."""

    def __init__(self, in_channels: int = 6, ndf: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            _conv_block(ndf, ndf * 2, stride=2),
            _conv_block(ndf * 2, ndf * 4, stride=2),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 1, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 1),
        )

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1))


def build_generator(config: GeneratorConfig) -> nn.Module:
    if config.arch == "mask_aware_unet":
        return MaskAwareUNet(config)
    if config.arch == "unet256":
        return UNet256()
    raise ValueError(f"unknown generator arch {config.arch!r}")


@torch.inference_mode()
def run_generator(
    generator: nn.Module, crops: np.ndarray, device: torch.device | str = "cpu", mirror_average: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """(N, 256, 256, 3) uint8 crops -> mask probabilities (N, 256, 256) or None for a generator
    without a mask output, and generated faces (N, 256, 256, 3) uint8.

    `mirror_average` also runs the mirrored crops and averages both predictions (mirrored back):
    twice the generator time for a steadier mask and face.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    if mirror_average:
        x = torch.cat([x, x.flip(-1)])
    mask_logits, face = generator(x)
    if mirror_average:
        n = len(crops)
        face = (face[:n] + face[n:].flip(-1)) / 2
        mask_logits = None if mask_logits is None else (mask_logits[:n] + mask_logits[n:].flip(-1)) / 2
    faces = face.float().add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    probs = None if mask_logits is None else torch.sigmoid(mask_logits.float())[:, 0].cpu().numpy()
    return probs, faces


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


def save_generator(
    path: Path, generator: nn.Module, config: GeneratorConfig, meta: dict | None = None
) -> None:
    """Weights in half precision (small to ship) plus the config needed to rebuild the network."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in generator.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(config), "meta": meta or {}, "state_dict": state}, path)


def read_generator(path: Path) -> tuple[GeneratorConfig, dict[str, torch.Tensor], dict]:
    """Config, float32 training-form weights (batch norm not fused) and meta of a saved generator."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    return GeneratorConfig.from_dict(ckpt["config"]), state, ckpt.get("meta", {})


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, GeneratorConfig, dict]:
    """An eval-mode generator from a file written by `save_generator`."""
    config, state, meta = read_generator(path)
    generator = build_generator(config)
    generator.load_state_dict(state)
    return fuse_batchnorm(generator.eval()).to(device), config, meta
