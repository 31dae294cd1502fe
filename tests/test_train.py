"""Training both stages on a handful of real faces: losses go down, checkpoints resume, runs start
from shipped weights, DDP runs on gloo, and the export joins the stages into a model file."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from qmask.align import eyes_to_crop, mesh_eyes, warp_to_crop
from qmask.model import build_network, images_to_tensor, load_model, read_networks
from tests.conftest import DATA, REPO, TINY_SEGMENTER, UTKFACE
from training.export import export, read_stage
from training.landmarks import compute_landmarks, list_images
from training.pack import FacePack, build_pack, is_heldout
from training.perceptual import VGGFeatures
from training.stages import LossConfig, lowpass_errors, segmenter_bce, thin_parts
from training.train import TrainConfig, build_dataset, build_step, learning_rate, train

TINY = REPO / "training" / "configs" / "tiny.yaml"
TEMPLATES = DATA / "mask-templates"


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pack")
    photos = list_images(UTKFACE)
    # Eight faces, and one of the held-out slice, which the pack must leave out.
    heldout = next(path for path in photos if is_heldout(path.name))
    names, meshes = compute_landmarks([*photos[:8], heldout])
    np.savez_compressed(folder / "landmarks.npz", names=np.array(names), meshes=meshes)
    build_pack(UTKFACE, folder / "landmarks.npz", folder / "pack.npz")
    return folder / "pack.npz"


def tiny_config(out: Path, pack: Path, stage: str = "inpainter", **overrides) -> TrainConfig:
    extra = {"network": TINY_SEGMENTER} if stage == "segmenter" else {}
    data = {"pack": str(pack), "templates_dir": str(TEMPLATES)}
    return TrainConfig.from_yaml(
        TINY, {"stage": stage, "out_dir": str(out), "data": data, **extra, **overrides}
    )


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def first_batch(cfg: TrainConfig, size: int = 2) -> dict[str, torch.Tensor]:
    """The first `size` training items of `cfg`'s dataset, stacked as the loader would."""
    dataset = build_dataset(cfg)
    items = [dataset[i] for i in range(size)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def test_the_pack_holds_the_photos_and_meshes_and_leaves_out_the_heldout_slice(tiny_pack):
    pack = FacePack.load(tiny_pack)
    with np.load(tiny_pack.parent / "landmarks.npz") as cached:
        assert any(is_heldout(str(name)) for name in cached["names"])
    assert 0 < len(pack) <= 8 and not any(is_heldout(name) for name in pack.names)
    assert pack.image(0).shape == (200, 200, 3) and pack.mesh(0).shape == (478, 2)
    assert FacePack.load(tiny_pack, limit=2).names == pack.names[:2]


def test_a_pack_cut_by_size_is_a_fair_sample_not_the_first_names(tiny_pack, tmp_path):
    # UTKFace's names begin with the age: a cut in name order would hold only some ages.
    full = FacePack.load(tiny_pack)
    assert full.names != sorted(full.names)
    landmarks = tiny_pack.parent / "landmarks.npz"
    count = build_pack(UTKFACE, landmarks, tmp_path / "cut.npz", max_bytes=tiny_pack.stat().st_size // 2)
    assert 0 < count < len(full)
    assert FacePack.load(tmp_path / "cut.npz").names == full.names[:count]


def test_a_few_steps_lower_the_inpainters_loss(tmp_path, tiny_pack):
    # Two faces, the L1 term alone (the adversarial terms make a few steps noisy): the inpainter
    # must start fitting them.
    out = tmp_path / "run"
    loss = {"l1": 1.0, "perceptual": 0.0, "gan": 0.0, "feature_matching": 0.0}
    cfg = tiny_config(out, tiny_pack, steps=20, limit=2, batch_size=2, lr=0.003, sample_every=20, loss=loss)
    exported = train(cfg)
    log = read_log(out)
    assert np.mean([r["l1"] for r in log[-5:]]) < np.mean([r["l1"] for r in log[:5]]) * 0.9, log
    assert (out / "samples" / "step_000020.png").is_file()
    networks, meta = read_networks(exported)
    assert set(networks) == {"inpainter"} and meta["training"]["steps"] == 20
    # Provenance: the whole config and the commit the run was trained from.
    assert meta["training"]["config"]["loss"]["perceptual"] == cfg.loss.perceptual
    assert meta["training"]["commit"] is None or len(meta["training"]["commit"]) >= 40


def test_a_few_steps_lower_the_segmenters_loss(tmp_path, tiny_pack):
    out = tmp_path / "seg"
    cfg = tiny_config(out, tiny_pack, "segmenter", steps=30, limit=2, batch_size=2, lr=0.005, sample_every=20)
    # Every pair a masked face at full resolution, on a canvas: with bare, small, mirrored and
    # no-face pairs in the mix, a few steps on two faces are too few to show the loss going down.
    only_masked = replace(cfg.data, unmasked=0.0, low_resolution=0.0, mirrored=0.0, not_a_face=0.0)
    train(replace(cfg, data=only_masked))
    log = read_log(out)
    # BCE: Dice is noisy over a few steps.
    assert np.mean([r["bce"] for r in log[-5:]]) < np.mean([r["bce"] for r in log[:5]]) * 0.8, log
    assert (out / "segmenter.pt").is_file() and (out / "samples" / "step_000020.png").is_file()
    # The run records the mix of mask styles it saw.
    recorded = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert recorded["mask_styles"]["scarf"] > 0 and recorded["template_share"] == 0.25


def test_a_vgg16_segmenter_starts_from_imagenets_convs_and_keeps_them(tmp_path, tiny_pack):
    out = tmp_path / "vgg"
    network = TINY_SEGMENTER | {"encoder": "vgg16"}
    train(tiny_config(out, tiny_pack, "segmenter", steps=3, network=network, lr=0.01))
    config, state = read_networks(out / "segmenter.pt")[0]["segmenter"]
    assert config.encoder == "vgg16"
    imagenet = [m for m in VGGFeatures(blocks=3).modules() if isinstance(m, torch.nn.Conv2d)]
    # Keys net.encoder.BLOCK.LAYER.weight, in the network's order.
    kept = [k for k in state if k.startswith("net.encoder.") and k.endswith(".weight")]
    kept.sort(key=lambda k: [int(i) for i in k.split(".")[2:4]])
    assert len(kept) == len(imagenet) == 7
    for conv, key in zip(imagenet, kept, strict=True):
        assert torch.allclose(state[key], conv.weight, atol=1e-3 * conv.weight.abs().max().item())
    assert len(read_log(out)) == 3


def test_resume_continues_from_the_checkpoint(tmp_path, tiny_pack, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, tiny_pack, steps=2))
    train(tiny_config(out, tiny_pack, steps=4))
    assert "resumed from" in capsys.readouterr().out
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]
    # Resumed with the budget it already spent, in steps or in minutes: exported again, no step more.
    train(tiny_config(out, tiny_pack, steps=4))
    train(tiny_config(out, tiny_pack, steps=10, max_minutes=1e-6))
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]
    assert read_networks(out / "inpainter.pt")[1]["training"]["steps"] == 4


