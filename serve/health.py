"""Readiness of a TorchServe pod: exit 0 when it should get traffic.

    python -m serve.health [--url http://127.0.0.1:8081] [--max-pending qmask=48 qmask-video=2]

Ready means: the default version of every model (`qmask` for photos, `qmask-video` for clips)
has a READY worker, and no model's queue holds `--max-pending` requests or more. `/ping` answers
Healthy before any worker has loaded the model, and TorchServe keeps saying READY while its queue
is full (it answers 503 only once the queue overflows), so the probe asks the management API,
which listens inside the pod, for both. A pod that is turned away finishes its queue and comes back.
Only the standard library (and `serve.models`) is imported: the probe runs every few seconds,
and importing `serve.archive` would pull in torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from serve.models import MODEL_NAME, VIDEO_MODEL_NAME

DEFAULT_URL = "http://127.0.0.1:8081"
# Photos: three quarters of job_queue_size (64, serve/config.properties), a few seconds of work on
# a GPU worker. Clips: each is minutes of work on its own queue.
DEFAULT_MAX_PENDING = {MODEL_NAME: 48, VIDEO_MODEL_NAME: 2}


def assess(url: str, model: str, max_pending: int, timeout: float) -> str | None:
    """Why the model's default version should not get traffic now, or None when it should."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/models/{model}", timeout=timeout) as response:
            description = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{model}: the management API does not answer ({exc})"
    version = description[0]
    if not any(w.get("status") == "READY" for w in version.get("workers", [])):
        return f"{model}: no READY worker"
    pending = version.get("jobQueueStatus", {}).get("pendingRequests", 0)
    if pending >= max_pending:
        return f"{model}: {pending} requests queued (at most {max_pending - 1} to stay ready)"
    return None


def _limit(text: str) -> tuple[str, int]:
    model, _, count = text.partition("=")
    return model, int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the pod should get traffic.")
    parser.add_argument("--url", default=DEFAULT_URL, help="management API")
    parser.add_argument(
        "--max-pending",
        nargs="+",
        type=_limit,
        default=list(DEFAULT_MAX_PENDING.items()),
        metavar="MODEL=N",
        help="models to check, each with the queue length at which the pod is turned away",
    )
    parser.add_argument("--timeout", type=float, default=3)
    args = parser.parse_args(argv)
    problems = [p for model, n in args.max_pending if (p := assess(args.url, model, n, args.timeout))]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
