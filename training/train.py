"""Train one stage of a QMask model: the segmenter or the inpainter.

    python -m training.train --config training/configs/cpu_segmenter.yaml
    torchrun --nproc_per_node 2 -m training.train --config training/configs/cpu_inpainter.yaml

One YAML file sets every field of `TrainConfig` (see training/configs/); `stage` says which
network it trains. Its sections (`data`, `loss`, `discriminator`, `network`) are configs of their
own; `--set` overrides a field, a section's with a dotted key (`--set steps=20
data.colour_jitter=0.5 discriminator.warmup=100`). A run folder gets `config.yaml`, `log.jsonl`
(losses, images/s), sample grids `samples/step_*.png`, `checkpoint.pt` (resumed automatically when
the run is started again with the same settings; only the budget and logging may change) and the
stage's weights `STAGE.pt` (with `ema_decay`, their average over the steps) with the whole config
and the git commit it was trained from (an inpainter's run also `discriminator.pt`, for a later
fine-tune to start its critic from).
`python -m training.export` joins a segmenter and an inpainter into a shippable model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from qmask.model import (
    INPAINTER,
    SEGMENTER,
    UNetConfig,
    bf16_autocast,
    count_parameters,
    read_networks,
    save_networks,
    supports_bf16,
)
from training.data import DataConfig, HoleDataset, MaskedFaceDataset, config_from_dict
from training.masks import MaskRenderer
from training.pack import FacePack
from training.stages import DiscriminatorConfig, InpainterStep, LossConfig, SegmenterStep

DEFAULT_NETWORKS = {"segmenter": SEGMENTER, "inpainter": INPAINTER}


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "inpainter"  # or "segmenter"
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
    limit: int | None = None  # train on the first N faces of the pack only (tests, smoke runs)
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    # A model file (a shipped model or a stage's export) whose weights for this stage to start
    # from instead of random ones; same network config. Ignored when the run resumes.
    init_from: str | None = None
    # Inpainter: erase every crop pixel beyond the photo too. There the crop is the photo's mirror
    # image, and below a hole that ends inside the crop it showed the face's own mouth and chin
    # upside down, which the generator learnt to copy; in a real photo that mirror shows the mask.
    # Every inpainter from model 2.4 on was trained with it; the pipeline reads it from the model
    # file's training record and erases the same at inference.
    erase_outside_photo: bool = True
    # bf16 autocast for the networks' forward passes. None: where the device computes bf16
    # natively (`qmask.model.supports_bf16`; on this 2-core EPYC an inpainter step takes 1.36 s
    # instead of 2.26 s at the same losses); elsewhere autocast is slower than fp32.
    bf16: bool | None = None
    network: UNetConfig | None = None  # None: the stage's default (qmask.model)
    # VGG16's convs as an .npz (python -m training.perceptual) instead of the asset file, for
    # machines that cannot take the whole file along (a lent GPU machine): the inpainter's
    # perceptual loss, a "vgg16" segmenter's encoder.
    perceptual_weights: str | None = None
    # Keep an exponential moving average of the trained stage's weights with this decay per step
    # (None: off) and export it instead of the last step's weights. A GAN's generator wanders from
    # step to step; the average keeps what the steps agree on (as StyleGAN and most diffusion
    # models ship). It starts at the initial weights, so a fine-tune's average leans on them early.
    ema_decay: float | None = None
    # Keep the trained stage's BatchNorm layers normalising with the running statistics they start
    # with (init_from's) and leave those as they are; their scales and shifts still learn. Every
    # segmenter fine-tune since 2.8 lost real masks it had found (1462's paisley print no longer
    # edited), and a fine-tune's weights with the started-from statistics put back found 1462 again;
    # trained with them held (cpu_segmenter_frozen_stats.yaml), the weights still lost it (see
    # docs/results.md, "Segmenter fine-tunes after 3.7").
    freeze_batchnorm_stats: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Inpainter only.
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    @classmethod
    def from_yaml(cls, path: Path, overrides: dict | None = None) -> TrainConfig:
        """The config in the YAML file at `path` with `overrides`: a key replaces that field (a
        whole section, given a dict), a dotted key (`data.colour_jitter`) one field of a section."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        for key, value in (overrides or {}).items():
            *sections, name = key.split(".")
            target = raw
            for section in sections:
                if target.get(section) is None:
                    target[section] = {}
                target = target[section]
                if not isinstance(target, dict):
                    raise ValueError(f"unknown key {key}: {section} is not a section")
            target[name] = value
        if raw.get("network") is not None:
            raw["network"] = config_from_dict(UNetConfig, raw["network"], "network")
        if "data" in raw:
            raw["data"] = DataConfig.from_dict(raw["data"])
        for section, config in (("loss", LossConfig), ("discriminator", DiscriminatorConfig)):
            if section in raw:
                raw[section] = config_from_dict(config, raw[section], section)
        if "betas" in raw:
            raw["betas"] = tuple(raw["betas"])
        return config_from_dict(cls, raw, f"{path}")

    @property
    def network_config(self) -> UNetConfig:
        return self.network or DEFAULT_NETWORKS[self.stage]


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