def test_a_resumed_run_goes_on_with_the_faces_its_epoch_has_not_shown_yet(tmp_path, tiny_pack, monkeypatch):
    from training.data import HoleDataset

    shown: list[int] = []
    get = HoleDataset.__getitem__
    monkeypatch.setattr(HoleDataset, "__getitem__", lambda self, i: shown.append(i) or get(self, i))
    faces = len(FacePack.load(tiny_pack))
    out = tmp_path / "run"
    train(tiny_config(out, tiny_pack, steps=1, batch_size=2, checkpoint_every=1))
    train(tiny_config(out, tiny_pack, steps=faces // 2, batch_size=2, checkpoint_every=1))
    # One epoch across the restart: every face once, none twice.
    assert sorted(shown) == list(range(faces))


def test_ddp_with_two_cpu_processes_on_gloo_resuming_a_one_process_run(tmp_path, tiny_pack):
    out = tmp_path / "ddp"
    cfg = tiny_config(out, tiny_pack, steps=2, threads=1)
    train(cfg)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.train", "--config", str(out / "config.yaml"), "--set", "steps=3", "threads=1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert read_log(out)[-1]["step"] == 3
    # Two steps in one process, then one in two: the faces seen are counted across the restart.
    meta = read_networks(out / "inpainter.pt")[1]["training"]
    assert meta["processes"] == 2 and meta["images_seen"] == 2 * cfg.batch_size + 1 * 2 * cfg.batch_size
    # A model exported from the run folder (its checkpoint) carries the same record.
    record = read_stage(out, "inpainter")[1]
    assert (record["processes"], record["images_seen"], record["device"]) == (2, meta["images_seen"], "cpu")


def test_learning_rate_is_constant_then_decays_linearly_to_zero_over_the_budget():
    cfg = TrainConfig(steps=1000, max_minutes=10, lr=1e-3, lr_decay_from=0.5)
    assert learning_rate(cfg, 100, 60) == 1e-3
    assert learning_rate(cfg, 750, 60) == pytest.approx(0.5e-3)  # steps run out first
    assert learning_rate(cfg, 10, 450) == pytest.approx(0.5e-3)  # wall clock runs out first
    assert learning_rate(cfg, 1000, 60) == 0.0
    assert learning_rate(TrainConfig(lr=1e-3, lr_decay_from=None), 999, 1e6) == 1e-3


def test_init_from_starts_with_the_shipped_weights(tmp_path, tiny_pack, capsys):
    shipped = train(tiny_config(tmp_path / "first", tiny_pack, steps=2))
    # lr 0: the inpainter keeps the weights it started from (batch-norm statistics still move).
    again = train(tiny_config(tmp_path / "second", tiny_pack, steps=1, lr=0.0, init_from=str(shipped)))
    assert f"initialised the inpainter from {shipped}" in capsys.readouterr().out
    before, after = read_networks(shipped)[0]["inpainter"][1], read_networks(again)[0]["inpainter"][1]
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)


def test_the_discriminators_warmup_trains_it_alone_first(tmp_path, tiny_pack):
    shipped = train(tiny_config(tmp_path / "first", tiny_pack, steps=1))
    out = tmp_path / "fine"
    fine = {"lr": 0.01, "init_from": str(shipped), "discriminator.warmup": 2}
    warm = train(tiny_config(out, tiny_pack, steps=2, **fine))
    before, after = read_networks(shipped)[0]["inpainter"][1], read_networks(warm)[0]["inpainter"][1]
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)
    discriminator = torch.load(out / "checkpoint.pt", weights_only=True)["optimizers"]["discriminator"]
    assert discriminator["state"], "the discriminator took no step"
    # Resumed past the warm-up, the generator learns again.
    train(tiny_config(out, tiny_pack, steps=3, **fine))
    log = read_log(out)
    assert [set(r) >= {"l1", "gan"} for r in log] == [False, False, True], log
    assert all("loss_d" in r for r in log)
    with pytest.raises(ValueError, match=r"discriminator\.warmup"):
        train(tiny_config(tmp_path / "seg", tiny_pack, "segmenter", steps=1, **{"discriminator.warmup": 1}))


