"""Run TorchServe with `serve/config.properties`.

    python -m serve.server start   # background, waits until qmask and qmask-video have a READY worker
    python -m serve.server stop    # stops this server only, by its pid file (make stop)

Everything an instance writes (pid file, worker sockets, extracted archives, logs) goes under its
state folder, `out/serve/` here: TorchServe keeps its pid file and worker sockets in TMPDIR and its
logs in the working directory, so instances with their own state folder and ports never meet. Tests
use `launch(..., foreground=True)` and own the process group it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from serve.archive import DEFAULT_STORE, MODEL_CONFIGS, REPO, model_card_version
from serve.models import MODEL_NAME

CONFIG = REPO / "serve" / "config.properties"
DEFAULT_STATE = REPO / "out" / "serve"
TORCHSERVE = Path(sys.executable).with_name("torchserve")


@dataclass(frozen=True)
class Ports:
    """The ports of one instance; the defaults are those of config.properties."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071
    worker: int = 9000

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on now (the kernel's choice), for a private instance."""
        sockets = [socket.socket() for _ in range(6)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()

    def url(self, api: str) -> str:
        return f"http://127.0.0.1:{getattr(self, api)}"


def server_env(state: Path, ports: Ports) -> dict[str, str]:
    """The environment of an instance: its own TMPDIR and logs, and its ports over the config's."""
    tmp = state / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        # The launcher keeps its pid file in TMPDIR and passes TEMP to Java as java.io.tmpdir.
        TMPDIR=str(tmp),
        TEMP=str(tmp),
        LOG_LOCATION=str(state / "logs"),
        METRICS_LOCATION=str(state / "logs"),
        TS_INFERENCE_ADDRESS=ports.url("inference"),
        TS_MANAGEMENT_ADDRESS=ports.url("management"),
        TS_METRICS_ADDRESS=ports.url("metrics"),
        TS_GRPC_INFERENCE_PORT=str(ports.grpc_inference),
        TS_GRPC_MANAGEMENT_PORT=str(ports.grpc_management),
        TS_INITIAL_WORKER_PORT=str(ports.worker),
    )
    return env


def launch(
    state: Path, ports: Ports, model_store: Path, models: list[str], foreground: bool
) -> subprocess.Popen:
    """Start TorchServe in a new session (its own process group), output in `state/torchserve.log`.

    In the foreground the returned process is TorchServe's launcher, which waits for the Java
    frontend; in the background the launcher exits once the frontend is started.
    """
    state.mkdir(parents=True, exist_ok=True)
    command = [
        str(TORCHSERVE),
        "--start",
        "--ncs",  # no config snapshots: a restart serves what the config and store say
        "--ts-config", str(CONFIG),
        "--model-store", str(model_store),
        "--models", *models,
    ]  # fmt: skip
    if foreground:
        command.append("--foreground")
    with open(state / "torchserve.log", "ab") as log:
        return subprocess.Popen(
            command,
            cwd=state,
            env=server_env(state, ports),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def has_ready_worker(ports: Ports, model: str = MODEL_NAME) -> bool:
    """Whether the default version of `model` has a READY worker.

    `/ping` says Healthy even before any worker is ready, so this asks the management API.
    """
    try:
        url = f"{ports.url('management')}/models/{model}"
        with urllib.request.urlopen(url, timeout=10) as response:
            workers = json.load(response)[0]["workers"]
    except (urllib.error.URLError, OSError):
        return False
    return any(w["status"] == "READY" for w in workers)


def wait_ready(
    ports: Ports, alive: Callable[[], bool], timeout: float, models: tuple[str, ...] = tuple(MODEL_CONFIGS)
) -> None:
    """Return once every model has a READY worker; raise if the server dies or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(has_ready_worker(ports, model) for model in models):
            return
        if not alive():
            raise RuntimeError("TorchServe exited while starting")
        time.sleep(0.5)
    raise TimeoutError(f"no READY worker of every model ({', '.join(models)}) after {timeout:.0f} s")


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop an instance started by `launch`: TERM to its whole process group (launcher, Java frontend,
    Python workers), KILL to what is left after `timeout`; returns once the group is gone."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reap the launcher, or the group never empties
            os.killpg(process.pid, 0)  # raises ProcessLookupError once the group is empty
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def pid_file(state: Path) -> Path:
    return state / "tmp" / ".model_server.pid"


def _frontend_alive(state: Path) -> bool:
    """Whether the pid file names a running TorchServe frontend (not a recycled pid)."""
    try:
        return "org.pytorch.serve.ModelServer" in psutil.Process(int(pid_file(state).read_text())).cmdline()
    except (OSError, ValueError, psutil.Error):
        return False


def start(state: Path, model_store: Path, timeout: float) -> int:
    mars = {model: f"{model}-{model_card_version()}.mar" for model in MODEL_CONFIGS}
    for mar in mars.values():
        if not (model_store / mar).is_file():
            print(f"{model_store / mar} not found: run `make mar`", file=sys.stderr)
            return 1
    if _frontend_alive(state):
        # Nothing to do; a new build is served after `make stop`.
        print(f"TorchServe is already running (pid file {pid_file(state)}); `make stop` stops it")
        return 0
    ports = Ports()
    launcher = launch(state, ports, model_store, [f"{m}={mar}" for m, mar in mars.items()], foreground=False)
    if launcher.wait() != 0:
        print(f"TorchServe did not start; see {state / 'torchserve.log'}", file=sys.stderr)
        return 1
    try:
        wait_ready(ports, lambda: _frontend_alive(state), timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(f"{exc}; see {state / 'torchserve.log'} and {state / 'logs'}", file=sys.stderr)
        return 1
    print(f"TorchServe is serving {', '.join(mars.values())}:")
    for model in mars:
        print(f"  POST {ports.url('inference')}/predictions/{model}")
    print(f"management {ports.url('management')}, metrics {ports.url('metrics')}/metrics")
    print("`make stop` stops it")
    return 0


def stop(state: Path) -> int:
    """`torchserve --stop` with this instance's TMPDIR, so it finds this instance's pid file only."""
    if not _frontend_alive(state):
        print("TorchServe is not running here")
        return 0
    command = [str(TORCHSERVE), "--stop", "--foreground"]  # --foreground: wait until it has exited
    if subprocess.run(command, cwd=state, env=server_env(state, Ports())).returncode:
        return 1
    print("TorchServe stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local TorchServe for qmask.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="pid file, sockets and logs")
    parser.add_argument("--model-store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for a READY worker")
    args = parser.parse_args(argv)
    if args.action == "start":
        return start(args.state, args.model_store, args.timeout)
    return stop(args.state)


if __name__ == "__main__":
    sys.exit(main())
