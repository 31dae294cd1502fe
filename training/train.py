"""Train a QMask generator.

    python -m training.train --config training/configs/cpu.yaml
    torchrun --nproc_per_node 2 -m training.train --config training/configs/gpu.yaml

One YAML file sets every field of `TrainConfig` (see training/configs/). A run folder gets
`log.jsonl`, sample grids `samples/step_*.png`, `checkpoint.pt` (resumed automatically) and the
shippable `generator.pt` (half-precision weights plus the generator config).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from PIL import Image
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from qmask.model import (
    GeneratorConfig,
    PatchDiscriminator,
    build_generator,
    count_parameters,
    read_generator,
    save_generator,
)
from training.data import DataConfig, SyntheticMaskDataset, is_heldout, to_uint8
from training.landmarks import load_landmarks
from training.masks import MaskRenderer


@dataclass(frozen=True)
class LossConfig:
    l1: float = 100.0
    l1_inside_mask: float = 5.0  # extra weight of the L1 term where the mask was drawn
    mask: float = 10.0  # BCE + Dice of the predicted mask region (mask-aware generators only)
    gan: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000
    max_minutes: float | None = None  # stop (and save) after this much wall-clock time
    batch_size: int = 16  # per process
    lr: float = 2e-4
    # As in pix2pix: constant learning rate, then linear decay to zero over the rest of the budget
    # (steps or max_minutes, whichever ends first) from this fraction of it on. None: constant.
    lr_decay_from: float | None = 0.5
    betas: tuple[float, float] = (0.5, 0.999)
    num_workers: int = 1
    threads: int | None = None  # torch CPU threads per process
    limit: int | None = None  # train on the first N faces only (tests, smoke runs)
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    discriminator_channels: int = 64
    # A shipped generator (e.g. qmask/weights/default.pt) to start from instead of random weights;
    # its architecture must match `generator`. Ignored when the run resumes from its checkpoint.
    init_from: str | None = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    @classmethod
    def from_yaml(cls, path: Path, overrides: dict | None = None) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        raw.update(overrides or {})
        nested = {"generator": GeneratorConfig, "data": DataConfig, "loss": LossConfig}
        kwargs = {k: nested[k](**v) if k in nested else v for k, v in raw.items()}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)).mean()


def generator_outputs(
    generator: torch.nn.Module,
    masked: torch.Tensor,
    target: torch.Tensor,
    region: torch.Tensor,
    inside: torch.Tensor,
):
    """Mask logits (or None), raw face prediction and the composite the discriminator judges.

    Outside the photo (the stand-in surroundings) the composite is the truth, so the discriminator
    judges only pixels the generator is responsible for.
    """
    mask_logits, face = generator(masked)
    composite = face if mask_logits is None else region * face + (1 - region) * masked
    return mask_logits, face, inside * composite + (1 - inside) * target


def save_samples(path: Path, batch: dict[str, torch.Tensor], composite: torch.Tensor, n: int = 6) -> None:
    """Rows: masked input, output, truth."""
    n = min(n, composite.shape[0])
    rows = [
        np.hstack([to_uint8(t[i]) for i in range(n)]) for t in (batch["masked"], composite, batch["target"])
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack(rows)).save(path)


def setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device; torchrun sets RANK/WORLD_SIZE, a plain run is rank 0 of 1."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def build_dataset(cfg: TrainConfig) -> SyntheticMaskDataset:
    meshes = load_landmarks(Path(cfg.data.landmarks))
    names = sorted(n for n in meshes if not is_heldout(n))[: cfg.limit]
    renderer = MaskRenderer(Path(cfg.data.templates_dir) if cfg.data.templates_dir else None, split="train")
    return SyntheticMaskDataset(names, meshes, renderer, cfg.data, seed=cfg.seed)


def learning_rate(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """The configured rate, decayed linearly to zero over the last part of the budget."""
    progress = step / cfg.steps
    if cfg.max_minutes is not None:
        progress = max(progress, elapsed_s / (cfg.max_minutes * 60))
    if cfg.lr_decay_from is None or progress <= cfg.lr_decay_from:
        return cfg.lr
    return cfg.lr * max(0.0, 1 - progress) / (1 - cfg.lr_decay_from)


def _batches(dataset: SyntheticMaskDataset, sampler: DistributedSampler | None, cfg: TrainConfig, epoch: int):
    """Endless (epoch, batch) stream; every epoch draws new masks and a new order."""
    while True:
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        order = sampler or RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        loader = DataLoader(
            dataset,
            cfg.batch_size,
            sampler=order,
            num_workers=cfg.num_workers,
            drop_last=len(dataset) >= cfg.batch_size * (dist.get_world_size() if sampler else 1),
        )
        for batch in loader:
            yield epoch, batch
        epoch += 1


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the exported generator."""
    rank, world, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    main_process = rank == 0
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(asdict(cfg)))))

    dataset = build_dataset(cfg)
    sampler = DistributedSampler(dataset, world, rank, seed=cfg.seed) if world > 1 else None
    generator = build_generator(cfg.generator).to(device)
    discriminator = PatchDiscriminator(ndf=cfg.discriminator_channels).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)

    step, start_epoch, elapsed_before = 0, 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if cfg.init_from and not ckpt_path.exists():
        shipped_config, shipped_state, _ = read_generator(Path(cfg.init_from))
        if shipped_config != cfg.generator:
            raise ValueError(
                f"init_from {cfg.init_from} is a {shipped_config}, not the configured {cfg.generator}"
            )
        generator.load_state_dict(shipped_state)
        if main_process:
            print(f"initialised the generator from {cfg.init_from}")
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        generator.load_state_dict(ckpt["generator"])
        discriminator.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step, start_epoch = ckpt["step"], ckpt["epoch"]
        # The wall-clock budget counts the time before the restart too.
        elapsed_before = ckpt.get("elapsed_s", 0.0)
        if main_process:
            print(f"resumed from {ckpt_path} at step {step}")
    if world > 1:
        generator = DistributedDataParallel(generator)
        discriminator = DistributedDataParallel(discriminator)
    bare_generator = generator.module if world > 1 else generator

    def checkpoint(step: int, epoch: int, elapsed: float) -> None:
        if main_process:
            torch.save(
                {
                    "generator": bare_generator.state_dict(),
                    "discriminator": (discriminator.module if world > 1 else discriminator).state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "elapsed_s": elapsed,
                },
                ckpt_path,
            )

    # bf16 autocast on GPU only: CPU autocast is slower than fp32 for these convs.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    if main_process:
        print(
            f"generator {cfg.generator.arch}: {count_parameters(bare_generator) / 1e6:.2f}M parameters; "
            f"{len(dataset)} faces, {world} process(es) on {device}"
        )
    started = time.time() - elapsed_before
    log = (out / "log.jsonl").open("a") if main_process else None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not main_process)
    seen = 0
    for epoch, batch in _batches(dataset, sampler, cfg, start_epoch):
        lr = learning_rate(cfg, step, time.time() - started)
        for group in (*opt_g.param_groups, *opt_d.param_groups):
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        masked, target, alpha, inside = batch["masked"], batch["target"], batch["alpha"], batch["inside"]
        region = (alpha > 0).float()
        with autocast:
            mask_logits, face, composite = generator_outputs(generator, masked, target, region, inside)
            # Discriminator: real pairs vs generated pairs.
            d_real = discriminator(masked, target)
            d_fake = discriminator(masked, composite.detach())
            loss_d = 0.5 * (
                F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast:
            d_gen = discriminator(masked, composite)
            loss_gan = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            # Only pixels inside the photo count: its stand-in surroundings are no face to learn.
            weight = inside * (1 + cfg.loss.l1_inside_mask * region)
            loss_l1 = ((face.float() - target).abs() * weight).mean() / weight.mean().clamp_min(1e-6)
            loss_g = cfg.loss.l1 * loss_l1 + cfg.loss.gan * loss_gan
            loss_mask = torch.zeros((), device=device)
            if mask_logits is not None:
                # The whole crop (beyond the photo the mask is empty): a mask output left
                # untrained there would mark random pixels of wider photos as mask.
                hard = (alpha > 0.5).float()
                logits = mask_logits.float()
                loss_mask = F.binary_cross_entropy_with_logits(logits, hard) + dice_loss(logits, hard)
                loss_g = loss_g + cfg.loss.mask * loss_mask
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        step += 1
        seen += masked.shape[0] * world
        bar.update(1)
        elapsed = time.time() - started
        if main_process and (step % cfg.log_every == 0 or step == cfg.steps):
            record = {
                "step": step,
                "loss_g": loss_g.item(),
                "l1": loss_l1.item(),
                "mask": loss_mask.item(),
                "gan": loss_gan.item(),
                "loss_d": loss_d.item(),
                "images_per_s": seen / (elapsed - elapsed_before),
                "lr": lr,
                "elapsed_s": round(elapsed, 1),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(
                l1=f"{record['l1']:.4f}", mask=f"{record['mask']:.3f}", ips=f"{record['images_per_s']:.1f}"
            )
        if main_process and step % cfg.sample_every == 0:
            save_samples(out / "samples" / f"step_{step:06d}.png", batch, composite)
        if step % cfg.checkpoint_every == 0:
            checkpoint(step, epoch, elapsed)
        out_of_time = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
        if world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if step >= cfg.steps or out_of_time:
            break
    bar.close()
    checkpoint(step, epoch, time.time() - started)
    exported = out / "generator.pt"
    if main_process:
        save_generator(
            exported,
            bare_generator.cpu(),
            cfg.generator,
            meta={
                "steps": step,
                "images_seen": step * cfg.batch_size * world,
                "train_minutes": round((time.time() - started) / 60, 1),
                "seed": cfg.seed,
            },
        )
        log.close()
        print(f"exported {exported} after {step} steps")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return exported


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML file with TrainConfig fields")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override top-level fields, e.g. --set steps=20 out_dir=runs/smoke",
    )
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    train(TrainConfig.from_yaml(args.config, overrides))


if __name__ == "__main__":
    main()