def test_a_runs_config_yaml_reads_back_as_its_config(tmp_path, tiny_pack):
    cfg = tiny_config(tmp_path / "run", tiny_pack, steps=1)
    train(cfg)
    again = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")  # e.g. to resume with more minutes
    assert again == replace(cfg, network=cfg.network_config)


def test_a_fine_tune_can_start_its_discriminator_from_the_last_run(tmp_path, tiny_pack, capsys):
    first = tmp_path / "first"
    shipped = train(tiny_config(first, tiny_pack, steps=2))
    critic = first / "discriminator.pt"
    saved = torch.load(critic, weights_only=True)
    assert saved and all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    out = tmp_path / "fine"
    fine = {"lr": 0.0, "init_from": str(shipped), "discriminator.init_from": str(critic)}
    train(tiny_config(out, tiny_pack, steps=1, **fine))
    assert f"initialised the discriminator from {critic}" in capsys.readouterr().out
    # lr 0: the critic's convs are still those it was given (batch-norm statistics move).
    started = torch.load(out / "checkpoint.pt", weights_only=True)["networks"]["discriminator"]
    convs = [k for k in saved if k.endswith(".weight") and saved[k].ndim == 4]
    assert convs and all(torch.equal(saved[k].float(), started[k]) for k in convs)
    with pytest.raises(ValueError, match="does not fit a discriminator of 16 channels"):
        train(tiny_config(tmp_path / "wider", tiny_pack, steps=1, **{"discriminator.channels": 16}, **fine))
    segmenter = {"discriminator.init_from": str(critic)}
    with pytest.raises(ValueError, match="init_from"):
        train(tiny_config(tmp_path / "seg", tiny_pack, "segmenter", steps=1, **segmenter))


def test_init_from_refuses_weights_of_another_shape_or_stage(tmp_path, tiny_pack):
    shipped = train(tiny_config(tmp_path / "first", tiny_pack, steps=1))
    wider = dict(TINY_SEGMENTER, in_channels=4, out_channels=3, base_channels=4)
    with pytest.raises(ValueError, match="init_from"):
        train(tiny_config(tmp_path / "second", tiny_pack, steps=1, init_from=str(shipped), network=wider))
    with pytest.raises(ValueError, match="no segmenter stage"):
        train(tiny_config(tmp_path / "third", tiny_pack, "segmenter", steps=1, init_from=str(shipped)))


def test_export_joins_both_stages_into_a_model_the_pipeline_loads(tmp_path, tiny_pack):
    inpainter = train(tiny_config(tmp_path / "inp", tiny_pack, steps=1))
    segmenter = train(tiny_config(tmp_path / "seg", tiny_pack, "segmenter", steps=1))
    export(segmenter, inpainter, "9.1", tmp_path / "model.pt")
    model = load_model(tmp_path / "model.pt")
    assert model.meta["version"] == "9.1"
    assert set(model.meta["stages"]) == {"segmenter", "inpainter"}
    assert model.meta["stages"]["segmenter"]["config"]["stage"] == "segmenter"
    # A new segmenter beside the inpainter of a model file (a shipped one): that stage's record.
    export(segmenter, tmp_path / "model.pt", "9.2", tmp_path / "next.pt")
    stages = load_model(tmp_path / "next.pt").meta["stages"]
    assert stages["inpainter"] == model.meta["stages"]["inpainter"]
    assert stages["inpainter"]["config"]["stage"] == "inpainter"


