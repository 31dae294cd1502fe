"""Run the web page locally in the background, beside the TorchServe of `make serve`.

    python -m frontend.run start   # waits until the page answers, prints its URL (make run)
    python -m frontend.run stop    # stops this page only, by its pid file (make stop)

State (pid file, log) is in `out/frontend/`. The browser test starts the page with the same
`streamlit_command`, in the foreground.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "frontend" / "app.py"
DEFAULT_STATE = REPO / "out" / "frontend"
DEFAULT_PORT = 8501


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """`streamlit run` for the page; run it from the repository root so `frontend` imports."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",  # no browser opened, no e-mail prompt
        "--server.fileWatcherType", "none",
        # Visitors' photos must not leave for anywhere but the API: no usage statistics.
        "--browser.gatherUsageStats", "false",
        # The page shows its own messages; a bug must not show a traceback either.
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def page_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _pid_file(state: Path) -> Path:
    return state / "streamlit.pid"


def _running(state: Path) -> psutil.Process | None:
    """The page's process from the pid file, if it still runs this app (not a recycled pid)."""
    try:
        process = psutil.Process(int(_pid_file(state).read_text()))
        return process if str(APP) in process.cmdline() else None
    except (OSError, ValueError, psutil.Error):
        return None


def start(state: Path, port: int, timeout: float) -> int:
    url = f"http://127.0.0.1:{port}"
    if _running(state):
        print(f"The page is already running: {url} (`make stop` stops it)")
        return 0
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "streamlit.log", "ab") as log:
        process = subprocess.Popen(
            streamlit_command(port),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `stop` ends it and nothing else
        )
    _pid_file(state).write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while not page_ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"The page did not start; see {state / 'streamlit.log'}", file=sys.stderr)
            stop(state)
            return 1
        time.sleep(0.5)
    api = os.environ.get("QMASK_API_URL", "http://127.0.0.1:8080")
    print(f"QMask web page: {url} (API {api}); `make stop` stops it")
    return 0


def stop(state: Path) -> int:
    process = _running(state)
    if process is None:
        print("The page is not running here")
        _pid_file(state).unlink(missing_ok=True)
        return 0
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except psutil.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    _pid_file(state).unlink(missing_ok=True)
    print("The page stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run QMask's web page locally.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="pid file and log")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the page")
    args = parser.parse_args(argv)
    if args.action == "start":
        return start(args.state, args.port, args.timeout)
    return stop(args.state)


if __name__ == "__main__":
    sys.exit(main())
