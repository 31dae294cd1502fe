"""Readiness of a TorchServe pod: exit 0 when the default version of `qmask` has a READY worker.

    python -m serve.health [--url http://127.0.0.1:8081] [--model qmask]

`/ping` answers Healthy before any worker has loaded the model, so the readiness probe asks the
management API, which listens inside the pod. Only the standard library is imported: the probe
runs every few seconds, and importing `serve.archive` would pull in torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8081"


def ready_workers(url: str, model: str, timeout: float) -> int:
    """How many workers of the model's default version are READY (0 when the API does not answer)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/models/{model}", timeout=timeout) as response:
            description = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    return sum(w.get("status") == "READY" for v in description for w in v.get("workers", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the model has a READY worker.")
    parser.add_argument("--url", default=DEFAULT_URL, help="management API")
    parser.add_argument("--model", default="qmask")
    parser.add_argument("--timeout", type=float, default=3)
    args = parser.parse_args(argv)
    count = ready_workers(args.url, args.model, args.timeout)
    if count == 0:
        print(f"{args.model}: no READY worker", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