def test_export_adds_a_second_segmenter_whose_mask_the_model_joins_with_the_first(tmp_path, tiny_pack):
    from training.model_card import training_section

    inpainter = train(tiny_config(tmp_path / "inp", tiny_pack, steps=1))
    first = train(tiny_config(tmp_path / "seg", tiny_pack, "segmenter", steps=1))
    vgg = TINY_SEGMENTER | {"encoder": "vgg16"}
    second = train(tiny_config(tmp_path / "vgg", tiny_pack, "segmenter", steps=1, network=vgg))
    export(first, inpainter, "9.3", tmp_path / "model.pt", second_segmenter=second)
    model = load_model(tmp_path / "model.pt")
    assert set(model.meta["stages"]) == {"segmenter", "second_segmenter", "inpainter"}
    alone = [build_network("segmenter", *read_networks(r)[0]["segmenter"]).eval() for r in (first, second)]
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        joined = torch.maximum(alone[0](x), alone[1](x))
        got = model.segmenter(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, joined, atol=1e-3)
    card = "\n".join(training_section(model.meta))
    assert card.count("Losses: BCE") == 2 and "'encoder': 'vgg16'" in card
    # A later export from that file (a new inpainter beside the shipped segmenters) keeps both.
    export(tmp_path / "model.pt", inpainter, "9.4", tmp_path / "next.pt")
    _, meta = read_networks(tmp_path / "next.pt")
    assert meta["stages"]["second_segmenter"]["config"]["network"]["encoder"] == "vgg16"


def test_export_averages_several_inpainters_by_their_shares_and_the_card_lists_each_run(tmp_path, tiny_pack):
    from training.model_card import training_section

    first = train(tiny_config(tmp_path / "a", tiny_pack, steps=1, erase_outside_photo=True))
    second = train(tiny_config(tmp_path / "b", tiny_pack, steps=1, seed=5, erase_outside_photo=True))
    segmenter = train(tiny_config(tmp_path / "seg", tiny_pack, "segmenter", steps=1))
    export(segmenter, [first, second], "9.3", tmp_path / "soup.pt", shares=[3, 1])
    # The pipeline reads from the record how the inpainter was trained to see its input.
    assert load_model(tmp_path / "soup.pt").inpainter_erases_outside_photo
    networks, meta = read_networks(tmp_path / "soup.pt")
    a, b = (read_networks(path)[0]["inpainter"][1] for path in (first, second))
    averaged = networks["inpainter"][1]
    changed = [name for name in a if a[name].is_floating_point() and not torch.equal(a[name], b[name])]
    assert changed  # the two runs differ, so the average is neither of them
    for name in changed:
        # The file keeps half precision: the average within its rounding.
        assert torch.allclose(averaged[name], 0.75 * a[name] + 0.25 * b[name], atol=2e-3, rtol=2e-3)
    parts = meta["stages"]["inpainter"]["average_of"]
    assert [part["share"] for part in parts] == [0.75, 0.25]
    assert [part["config"]["out_dir"] for part in parts] == [str(tmp_path / "a"), str(tmp_path / "b")]
    card = "\n".join(training_section(meta))
    assert "the weights' average of 2 runs" in card and "share 0.75" in card and "share 0.25" in card
    with pytest.raises(SystemExit, match="as many shares"):
        export(segmenter, [first, second], "9.4", tmp_path / "bad.pt", shares=[1.0])
    unerased = train(tiny_config(tmp_path / "c", tiny_pack, steps=1, erase_outside_photo=False))
    with pytest.raises(SystemExit, match="erase_outside_photo"):
        export(segmenter, [first, unerased], "9.5", tmp_path / "mixed.pt")
    # An average may take a shipped average as one part: the pipeline still reads how its runs were
    # trained (read one level deep, this model painted pale faces from the whole photo).
    export(segmenter, [tmp_path / "soup.pt", second], "9.6", tmp_path / "soup_of_soup.pt", shares=[1, 1])
    assert load_model(tmp_path / "soup_of_soup.pt").inpainter_erases_outside_photo
    with pytest.raises(SystemExit, match="erase_outside_photo"):
        export(segmenter, [tmp_path / "soup.pt", unerased], "9.7", tmp_path / "mixed.pt")
    card = "\n".join(training_section(read_networks(tmp_path / "soup_of_soup.pt")[1]))
    assert card.count("the weights' average of 2 runs") == 2 and "  - **share 0.75**" in card


def test_segmenter_pairs_flag_the_photo_draw_the_mask_past_its_edges_and_can_be_grey(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack, "segmenter")
    # Scarves reach well under the chin: every one shows past the photo's bottom edge.
    scarves = replace(cfg.data, mask_styles={"scarf": 1.0}, template_share=0.0, unmasked=0.0, not_a_face=0.0)
    dataset = build_dataset(replace(cfg, data=scarves))
    items = [dataset[i] for i in range(4)]
    inside = items[0]["inside"][0]
    assert inside.shape == (256, 256) and inside[128, 128] == 1  # the face is inside the photo
    # UTKFace photos are tight 200 px crops ending under the chin: the canonical crop reaches past
    # their edges, and a mask goes on there as a real one goes on under the chin.
    assert (inside == 0).float().mean() > 0.1
    past_edge = [int(item["alpha"][0][item["inside"][0] == 0].gt(0.5).sum()) for item in items]
    assert min(past_edge) > 200, past_edge
    grey = build_dataset(replace(cfg, data=replace(cfg.data, grayscale=1.0)))[0]["image"]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    bare = build_dataset(replace(cfg, data=replace(cfg.data, unmasked=1.0)))[0]
    assert bare["alpha"].max() == 0