def build_dataset(cfg: TrainConfig) -> Dataset:
    pack = FacePack.load(Path(cfg.data.pack), cfg.limit)
    if cfg.stage == "segmenter":
        templates = Path(cfg.data.templates_dir) if cfg.data.templates_dir else None
        renderer = MaskRenderer(
            templates,
            split="train",
            style_weights=cfg.data.mask_styles,
            template_share=cfg.data.template_share,
            both_ears=cfg.data.both_ears,
            print_faces=lambda rng: pack.image(rng.integers(len(pack))),
        )
        return MaskedFaceDataset(pack, renderer, cfg.data, seed=cfg.seed)
    return HoleDataset(pack, cfg.data, seed=cfg.seed)


def build_step(cfg: TrainConfig) -> SegmenterStep | InpainterStep:
    vgg = Path(cfg.perceptual_weights) if cfg.perceptual_weights else None
    if cfg.stage == "segmenter":
        critic = cfg.discriminator
        if critic.warmup or critic.init_from or critic.known_only:
            raise ValueError(
                "discriminator.warmup, .init_from and .known_only are for the inpainter: the segmenter has "
                "no discriminator"
            )
        return SegmenterStep(cfg.network_config, cfg.loss, vgg)
    if cfg.stage == "inpainter":
        return InpainterStep(
            cfg.network_config,
            cfg.loss,
            cfg.discriminator,
            seed=cfg.seed,
            vgg_weights=vgg,
            erase_outside_photo=cfg.erase_outside_photo,
        )
    raise ValueError(f"unknown stage {cfg.stage!r}: segmenter or inpainter")


def learning_rate(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """The configured rate, decayed linearly to zero over the last part of the budget."""
    progress = step / cfg.steps
    if cfg.max_minutes is not None:
        progress = max(progress, elapsed_s / (cfg.max_minutes * 60))
    if cfg.lr_decay_from is None or progress <= cfg.lr_decay_from:
        return cfg.lr
    return cfg.lr * max(0.0, 1 - progress) / (1 - cfg.lr_decay_from)


@torch.no_grad()
def update_average(average: torch.nn.Module, network: torch.nn.Module, decay: float) -> None:
    """Move `average`'s weights and float buffers (BatchNorm's running statistics, which must suit
    the averaged weights) toward `network`'s by 1 - decay; counters are copied."""
    mine, theirs = average.state_dict(), network.state_dict()
    for name, value in mine.items():
        if value.is_floating_point():
            value.lerp_(theirs[name], 1 - decay)
        else:
            value.copy_(theirs[name])


# What a run may be resumed with changed: its budget and bookkeeping, not what it learns from or how.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "max_minutes",
        "threads",
        "num_workers",
        "out_dir",
        "perceptual_weights",
        "log_every",
        "sample_every",
        "checkpoint_every",
    }
)


def check_resumable(out: Path, config_record: dict) -> None:
    """Refuse to resume the run in `out` with other settings than it was started with: the
    checkpoint would silently carry on the old run (its weights, not `init_from`'s) under the new
    settings. Raising the budget (`max_minutes`, `steps`) is fine."""
    saved_path = out / "config.yaml"
    if not (out / "checkpoint.pt").exists() or not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    changed = sorted(
        key
        for key in saved.keys() | config_record.keys()
        if key not in RESUMABLE_CHANGES and saved.get(key) != config_record.get(key)
    )
    if changed:
        raise ValueError(
            f"{out} holds a run started with other settings ({', '.join(changed)} differ): resume it "
            "with its own config.yaml, or give this run a new out_dir"
        )


