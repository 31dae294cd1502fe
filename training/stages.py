"""What one training step does for each stage of the model; `training.train` runs the loop.

- `SegmenterStep`: BCE + Dice of the predicted mask region against the drawn mask's coverage, the
  BCE optionally weighted up on the mask's thin parts (ear loops, straps).
- `InpainterStep`: Pix2PixHD's losses for the generator that paints the hole: L1 inside the hole
  (and, weaker, outside it), an L1 of the hole's 8 px square averages (the low-pass L1, the largest
  weight since model 2.9), a perceptual loss on VGG16 features of the lower face, a multi-scale
  LSGAN PatchGAN and feature matching on the discriminators' features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qmask.model import Inpainter, MultiScaleDiscriminator, Segmenter, UNetConfig, paint, tensor_to_images
from training.perceptual import PerceptualLoss, load_vgg_convs

# The lower face in the crop (rows, columns): the perceptual loss and the fine discriminator
# look here, where the hole is; elsewhere the composite is the photo itself.
LOWER_FACE = (slice(96, 224), slice(64, 192))
# VGG16 on this 2-core machine costs more than the generator's step (3.2 s forward and backward
# for 8 windows of 128 px up to relu3_3, one core), so each step scores one random window of this
# side within the lower face, the same for the whole batch.
PERCEPTUAL_WINDOW = 64


@dataclass(frozen=True)
class LossConfig:
    # Segmenter
    bce: float = 1.0
    dice: float = 1.0
    # Extra BCE weight on the drawn mask's parts narrower than `thin_px` (`thin_parts`: ear loops,
    # straps, a thin rim): 114 pixels a pair on average (a tenth of the pairs over 319) beside 9,260
    # of mask, which the plain BCE and the Dice hardly see, while on real photos a loop left beside
    # the cheek is the commonest remnant. 0: off.
    thin: float = 0.0
    thin_px: int = 7
    # Inpainter. `l1` is inside the hole; `l1_valid` outside it, where the output is never shown but
    # must stay the photo: left free, the whole output drifted in colour (green, then darker faces).
    l1: float = 10.0
    l1_valid: float = 2.0
    # L1 of the composite and the truth both averaged over `lowpass_px` squares (0: off): the colour
    # and shading that PSNR mostly measures, without the pull of pixel L1 toward the average (blurred)
    # detail that the perceptual and adversarial terms are there to paint.
    l1_lowpass: float = 0.0
    lowpass_px: int = 8
    # The same square averages' squared error (0: off). PSNR is a squared error: one square painted
    # far off (a dark moustache, a mouth shaded wrong) costs it more than many a little off, which
    # the L1 above weighs alike.
    l2_lowpass: float = 0.0
    perceptual: float = 10.0
    gan: float = 1.0
    feature_matching: float = 10.0
    # Score the mean of the faces painted for the crop and for its mirror image, which is what the
    # pipeline shows (`PipelineConfig.mirror_inpaint`), instead of one pass: each pass is otherwise
    # trained to be a whole sharp face, and the mean of two differing sharp faces is softer than
    # either. Twice the generator's cost per step (a third more per step on this 2-core CPU). From
    # 3.5 with its recipe it moved along the PSNR/LPIPS front toward LPIPS (87 minutes: 24.94 / LPIPS
    # 0.0947 against 25.03 / 0.0960; cpu_inpainter_mirror_average.yaml, docs/results.md).
    mirror_average: bool = False


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The inpainter's critic: the multi-scale PatchGAN its adversarial and feature-matching losses
    come from (the segmenter has none)."""

    channels: int = 64
    # For this many steps only the discriminator learns. A fine-tune (`TrainConfig.init_from`)
    # without `init_from` below starts with a fresh discriminator, whose first verdicts are noise;
    # the generator should not chase them.
    warmup: int = 0
    # The weights to start from (the `discriminator.pt` a run writes beside its inpainter), with the
    # same `channels`; None: a fresh one. Run folders do not outlive a machine, so without it every
    # fine-tune begins against a critic that knows nothing yet and spends `warmup` steps teaching
    # it. Ignored when the run resumes.
    init_from: str | None = None
    # Judge only the crop's pixels whose truth is known, not the mirrored surroundings. A true crop
    # is mirror-symmetric across the photo's edge and a painted one is not; judged there, the
    # generator learnt to paint horizontal stripes along the edge (the streaks beside a cheek on real
    # photos; `benchmarks.edge_stripes`). 45 minutes with it from the 3.2 candidate: the stripes
    # halved, frozen bench LPIPS 0.0979 to 0.0935 but PSNR 24.85 to 24.63; 75 minutes with twice the
    # low-pass L1 (cpu_inpainter_critic_lowpass.yaml): 24.70, LPIPS 0.0927; with the critic's losses
    # at half weight, 30 minutes beat 3.2 on all five (24.96, LPIPS 0.0969; cpu_inpainter_3.3.yaml,
    # model 3.3; docs/results.md, "The inpainter's stripes"). Off by default, as every inpainter
    # before 3.3 was trained.
    known_only: bool = False


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)).mean()