def test_segmenter_negatives_bare_faces_as_inference_crops_them_small_faces_and_no_faces(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack, "segmenter")
    steady = replace(
        cfg.data, jitter_shift=0.0, jitter_scale=0.0, jitter_rotate_deg=0.0, flip=False, grayscale=0.0,
        low_resolution=0.0, not_a_face=0.0,
    )  # fmt: skip
    # A bare face mirrored beyond the photo's edges, exactly the crop the pipeline makes of it.
    mirrored = replace(steady, unmasked=1.0, mirrored=1.0)
    dataset = build_dataset(replace(cfg, data=mirrored))
    pack = FacePack.load(tiny_pack)
    for index in range(3):
        crop = warp_to_crop(pack.image(index), eyes_to_crop(mesh_eyes(pack.mesh(index))))
        assert torch.equal(dataset[index]["image"], images_to_tensor(crop))
        assert dataset[index]["alpha"].max() == 0
    # The same pairs seen small: little detail left, the mask's truth untouched.
    sharp = build_dataset(replace(cfg, data=steady))
    small = build_dataset(replace(cfg, data=replace(steady, low_resolution=1.0, low_resolution_px=(32, 32))))

    def detail(image: torch.Tensor) -> float:
        return float((image[:, 1:] - image[:, :-1]).abs().mean())

    for index in range(3):
        assert detail(small[index]["image"]) < 0.6 * detail(sharp[index]["image"])
        assert torch.equal(small[index]["alpha"], sharp[index]["alpha"])
    # No face at all (as the detector's rare false faces are): an empty region.
    not_a_face = build_dataset(replace(cfg, data=replace(steady, not_a_face=1.0)))
    for index in range(3):
        item = not_a_face[index]
        assert item["alpha"].max() == 0 and not torch.equal(item["image"], sharp[index]["image"])


def test_inpainter_pairs_are_bare_faces_with_a_hole_over_nose_mouth_and_chin(tiny_pack):
    dataset = build_dataset(tiny_config(Path("unused"), tiny_pack))
    for index in range(len(dataset)):
        hole = dataset[index]["hole"][0].numpy()
        assert set(np.unique(hole)) <= {0.0, 1.0}
        assert hole[140:165, 110:146].mean() > 0.9  # the mouth is always in the hole
        assert hole[:80].max() == 0  # the eyes never are
        assert 0.08 < hole.mean() < 0.5
        assert cv2.connectedComponents(hole.astype(np.uint8))[0] == 2  # one piece, as the pipeline's


def test_the_gpu_script_trains_and_exports_on_the_cpu_too(tmp_path, tiny_pack):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "QMASK_TRAIN_SET": "steps=2 discriminator.warmup=1 batch_size=2 num_workers=0 log_every=1"
        f' data={{"pack":"{tiny_pack}"}}',
    }
    proc = subprocess.run(
        ["training/gpu_train.sh", str(tmp_path / "gpu"), "1", "9.2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "initialised the inpainter from qmask/weights/default.pt" in proc.stdout
    log = read_log(tmp_path / "gpu" / "inpainter")
    assert "l1" not in log[0] and "l1" in log[1]  # one step of the discriminator alone, then both
    model = load_model(tmp_path / "gpu" / "model.pt")
    assert model.meta["version"] == "9.2" and model.meta["stages"]["inpainter"]["steps"] == 2


def test_with_erase_outside_photo_the_inpainter_never_sees_the_mirrored_surroundings(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack)
    batch = first_batch(cfg)
    outside = batch["inside"] < 0.5
    assert outside.any() and (outside & (batch["hole"] < 0.5)).any()  # mirror beside the hole
    changed = dict(batch, image=torch.where(outside, -batch["image"], batch["image"]))
    for erase, same in ((False, False), (True, True)):
        step = build_step(replace(cfg, erase_outside_photo=erase))
        conditions = []
        for b in (batch, changed):
            step(
                b,
                step.networks,
                {n: torch.optim.SGD(m.parameters(), lr=0.0) for n, m in step.networks.items()},
                torch.autocast("cpu", enabled=False),
            )
            conditions.append(step.last["condition"])
        assert torch.equal(*conditions) == same


def test_with_known_only_the_critic_never_sees_the_mirrored_surroundings(tiny_pack):
    # A true crop is mirror-symmetric across the photo's edge; judged there, the generator learnt
    # to paint stripes along it. With `discriminator.known_only`, changing the mirrored pixels changes
    # neither network's critic losses; without it, they do.
    cfg = replace(tiny_config(Path("unused"), tiny_pack), erase_outside_photo=True)
    batch = first_batch(cfg)
    mirrored = batch["known"] < 0.5
    assert mirrored.any()
    changed = dict(batch, image=torch.where(mirrored, -batch["image"], batch["image"]))
    for known_only in (True, False):
        step = build_step(replace(cfg, discriminator=replace(cfg.discriminator, known_only=known_only)))
        optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.0) for n, m in step.networks.items()}
        losses = [
            step(b, step.networks, optimizers, torch.autocast("cpu", enabled=False)) for b in (batch, changed)
        ]
        same = abs(losses[0]["loss_d"] - losses[1]["loss_d"]) < 1e-6
        assert same == known_only
        if known_only:
            assert losses[0]["gan"] == pytest.approx(losses[1]["gan"], abs=1e-6)


