"""Training on a handful of real faces: losses go down, checkpoints resume, DDP runs on gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qmask.model import load_generator
from tests.conftest import REPO, UTKFACE
from training.landmarks import compute_landmarks, list_images
from training.train import TrainConfig, learning_rate, train

TINY = REPO / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_landmarks(tmp_path_factory) -> Path:
    names, meshes = compute_landmarks(list_images(UTKFACE)[:6])
    path = tmp_path_factory.mktemp("landmarks") / "tiny.npz"
    np.savez_compressed(path, names=np.array(names), meshes=meshes)
    return path


def tiny_config(out: Path, landmarks: Path, **overrides) -> TrainConfig:
    data = {
        "faces_dir": str(UTKFACE),
        "landmarks": str(landmarks),
        "templates_dir": str(REPO.parent / "shared" / "data" / "mask-templates"),
    }
    return TrainConfig.from_yaml(TINY, {"out_dir": str(out), "data": data, **overrides})


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss(tmp_path, tiny_landmarks):
    # Two faces, no augmentation randomness in the order: the generator must fit them.
    out = tmp_path / "run"
    cfg = tiny_config(out, tiny_landmarks, steps=30, limit=2, batch_size=2, lr=0.002, sample_every=30)
    exported = train(cfg)
    log = read_log(out)
    first, last = log[0], log[-1]
    assert last["l1"] < first["l1"] * 0.8, (first, last)
    assert last["mask"] < first["mask"]
    assert (out / "samples" / "step_000030.png").is_file()
    generator, gen_cfg, meta = load_generator(exported)
    assert gen_cfg.arch == "mask_aware_unet" and meta["steps"] == 30
    mask_logits, face = generator(torch.zeros(1, 3, 256, 256))
    assert mask_logits.shape == (1, 1, 256, 256) and face.shape == (1, 3, 256, 256)


def test_resume_continues_from_the_checkpoint(tmp_path, tiny_landmarks, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, tiny_landmarks, steps=2))
    train(tiny_config(out, tiny_landmarks, steps=4))
    assert "resumed from" in capsys.readouterr().out
    steps = [r["step"] for r in read_log(out)]
    assert steps == [1, 2, 3, 4]


def test_baseline_config_trains_a_plain_pix2pix(tmp_path, tiny_landmarks):
    out = tmp_path / "baseline"
    cfg = tiny_config(out, tiny_landmarks, steps=1, generator={"arch": "unet256"}, discriminator_channels=8)
    generator, gen_cfg, _ = load_generator(train(cfg))
    assert gen_cfg.arch == "unet256"
    mask_logits, face = generator(torch.zeros(1, 3, 256, 256))
    assert mask_logits is None and face.shape == (1, 3, 256, 256)


def test_ddp_with_two_cpu_processes_on_gloo(tmp_path, tiny_landmarks):
    out = tmp_path / "ddp"
    data = (
        f"data={{faces_dir: '{UTKFACE}', landmarks: '{tiny_landmarks}', "
        f"templates_dir: '{REPO.parent / 'shared' / 'data' / 'mask-templates'}'}}"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.train",
        "--config",
        str(TINY),
        "--set",
        f"out_dir={out}",
        "steps=3",
        "threads=1",
        data,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    log = read_log(out)
    assert log[-1]["step"] == 3
    assert (out / "generator.pt").is_file()


def test_learning_rate_is_constant_then_decays_linearly_to_zero_over_the_budget():
    cfg = TrainConfig(steps=1000, max_minutes=10, lr=1e-3, lr_decay_from=0.5)
    assert learning_rate(cfg, 100, 60) == 1e-3
    assert learning_rate(cfg, 750, 60) == pytest.approx(0.5e-3)  # steps run out first
    assert learning_rate(cfg, 10, 450) == pytest.approx(0.5e-3)  # wall clock runs out first
    assert learning_rate(cfg, 1000, 60) == 0.0
    assert learning_rate(TrainConfig(lr=1e-3, lr_decay_from=None), 999, 1e6) == 1e-3
