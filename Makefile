# The README's two commands: `make run` (the TorchServe API and the web page) and `make test`. Both set up
# .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
INPUT ?= $(DATA)/real-masked
OUTPUT ?= out/unmasked
# The plain pix2pix baseline `make evaluate` compares with, once `make train-baseline` has made it.
BASELINE ?= runs/cpu_pix2pix_baseline/generator.pt

.PHONY: setup run cli mar serve stop bench-serve test lint bench landmarks train-cpu train-baseline evaluate bench-frozen \
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

# The CLI on the real masked photos, no server involved. Exit status 1 means some photos had no
# face (the CLI names them); anything else is a failure.
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
	$(BIN)/python -m serve.bench

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m qmask.bench

# Training and measurement jobs: separate from the tests, their results are recorded in README.
landmarks: setup
	$(BIN)/python -m training.landmarks $(DATA)/train/utkface cache/utkface.npz
	$(BIN)/python -m training.landmarks $(DATA)/eval/lfw cache/lfw.npz

# The default model: cpu.yaml (version 1.0, one core), then cpu_finetune.yaml from it (1.1, both cores).
train-cpu: setup
	$(BIN)/python -m training.train --config training/configs/cpu.yaml
	$(BIN)/torchrun --nproc_per_node 2 -m training.train --config training/configs/cpu_finetune.yaml

train-baseline: setup
	$(BIN)/python -m training.train --config training/configs/cpu_pix2pix_baseline.yaml

evaluate: setup
	for masks in synthetic templates; do \
	  $(BIN)/python -m training.evaluate --faces $(DATA)/eval/lfw --landmarks cache/lfw.npz --masks $$masks \
	    --limit 300 $(if $(wildcard $(BASELINE)),--baseline $(BASELINE)) --out out/eval_$$masks.json || exit 1; done
	$(BIN)/python -m training.evaluate --faces $(DATA)/train/utkface --landmarks cache/utkface.npz \
	  --masks synthetic --groups --limit 2000 --out out/eval_groups.json

bench-frozen: setup
	rm -rf out/bench && $(BIN)/qmask unmask $(DATA)/bench/lfw-synthetic/*_masked.png -o out/bench -q || true
	$(BIN)/python ../shared/bench/score.py $(DATA)/bench/lfw-synthetic out/bench --json out/bench_score.json

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
