#!/usr/bin/env bash
# Train a new inpainter on one GPU for a fixed wall-clock budget and join it with the shipped
# segmenter(s) into a model file (README, "Training").
#   training/gpu_train.sh OUT_DIR [MINUTES] [VERSION]
# Needs cache/gpu/pack.npz (`make gpu-pack`, or `make pack` and a copy) and the VGG16 weights
# (qmask/assets/vgg16.ckpt, or cache/gpu/vgg16_relu3.npz from `make gpu-pack`). Writes
# OUT_DIR/inpainter/{log.jsonl,checkpoint.pt,inpainter.pt,samples/} and OUT_DIR/model.pt.
# QMASK_TRAIN_SET adds `--set` overrides (a CPU smoke run: "steps=2 batch_size=2 num_workers=0").
set -euo pipefail
out=${1:?usage: training/gpu_train.sh OUT_DIR [MINUTES] [VERSION]}
minutes=${2:-8}
version=${3:-next}
python=${PYTHON:-python}
overrides=(out_dir="$out/inpainter" max_minutes="$minutes")
[ -f cache/gpu/vgg16_relu3.npz ] && overrides+=(perceptual_weights=cache/gpu/vgg16_relu3.npz)
read -r -a extra <<< "${QMASK_TRAIN_SET:-}"
"$python" -m training.train --config training/configs/gpu_inpainter.yaml --set "${overrides[@]}" "${extra[@]}"
"$python" -m training.export --segmenter qmask/weights/default.pt --inpainter "$out/inpainter/inpainter.pt" \
  --version "$version" -o "$out/model.pt"