def git_commit() -> str | None:
    """The commit the code was trained from, with "+changes" when the tree differed from it."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """Images and planes (N, C, H, W) in the networks' layout; other tensors as they are."""
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def _batches(
    dataset: Dataset, sampler: DistributedSampler | None, cfg: TrainConfig, epoch: int, done: int = 0
) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
    """Endless (epoch, batches done in it, batch) stream; every epoch draws new masks and holes and
    a new order. A resumed run starts `done` batches into its epoch, past the faces it has seen."""
    while True:
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        order = sampler or RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        loader = DataLoader(
            dataset,
            cfg.batch_size,
            sampler=list(order)[done * cfg.batch_size :],
            num_workers=cfg.num_workers,
            drop_last=len(dataset) >= cfg.batch_size * (dist.get_world_size() if sampler else 1),
        )
        for batch in loader:
            done += 1
            yield epoch, done, batch
        epoch, done = epoch + 1, 0


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training of one stage; returns the path of its exported weights."""
    rank, world, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    main_process = rank == 0
    config_record = json.loads(json.dumps(asdict(cfg) | {"network": asdict(cfg.network_config)}))
    commit = git_commit()
    check_resumable(out, config_record)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config_record))

    dataset = build_dataset(cfg)
    sampler = DistributedSampler(dataset, world, rank, seed=cfg.seed) if world > 1 else None
    step_fn = build_step(cfg).to(device)
    # Channels-last, as at inference (`qmask.model.load_model`): oneDNN's convs run on that layout
    # natively, a training step on this CPU took 12% less time than in NCHW.
    networks = {
        name: net.to(device, memory_format=torch.channels_last) for name, net in step_fn.networks.items()
    }
    optimizers = {
        name: torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas) for name, net in networks.items()
    }

    step, start_epoch, start_done, elapsed_before, images_before = 0, 0, 0, 0.0, 0
    ckpt_path = out / "checkpoint.pt"
    if cfg.init_from and not ckpt_path.exists():
        shipped, _ = read_networks(Path(cfg.init_from))
        if cfg.stage not in shipped:
            raise ValueError(f"init_from {cfg.init_from} has no {cfg.stage} stage")
        shipped_config, shipped_state = shipped[cfg.stage]
        if shipped_config != cfg.network_config:
            raise ValueError(f"init_from {cfg.init_from} is a {shipped_config}, not {cfg.network_config}")
        networks[cfg.stage].load_state_dict(shipped_state)
        if main_process:
            print(f"initialised the {cfg.stage} from {cfg.init_from}")
    critic_from = cfg.discriminator.init_from
    if critic_from and not ckpt_path.exists():
        state = torch.load(critic_from, map_location="cpu", weights_only=True)
        try:
            networks["discriminator"].load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as error:
            raise ValueError(
                f"discriminator.init_from {critic_from} does not fit a discriminator of "
                f"{cfg.discriminator.channels} channels: {str(error).splitlines()[-1].strip()}"
            ) from None
        if main_process:
            print(f"initialised the discriminator from {critic_from}")
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        for name in networks:
            networks[name].load_state_dict(ckpt["networks"][name])
            optimizers[name].load_state_dict(ckpt["optimizers"][name])
        step, start_epoch = ckpt["step"], ckpt["epoch"]
        # The position counts one process's batches of its share of the epoch, so it holds for as
        # many processes only; otherwise (and for checkpoints older than 2026-12-06, which lack it)
        # the epoch starts over.
        if ckpt.get("processes") == world:
            start_done = ckpt.get("batches_done_in_epoch", 0)
        # The wall-clock budget counts the time before the restart too.
        elapsed_before = ckpt.get("elapsed_s", 0.0)
        # Faces seen so far: a run may be resumed with another number of processes.
        images_before = ckpt.get("images_seen", step * cfg.batch_size * world)
        if main_process:
            print(f"resumed from {ckpt_path} at step {step}")
    if cfg.freeze_batchnorm_stats:
        for layer in networks[cfg.stage].modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.eval()
    # The average is kept where it is saved: the main process (every rank's weights are the same).
    ema = None
    if cfg.ema_decay is not None and main_process:
        ema = copy.deepcopy(networks[cfg.stage]).requires_grad_(False)
        if ckpt_path.exists() and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
    # What the step calls (DDP wraps each network across processes); `networks` are the bare ones.
    ddp_networks = {n: DistributedDataParallel(net) if world > 1 else net for n, net in networks.items()}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def checkpoint(step: int, epoch: int, done: int, elapsed: float) -> None:
        if main_process:
            state = {
                "networks": {name: net.state_dict() for name, net in networks.items()},
                "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
                "step": step,
                "epoch": epoch,
                "batches_done_in_epoch": done,
                "elapsed_s": elapsed,
                "images_seen": images_before + seen,
                # What wrote this checkpoint, for a model exported from it (its card).
                "device": device_name,
                "processes": world,
                "commit": commit,
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            torch.save(state, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)  # a kill mid-save keeps the last one

    bf16 = supports_bf16(device) if cfg.bf16 is None else cfg.bf16
    autocast = bf16_autocast(device, bf16)
    if main_process:
        sizes = ", ".join(f"{name} {count_parameters(net) / 1e6:.2f}M" for name, net in networks.items())
        where = f"{world} process(es) on {device_name}, " + ("bf16 autocast" if bf16 else "fp32")
        print(f"{cfg.stage}: {sizes} parameters; {len(dataset)} faces, {where}")
    started = time.time() - elapsed_before
    log = (out / "log.jsonl").open("a") if main_process else None
    bar = tqdm(
        total=cfg.steps, initial=step, desc=f"train {cfg.stage}", unit="step", disable=not main_process
    )
    seen = 0
    epoch, done = start_epoch, start_done
    # A run resumed without a larger budget exports again and trains no further step.
    spent = cfg.max_minutes is not None and elapsed_before > cfg.max_minutes * 60
    batches = iter(()) if step >= cfg.steps or spent else _batches(dataset, sampler, cfg, epoch, done)
    for epoch, done, batch in batches:
        lr = learning_rate(cfg, step, time.time() - started)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        batch = {k: _channels_last(v.to(device, non_blocking=True)) for k, v in batch.items()}
        frozen = {"generator_frozen": True} if step < cfg.discriminator.warmup else {}
        metrics = step_fn(batch, ddp_networks, optimizers, autocast, **frozen)
        if ema is not None:
            update_average(ema, networks[cfg.stage], cfg.ema_decay)
        step += 1
        seen += len(batch["image"]) * world
        bar.update(1)
        elapsed = time.time() - started
        if main_process and (step % cfg.log_every == 0 or step == cfg.steps):
            record = {"step": step, **metrics, "lr": lr, "elapsed_s": round(elapsed, 1)}
            record["images_per_s"] = seen / max(elapsed - elapsed_before, 1e-6)
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", ips=f"{record['images_per_s']:.1f}")
        if main_process and step % cfg.sample_every == 0:
            (out / "samples").mkdir(exist_ok=True)
            Image.fromarray(step_fn.samples()).save(out / "samples" / f"step_{step:06d}.png")
        if step % cfg.checkpoint_every == 0:
            checkpoint(step, epoch, done, elapsed)
        out_of_time = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
        if world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if step >= cfg.steps or out_of_time:
            break
    bar.close()
    checkpoint(step, epoch, done, time.time() - started)
    exported = out / f"{cfg.stage}.pt"
    if main_process:
        meta = {
            "training": {
                "steps": step,
                "images_seen": images_before + seen,
                "minutes": round((time.time() - started) / 60, 1),
                "device": device_name,
                "processes": world,
                "commit": commit,
                "config": config_record,
            }
        }
        save_networks(exported, {cfg.stage: (ema if ema is not None else networks[cfg.stage]).cpu()}, meta)
        if "discriminator" in networks:  # for a later fine-tune's `discriminator.init_from`
            critic = networks["discriminator"].cpu().state_dict()
            torch.save(
                {k: v.half() if v.is_floating_point() else v for k, v in critic.items()},
                out / "discriminator.pt",
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
        nargs="+",
        action="extend",  # `--set a=1 --set b=2` keeps both (the last alone would win otherwise)
        default=[],
        metavar="KEY=VALUE",
        help="override fields, a section's with a dotted key, e.g. --set steps=20 data.colour_jitter=0.5",
    )
    args = parser.parse_args()
    malformed = [item for item in args.set if "=" not in item]
    if malformed:
        parser.error(f"--set takes KEY=VALUE, not {' '.join(malformed)}")
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    try:
        cfg = TrainConfig.from_yaml(args.config, overrides)
    except ValueError as err:  # a key the config does not take
        parser.error(str(err))
    train(cfg)


if __name__ == "__main__":
    main()