def thin_parts(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels of a 0/1 mask (N, 1, H, W) in parts narrower than `width` (odd) pixels: what an
    opening with a `width` square takes away."""
    pad = width // 2
    eroded = -F.max_pool2d(-mask, width, stride=1, padding=pad)
    opened = F.max_pool2d(eroded, width, stride=1, padding=pad)
    return mask * (1 - opened)


def segmenter_bce(logits: torch.Tensor, hard: torch.Tensor, loss: LossConfig) -> torch.Tensor:
    """BCE of the segmenter's logits against the 0/1 mask (N, 1, H, W), its thin parts weighted
    1 + `loss.thin`."""
    weight = 1 + loss.thin * thin_parts(hard, loss.thin_px) if loss.thin else None
    return F.binary_cross_entropy_with_logits(logits, hard, weight=weight)


def lowpass_errors(
    composite: torch.Tensor, image: torch.Tensor, painted: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 and mean squared error of `size`-pixel square averages of composite and truth
    (N, 3, H, W), over the squares the painted area (N, 1, H, W) touches, weighted by how much of
    each it covers: detail that averages out within a square costs nothing, a colour or shading
    offset costs its size."""
    weight = F.avg_pool2d(painted, size)
    error = (F.avg_pool2d(composite, size) - F.avg_pool2d(image, size)).abs()
    total = (3 * weight.sum()).clamp_min(1e-6)
    return (error * weight).sum() / total, (error.square() * weight).sum() / total


def _grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    return np.vstack([np.hstack(row) for row in rows])


def _tint(image: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """The image with `plane` (HxW in [0, 1]) shown in red."""
    red = np.array([255, 40, 40], np.float32)
    return np.rint(image * (1 - 0.6 * plane[..., None]) + red * 0.6 * plane[..., None]).astype(np.uint8)


class SegmenterStep:
    """Trains `networks["segmenter"]`; a "vgg16" encoder starts from ImageNet's VGG16 (the asset, or
    the .npz `vgg_weights`)."""

    def __init__(self, config: UNetConfig, loss: LossConfig, vgg_weights: Path | None = None) -> None:
        segmenter = Segmenter(config)
        if config.encoder == "vgg16":
            load_vgg_convs(segmenter.net.encoder, vgg_weights)
        self.networks: dict[str, nn.Module] = {"segmenter": segmenter}
        self.loss = loss
        self.last: dict[str, torch.Tensor] = {}

    def to(self, device: torch.device) -> SegmenterStep:
        return self

    def __call__(
        self,
        batch: dict[str, torch.Tensor],
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        autocast: torch.autocast,
    ) -> dict[str, float]:
        image, alpha = batch["image"], batch["alpha"]
        hard = (alpha > 0.5).float()
        with autocast:
            logits = models["segmenter"](image).float()
        bce = segmenter_bce(logits, hard, self.loss)
        dice = dice_loss(logits, hard)
        loss = self.loss.bce * bce + self.loss.dice * dice
        optimizers["segmenter"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["segmenter"].step()
        self.last = {"image": image, "prob": torch.sigmoid(logits.detach()), "truth": hard}
        with torch.no_grad():
            predicted = logits > 0
            union = (predicted | (hard > 0)).sum().clamp_min(1)
            iou = ((predicted & (hard > 0)).sum() / union).item()
        return {"loss": loss.item(), "bce": bce.item(), "dice": dice.item(), "iou": iou}

    def samples(self, n: int = 6) -> np.ndarray:
        """Rows: input, predicted mask, drawn mask."""
        n = min(n, len(self.last["image"]))
        images = list(tensor_to_images(self.last["image"][:n]))
        return _grid(
            [
                images,
                [_tint(im, self.last["prob"][i, 0].cpu().numpy()) for i, im in enumerate(images)],
                [_tint(im, self.last["truth"][i, 0].cpu().numpy()) for i, im in enumerate(images)],
            ]
        )


def _lsgan(outputs: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    target = 1.0 if real else 0.0
    return sum(F.mse_loss(features[-1], torch.full_like(features[-1], target)) for features in outputs) / len(
        outputs
    )


def _feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminators' inner features of the composite and of the truth."""
    total, count = 0.0, 0
    for fake_features, real_features in zip(fake, real, strict=True):
        for f, r in zip(fake_features[:-1], real_features[:-1], strict=True):
            total = total + F.l1_loss(f, r.detach())
            count += 1
    return total / count


class InpainterStep:
    """Trains `networks["inpainter"]` against `networks["discriminator"]`.

    The discriminator judges (erased crop + hole, image) pairs: the truth, or the composite (the
    painted face inside the hole, the photo elsewhere: what the pipeline shows, less the feather
    beyond the hole where it blends the two), with `DiscriminatorConfig.known_only` only where the
    truth is known.
    """

    def __init__(
        self,
        config: UNetConfig,
        loss: LossConfig,
        discriminator: DiscriminatorConfig,
        seed: int,
        vgg_weights: Path | None,
        erase_outside_photo: bool,
    ) -> None:
        self.erase_outside_photo = erase_outside_photo
        self.judge_known_only = discriminator.known_only
        self.networks: dict[str, nn.Module] = {
            "inpainter": Inpainter(config),
            "discriminator": MultiScaleDiscriminator(
                config.in_channels + 3, LOWER_FACE, ndf=discriminator.channels
            ),
        }
        self.perceptual = PerceptualLoss(vgg=vgg_weights)
        self.loss = loss
        self.last: dict[str, torch.Tensor] = {}
        self.window_rng = np.random.default_rng(seed)

    def to(self, device: torch.device) -> InpainterStep:
        self.perceptual.to(device)
        return self

    def __call__(
        self,
        batch: dict[str, torch.Tensor],
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        autocast: torch.autocast,
        generator_frozen: bool = False,
    ) -> dict[str, float]:
        """One discriminator step, then one generator step unless `generator_frozen` (a fine-tune's
        first steps, while a fresh discriminator learns what the generator's faces look like)."""
        image, hole, inside, known = batch["image"], batch["hole"], batch["inside"], batch["known"]
        hole = (hole > 0.5).float()
        # What the generator gets erased: the hole, and with `erase_outside_photo` the mirrored
        # surroundings as well (see TrainConfig). Either way it is scored on the photo only.
        erased = torch.maximum(hole, (inside < 0.5).float()) if self.erase_outside_photo else hole
        condition = Inpainter.condition(image, erased)
        # Only pixels of the photo are painted in the composite: beyond its edge the crop is a
        # mirror image, no face to learn. Beyond a `tight_frame` cut the truth is known: the hole
        # is painted and scored there too.
        painted = hole * known
        # With `DiscriminatorConfig.known_only` the critic sees the known pixels only. Beyond the
        # photo's edge the crop is the photo's mirror image, so a true crop is mirror-symmetric across
        # that edge and a painted one is not; judged there, the generator learnt to paint the one
        # thing that stays symmetric whatever lies beyond: horizontal stripes along the edge
        # (`benchmarks.edge_stripes`).
        judged = (known > 0.5).float() if self.judge_known_only else torch.ones_like(known)
        generator, discriminator = models["inpainter"], models["discriminator"]
        with autocast:
            with torch.set_grad_enabled(not generator_frozen):
                face = paint(generator, image, erased, self.loss.mirror_average)
            composite = image + painted * (face - image)
            d_real = discriminator(condition, image * judged)
            d_fake = discriminator(condition, composite.detach() * judged)
            loss_d = 0.5 * (_lsgan(d_real, True) + _lsgan(d_fake, False))
        optimizers["discriminator"].zero_grad(set_to_none=True)
        loss_d.backward()
        optimizers["discriminator"].step()
        self.last = {"condition": condition.detach(), "composite": composite.detach(), "image": image}
        if generator_frozen:
            return {"loss": loss_d.item(), "loss_d": loss_d.item()}

        with autocast:
            d_fake = discriminator(condition, composite * judged)
            gan = _lsgan(d_fake, True)
            matching = _feature_matching(d_fake, [[f.detach() for f in fs] for fs in d_real])
        error = (face - image).abs()
        l1 = (error * painted).sum() / (3 * painted.sum()).clamp_min(1.0)
        valid = inside * (1 - hole)
        l1_valid = (error * valid).sum() / (3 * valid.sum()).clamp_min(1.0)
        l1_lowpass, l2_lowpass = lowpass_errors(composite, image, painted, self.loss.lowpass_px)
        rows, cols = self._perceptual_window()
        with autocast:
            perceptual = self.perceptual(composite[..., rows, cols], image[..., rows, cols]).float()
        cfg = self.loss
        loss_g = (
            cfg.l1 * l1
            + cfg.l1_valid * l1_valid
            + cfg.l1_lowpass * l1_lowpass
            + cfg.l2_lowpass * l2_lowpass
            + cfg.perceptual * perceptual
            + cfg.gan * gan
            + cfg.feature_matching * matching
        )
        optimizers["inpainter"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["inpainter"].step()
        return {
            "loss": loss_g.item(),
            "l1": l1.item(),
            "l1_valid": l1_valid.item(),
            "l1_lowpass": l1_lowpass.item(),
            "l2_lowpass": l2_lowpass.item(),
            "perceptual": perceptual.item(),
            "gan": gan.item(),
            "feature_matching": matching.item(),
            "loss_d": loss_d.item(),
        }

    def _perceptual_window(self) -> tuple[slice, slice]:
        rows, cols = LOWER_FACE
        y = int(self.window_rng.integers(rows.start, rows.stop - PERCEPTUAL_WINDOW + 1))
        x = int(self.window_rng.integers(cols.start, cols.stop - PERCEPTUAL_WINDOW + 1))
        return slice(y, y + PERCEPTUAL_WINDOW), slice(x, x + PERCEPTUAL_WINDOW)

    def samples(self, n: int = 6) -> np.ndarray:
        """Rows: what the inpainter sees (hole erased), the composite, the truth."""
        n = min(n, len(self.last["image"]))
        return _grid(
            [
                list(tensor_to_images(self.last["condition"][:n, :3])),
                list(tensor_to_images(self.last["composite"][:n])),
                list(tensor_to_images(self.last["image"][:n])),
            ]
        )