def test_with_mirror_average_the_losses_score_the_mean_of_the_two_passes_the_pipeline_shows(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack)
    cfg = replace(cfg, loss=replace(cfg.loss, mirror_average=True))
    batch = first_batch(cfg)
    step = build_step(cfg)
    generator = step.networks["inpainter"].eval()  # running BatchNorm statistics: passes comparable
    optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.0) for n, m in step.networks.items()}
    step(batch, step.networks, optimizers, torch.autocast("cpu", enabled=False))
    image, erased = batch["image"], step.last["condition"][:, 3:]
    with torch.no_grad():
        crop_pass = generator(image, erased)
        mirror_pass = generator(image.flip(-1), erased.flip(-1)).flip(-1)
    painted = (batch["hole"] > 0.5).float() * batch["known"]
    composite = step.last["composite"]
    assert torch.allclose(composite, image + painted * ((crop_pass + mirror_pass) / 2 - image), atol=1e-5)
    assert not torch.allclose(composite, image + painted * (crop_pass - image), atol=1e-3)


def test_a_tight_frame_erases_past_the_cut_and_still_scores_the_hole_there(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack)
    cfg = replace(cfg, erase_outside_photo=True, data=replace(cfg.data, tight_frame=1.0, flip=False))
    dataset = build_dataset(cfg)
    items = [dataset[i] for i in range(len(dataset))]
    cuts = 0
    for item in items:
        inside, known = item["inside"][0] > 0.5, item["known"][0] > 0.5
        assert not (inside & ~known).any()  # only ever cut
        cut = known & ~inside
        cuts += bool(cut.any())
        columns, rows = cut.any(dim=0), cut.any(dim=1)
        # Cut along whole columns at the sides or rows at the bottom, never above the eyes.
        assert not rows[:100].any() or columns[:85].any() or columns[171:].any()
    assert cuts >= len(items) - 1  # rarely a cut falls past the photo's own edge
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    past_cut = (batch["known"] > 0.5) & (batch["inside"] < 0.5) & (batch["hole"] > 0.5)
    assert past_cut.any()  # holes run into the cut, as into a tight photo's edge
    step = build_step(cfg)
    optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.0) for n, m in step.networks.items()}
    step(batch, step.networks, optimizers, torch.autocast("cpu", enabled=False))
    erased = step.last["condition"][:, 3:]
    assert (erased[past_cut] == 1).all()  # not shown to the inpainter ...
    painted = (step.last["composite"] != batch["image"]).any(dim=1, keepdim=True)
    assert painted[past_cut].float().mean() > 0.9  # ... but painted, so scored, there


def test_a_colour_cast_changes_the_whole_crop_alike_and_nothing_else(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack)
    plain = replace(cfg.data, flip=False, grayscale=0.0)
    same = build_dataset(replace(cfg, data=plain))
    cast = build_dataset(replace(cfg, data=replace(plain, colour_jitter=1.0)))
    for index in range(len(same)):
        before, after = same[index], cast[index]
        for key in ("hole", "inside", "known"):
            assert torch.equal(before[key], after[key])  # the same pair, only its colours
        # One cast for the whole crop, the truth the inpainter is scored on included: per channel,
        # the new values are a monotonic function of the old (exposure, gain and gamma).
        for old, new in zip(before["image"], after["image"], strict=True):
            order = torch.argsort(old.flatten())
            steps = new.flatten()[order].diff()
            assert (steps >= -1.5 / 127.5).all()  # rounding to 8 bits aside
        assert not torch.equal(before["image"], after["image"])


def test_a_key_the_config_does_not_take_is_named_in_the_error(tmp_path, tiny_pack):
    with pytest.raises(ValueError, match=r"unknown key in .*: tight_frame \(it takes .*\bdata\b"):
        tiny_config(tmp_path, tiny_pack, tight_frame=0.5)  # belongs under data:
    with pytest.raises(ValueError, match=r"unknown key in data: tight_frames \(it takes .*tight_frame\b"):
        tiny_config(tmp_path, tiny_pack, data={"pack": str(tiny_pack), "tight_frames": 0.5})
    with pytest.raises(ValueError, match="unknown key in loss: vgg"):
        tiny_config(tmp_path, tiny_pack, loss={"vgg": 1.0})


