# The README's two commands: `make run` (the TorchServe API and the web page) and `make test`. Both set up
# .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The data folder: QMASK_DATA as the tests and benchmarks read it, else beside the repository.
DATA ?= $(or $(QMASK_DATA),../shared/data)
INPUT ?= $(DATA)/real-masked
OUTPUT ?= out/unmasked

.PHONY: setup run cli mar serve stop bench-serve bench-video reliability test lint bench landmarks pack gpu-pack \
	train-cpu export evaluate bench-frozen \
	contact-sheet clean k8s-validate lint-docker images

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[dev,serve,frontend,deploy]'
	$(BIN)/python -m qmask.assets
	touch $@

setup: $(BIN)/.installed

# TorchServe (below), then the web page on http://127.0.0.1:8501 (state and log in out/frontend/);
# `make stop` ends both.
run: serve
	$(BIN)/python -m frontend.run start

# The CLI on the real masked photos, no server involved. Exit status 1 means some photos were
# refused, e.g. had no face (the CLI names them); 2 (nothing done: a wrong path) or anything else
# is a failure.
cli: setup
	$(BIN)/qmask unmask $(INPUT) -o $(OUTPUT); status=$$?; [ $$status -le 1 ]
	@echo "results in $(OUTPUT)/"

# TorchServe: out/serve/model-store/qmask-VERSION.mar (version from the model card), then a local
# server in the background on 127.0.0.1:8080-8082 (state and logs in out/serve/); `make stop` ends it.
mar: setup
	$(BIN)/python -m serve.archive

serve: mar
	$(BIN)/python -m serve.server start

stop:
	$(BIN)/python -m frontend.run stop
	$(BIN)/python -m serve.server stop

bench-serve: setup
	$(BIN)/python -m benchmarks.serving

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m benchmarks.photo

bench-video: setup
	$(BIN)/python -m benchmarks.video

# Against a running server (make serve): the hostile-input matrix, then READY workers and a good photo.
reliability: setup
	$(BIN)/python -m benchmarks.reliability

# Training and measurement jobs: separate from the tests, their results are recorded in docs/results.md.
landmarks: setup
	$(BIN)/python -m training.landmarks $(DATA)/train/utkface cache/utkface.npz
	$(BIN)/python -m training.landmarks $(DATA)/eval/lfw cache/lfw.npz

# The training photos and their meshes in one file that training holds in memory (held-out slice
# left out); `make landmarks` first.
pack: setup
	$(BIN)/python -m training.pack $(DATA)/train/utkface cache/utkface.npz cache/utkface_pack.npz

# What a lent GPU machine gets along (it cannot see ../shared; 64 MiB in all with the tracked
# files): as many training faces as fit in GPU_PACK_MIB, and VGG16's convs up to relu3_3. Then
# training/gpu_train.sh there (README, "Training").
GPU_PACK_MIB ?= 36
gpu-pack: setup
	$(BIN)/python -m training.pack $(DATA)/train/utkface cache/utkface.npz cache/gpu/pack.npz --max-mib $(GPU_PACK_MIB)
	$(BIN)/python -m training.perceptual cache/gpu/vgg16_relu3.npz

# Model 2.0's recipe on this 2-core machine (2.1 fine-tunes its segmenter, 2.2 its inpainter: docs/results.md, "Training of model 2.1" and "2.2"):
# the segmenter and the inpainter side by side, one core each
# (the inpainter starts from model 1.1's generator, see training/convert_v1.py), then joined. The
# mask renderer has grown since 2.0, so the segmenter sees more styles than 2.0's did.
V1_COMMIT ?= 8b2cdeb
train-cpu: setup
	mkdir -p runs
	git show $(V1_COMMIT):qmask/weights/default.pt > runs/model-1.1.pt
	$(BIN)/python -m training.convert_v1 runs/model-1.1.pt runs/inpainter_from_1.1.pt
	OMP_NUM_THREADS=1 $(BIN)/python -m training.train --config training/configs/cpu_segmenter.yaml & \
	OMP_NUM_THREADS=1 $(BIN)/python -m training.train --config training/configs/cpu_inpainter.yaml; wait
	$(MAKE) export

VERSION ?= 2.0
export: setup
	$(BIN)/python -m training.export --segmenter runs/cpu_segmenter/segmenter.pt \
	  --inpainter runs/cpu_inpainter/inpainter.pt --version $(VERSION) -o runs/model-$(VERSION).pt

WEIGHTS ?= qmask/weights/default.pt
evaluate: setup
	for masks in synthetic templates; do \
	  $(BIN)/python -m training.evaluate --faces $(DATA)/eval/lfw --landmarks cache/lfw.npz --masks $$masks \
	    --limit 300 --weights $(WEIGHTS) --out out/eval_$$masks.json || exit 1; done
	$(BIN)/python -m training.evaluate --faces $(DATA)/train/utkface --landmarks cache/utkface.npz \
	  --masks synthetic --groups --limit 2000 --weights $(WEIGHTS) --out out/eval_groups.json

bench-frozen: setup
	rm -rf out/bench && $(BIN)/qmask unmask $(DATA)/bench/lfw-synthetic/*_masked.png -o out/bench -q \
	  --weights $(WEIGHTS) || true
	$(BIN)/python $(DATA)/../bench/score.py $(DATA)/bench/lfw-synthetic out/bench --json out/bench_score.json \
	  --lpips qmask/assets/alexnet.ckpt
	$(BIN)/python -m benchmarks.bare_faces --weights $(WEIGHTS)

contact-sheet: cli
	$(BIN)/python -m training.contact_sheet $(INPUT) $(OUTPUT) out/sheets/real

clean:
	rm -rf $(VENV) qmask/assets out

# Kubernetes and containers (README, "Running on Kubernetes"): offline checks of k8s/ and the
# Dockerfiles (also part of `make test`), and the two images with docker or podman.
K8S_VERSION ?= 1.32.0
ENGINE ?= docker
IMAGE_PREFIX ?= qmask
IMAGE_TAG ?= 0.1.0

k8s-validate: setup
	for overlay in gpu cpu; do \
	  kubectl kustomize k8s/overlays/$$overlay | $(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) - \
	    || exit 1; done
	$(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) k8s/*.yaml

lint-docker: setup
	$(BIN)/hadolint Dockerfile.serve Dockerfile.frontend

images:
	$(ENGINE) build -f Dockerfile.serve -t $(IMAGE_PREFIX)-serve:$(IMAGE_TAG)-cuda .
	$(ENGINE) build -f Dockerfile.serve --build-arg TORCH=cpu -t $(IMAGE_PREFIX)-serve:$(IMAGE_TAG)-cpu .
	$(ENGINE) build -f Dockerfile.frontend -t $(IMAGE_PREFIX)-frontend:$(IMAGE_TAG) .
