"""A real TorchServe for tests (Java 17 needed): free ports, its own TMPDIR and logs, archives built
like `make mar` with the default model. `tests/conftest.py` starts one per session as `server`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from serve.archive import MODEL_CONFIGS, build_mars, model_card_version
from serve.server import Ports, launch, stop_group, wait_ready

VERSION = model_card_version()
# Built beside the default version but not registered: tests register it themselves.
NEXT_VERSION = f"{int(VERSION.split('.')[0]) + 1}.0"


@dataclass
class Server:
    ports: Ports
    state: Path

    def predict(
        self,
        body: bytes | None = None,
        content_type: str | None = "image/png",
        accept: str | None = None,
        version: str | None = None,
        model: str = "qmask",
        timeout: float = 120,
        **kwargs,
    ) -> requests.Response:
        headers = {k: v for k, v in {"Content-Type": content_type, "Accept": accept}.items() if v}
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        return requests.post(
            self.ports.url("inference") + path, data=body, headers=headers, timeout=timeout, **kwargs
        )

    def worker_pids(self, version: str = VERSION, model: str = "qmask") -> list[int]:
        description = requests.get(f"{self.ports.url('management')}/models/{model}/{version}", timeout=10)
        return [w["pid"] for w in description.json()[0]["workers"] if w["status"] == "READY"]


@contextmanager
def torchserve(root: Path) -> Iterator[Server]:
    """Serve the default version from a model store under `root` until the block ends."""
    if shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 on the PATH")
    store = root / "model-store"
    current = build_mars(store)
    build_mars(store, NEXT_VERSION)
    ports = Ports.free()
    state = root / "state"
    models = [f"{model}={mar.name}" for model, mar in zip(MODEL_CONFIGS, current, strict=True)]
    process = launch(state, ports, store, models, foreground=True)
    try:
        try:
            wait_ready(ports, lambda: process.poll() is None, timeout=300)
        except (RuntimeError, TimeoutError) as exc:
            log = (state / "torchserve.log").read_text(errors="replace")[-4000:]
            pytest.fail(f"{exc}\n{log}")
        yield Server(ports, state)
    finally:
        stop_group(process)