def test_a_dotted_override_sets_one_field_of_a_section(tmp_path, tiny_pack):
    base = tiny_config(tmp_path, tiny_pack)
    dotted = {"data.colour_jitter": 0.5, "discriminator.warmup": 3, "loss.gan": 0.25}
    cfg = tiny_config(tmp_path, tiny_pack, **dotted)
    assert cfg.data == replace(base.data, colour_jitter=0.5)
    assert cfg.discriminator == replace(base.discriminator, warmup=3)
    assert cfg.loss == replace(base.loss, gan=0.25)
    assert replace(cfg, data=base.data, discriminator=base.discriminator, loss=base.loss) == base
    with pytest.raises(ValueError, match=r"unknown key in discriminator: warm_up \(it takes .*\bwarmup\b"):
        tiny_config(tmp_path, tiny_pack, **{"discriminator.warm_up": 3})
    with pytest.raises(ValueError, match="steps is not a section"):
        tiny_config(tmp_path, tiny_pack, **{"steps.first": 1})


def test_a_tight_frame_cuts_the_segmenters_photo_and_mirrors_its_mask_beyond_the_cut(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack, "segmenter")
    plain = replace(
        cfg.data, mirrored=1.0, unmasked=0.0, not_a_face=0.0, low_resolution=0.0, flip=False, grayscale=0.0
    )
    whole = build_dataset(replace(cfg, data=plain))
    cut = build_dataset(replace(cfg, data=replace(plain, tight_frame=1.0)))
    cuts = 0
    for index in range(len(whole)):
        before, after = whole[index], cut[index]
        inside_before, inside_after = before["inside"][0] > 0.5, after["inside"][0] > 0.5
        # The same drawn mask on the same photo, only less of the photo: the crop is the photo's
        # mirror image past the cut, the mask's too, as inference sees a tightly framed photo.
        assert not (inside_after & ~inside_before).any()
        # (Bilinear sampling mixes in the mirrored side within a pixel of the cut.)
        outside = (~inside_after).float()[None, None]
        interior = torch.nn.functional.max_pool2d(outside, 5, stride=1, padding=2)[0, 0] == 0
        assert torch.equal(before["image"][:, interior], after["image"][:, interior])
        assert torch.allclose(before["alpha"][:, interior], after["alpha"][:, interior], atol=1e-3)
        lost = inside_before & ~inside_after
        cuts += bool(lost.any())
        assert not lost[:100].any(dim=1).any() or lost[:, :100].any() or lost[:, 156:].any()
        mask_past_cut = (after["alpha"][0] > 0.5) & ~inside_after & inside_before
        changed = (after["image"] != before["image"]).any(dim=0)
        assert not mask_past_cut.any() or changed[mask_past_cut].any()
    assert cuts >= len(whole) - 1  # rarely a cut falls past the photo's own edge


def test_occluders_draw_over_the_segmenters_pairs_and_never_add_to_the_truth(tiny_pack):
    cfg = tiny_config(Path("unused"), tiny_pack, "segmenter")
    plain = replace(cfg.data, not_a_face=0.0, low_resolution=0.0, flip=False, grayscale=0.0)
    without = build_dataset(replace(cfg, data=plain))
    occluded = build_dataset(replace(cfg, data=replace(plain, occluders=1.0)))
    drawn = 0
    for index in range(len(without)):
        before, after = without[index], occluded[index]
        changed = (after["image"] != before["image"]).any(dim=0)
        drawn += bool(changed.any())
        # A hand or a collar hides the mask where it lies over it, and is never mask itself.
        assert (after["alpha"] <= before["alpha"] + 1e-3).all()
    assert drawn >= len(without) - 1  # a collar may fall below the crop


def test_ema_decay_exports_the_average_of_the_weights_and_resumes_it(tmp_path, tiny_pack, capsys):
    start = train(tiny_config(tmp_path / "start", tiny_pack, steps=1))
    start_state = read_networks(start)[0]["inpainter"][1]
    out = tmp_path / "ema"
    train(tiny_config(out, tiny_pack, steps=2, init_from=str(start), ema_decay=0.5))
    averaged = train(tiny_config(out, tiny_pack, steps=3, init_from=str(start), ema_decay=0.5))
    assert "resumed from" in capsys.readouterr().out
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    last, ema_state = checkpoint["networks"]["inpainter"], read_networks(averaged)[0]["inpainter"][1]
    key = next(k for k in start_state if k.endswith(".weight") and start_state[k].ndim == 4)
    # The export is the average kept over all three steps (resumed with the run), not the last
    # step's weights (model files hold fp16): with decay 0.5 it has gone most of the way there.
    assert torch.allclose(checkpoint["ema"][key], ema_state[key], atol=1e-3)
    moved, ema_moved = (last[key] - start_state[key]).norm(), (ema_state[key] - start_state[key]).norm()
    assert 0.3 * moved < ema_moved < 0.95 * moved
    # A run folder's checkpoint is read for its average too, as the run will export it.
    assert torch.equal(read_stage(out, "inpainter")[0].state_dict()[key], checkpoint["ema"][key])


