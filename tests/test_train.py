"""Training on a handful of real faces: losses go down, checkpoints resume, DDP runs on gloo."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from qmask.model import load_generator
from tests.conftest import REPO, UTKFACE
from training.landmarks import compute_landmarks, list_images
from training.train import TrainConfig, build_dataset, learning_rate, train

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


def test_init_from_starts_with_the_shipped_generator_weights(tmp_path, tiny_landmarks, capsys):
    shipped = train(tiny_config(tmp_path / "first", tiny_landmarks, steps=2))
    # lr 0: the generator keeps the weights it started from (batch-norm statistics still move).
    cfg = tiny_config(tmp_path / "second", tiny_landmarks, steps=1, lr=0.0, init_from=str(shipped))
    again = train(cfg)
    assert f"initialised the generator from {shipped}" in capsys.readouterr().out
    before, after = torch.load(shipped)["state_dict"], torch.load(again)["state_dict"]
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)


def test_init_from_refuses_a_generator_of_another_shape(tmp_path, tiny_landmarks):
    shipped = train(tiny_config(tmp_path / "first", tiny_landmarks, steps=1))
    cfg = tiny_config(
        tmp_path / "second", tiny_landmarks, steps=1, init_from=str(shipped), generator={"base_channels": 4}
    )
    with pytest.raises(ValueError, match="init_from"):
        train(cfg)


def test_training_pairs_flag_the_photo_have_no_mask_beyond_it_and_can_be_grey(tiny_landmarks):
    cfg = tiny_config(Path("unused"), tiny_landmarks)
    dataset = build_dataset(cfg)
    item = dataset[0]
    inside = item["inside"][0]
    assert inside.shape == (256, 256) and inside[128, 128] == 1  # the face is inside the photo
    # UTKFace photos are tight 200 px crops: the canonical crop reaches past their edges, where
    # nothing is mask and the truth is whatever the input shows there.
    outside = inside == 0
    assert outside.float().mean() > 0.1
    assert item["alpha"][0][outside].max() == 0
    assert torch.equal(item["masked"][:, outside], item["target"][:, outside])
    grey = build_dataset(replace(cfg, data=replace(cfg.data, grayscale=1.0)))[0]
    for image in (grey["masked"], grey["target"]):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_some_training_pairs_are_bare_faces_with_an_empty_mask(tiny_landmarks):
    cfg = tiny_config(Path("unused"), tiny_landmarks)
    item = build_dataset(replace(cfg, data=replace(cfg.data, unmasked=1.0)))[0]
    assert item["alpha"].max() == 0
    assert torch.equal(item["masked"], item["target"])