def test_a_run_is_not_resumed_with_other_settings_but_may_get_more_budget(tmp_path, tiny_pack):
    out = tmp_path / "run"
    train(tiny_config(out, tiny_pack, steps=1))
    with pytest.raises(ValueError, match="lr differ"):
        train(tiny_config(out, tiny_pack, steps=2, lr=1e-5))
    train(tiny_config(out, tiny_pack, steps=2, max_minutes=5))
    assert [r["step"] for r in read_log(out)] == [1, 2]


def test_the_lowpass_l1_sees_colour_offsets_in_the_painted_area_but_not_detail():
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    painted = torch.zeros(2, 1, 32, 32)
    painted[..., 8:24, 8:24] = 1

    def l1(composite):
        return lowpass_errors(composite, image, painted, 8)[0].item()

    assert l1(image) == 0
    # A checkerboard averages out within every 8 px square; a shift of 0.2 does not.
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.4 - 0.2
    assert l1(image + painted * checker) == pytest.approx(0, abs=1e-6)
    assert l1(image + painted * 0.2) == pytest.approx(0.2, abs=1e-5)
    # Outside the painted area nothing counts.
    assert l1(image + (1 - painted) * 0.5) == pytest.approx(0, abs=1e-6)


def test_a_masks_thin_parts_are_its_loops_not_its_body_and_cost_more_when_missed_with_a_thin_weight():
    body, loop = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    body[..., 20:50, 10:40] = 1
    loop[..., 30:32, 40:60] = 1  # a 2 px ear loop leaving the mask's side
    mask = body + loop
    assert torch.equal(thin_parts(mask, 7), loop)
    # A prediction of the body alone (the loop missed) against one missing as many body pixels.
    body_only = (body * 2 - 1) * 6
    corner_missed = (mask * 2 - 1) * 6
    corner_missed[..., 20:22, 10:30] = -6
    plain, weighted = LossConfig(), LossConfig(thin=10)
    missed_loop, missed_corner = (segmenter_bce(x, mask, plain).item() for x in (body_only, corner_missed))
    assert missed_loop == pytest.approx(missed_corner)
    assert segmenter_bce(body_only, mask, weighted) > 5 * segmenter_bce(corner_missed, mask, weighted)


def test_the_squared_lowpass_error_weighs_one_square_far_off_more_than_many_a_little():
    image = torch.zeros(1, 3, 32, 32)
    painted = torch.zeros(1, 1, 32, 32)
    painted[..., 0:16, 0:32] = 1  # eight 8 px squares
    assert [e.item() for e in lowpass_errors(image, image, painted, 8)] == [0, 0]
    everywhere = image + painted * 0.1
    one_square = image.clone()
    one_square[..., 0:8, 0:8] = 0.8
    spread_l1, spread_squared = (e.item() for e in lowpass_errors(everywhere, image, painted, 8))
    one_l1, one_squared = (e.item() for e in lowpass_errors(one_square, image, painted, 8))
    # The same L1 (0.1 on average) ...
    assert spread_l1 == pytest.approx(0.1, abs=1e-6)
    assert one_l1 == pytest.approx(0.1, abs=1e-6)
    # ... but eight times the squared error where it is all in one square.
    assert spread_squared == pytest.approx(0.01, abs=1e-6)
    assert one_squared == pytest.approx(0.08, abs=1e-6)


@pytest.mark.parametrize("path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_config_loads(path: Path) -> None:
    """The configs are the record of how each model and experiment was trained: each must still
    load into today's TrainConfig, so a renamed field cannot leave one that no longer runs."""
    config = TrainConfig.from_yaml(path)
    assert config.stage in ("segmenter", "inpainter")
    assert config.max_minutes or config.steps


def test_freeze_batchnorm_stats_keeps_the_started_from_statistics_while_the_weights_learn(
    tmp_path, tiny_pack
):
    start = train(tiny_config(tmp_path / "start", tiny_pack, "segmenter", steps=1, limit=2, batch_size=2))
    before = read_networks(start)[0]["segmenter"][1]
    runs = {}
    for frozen in (False, True):
        out = tmp_path / f"frozen_{frozen}"
        cfg = tiny_config(
            out, tiny_pack, "segmenter", steps=3, limit=2, batch_size=2, lr=0.01, init_from=str(start),
            freeze_batchnorm_stats=frozen,
        )  # fmt: skip
        runs[frozen] = read_networks(train(cfg))[0]["segmenter"][1]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    convs = [k for k in before if k.endswith(".weight") and before[k].ndim == 4]
    assert stats and convs
    assert all(torch.equal(before[k], runs[True][k]) for k in stats)
    assert not all(torch.equal(before[k], runs[False][k]) for k in stats)
    # The weights learn either way, the BatchNorm layers' scales included.
    scales = [k.replace("running_mean", "weight") for k in stats if k.endswith("running_mean")]
    assert not all(torch.equal(before[k], runs[True][k]) for k in convs)
    assert not all(torch.equal(before[k], runs[True][k]) for k in scales)
