"""Model versions on a running TorchServe, through its management API (loopback port 8081).

    python -m serve.manage list
    python -m serve.manage register qmask-2.0.mar [--workers 1]   # a file in the model store
    python -m serve.manage set-default 2.0
    python -m serve.manage scale 2.0 --workers 2
    python -m serve.manage unregister 2.0

The default version answers `POST /predictions/qmask`; any version answers
`POST /predictions/qmask/VERSION`. TorchServe refuses to unregister the default version: set
another one as default first.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from serve.health import DEFAULT_URL
from serve.models import MODEL_NAME


def _version_key(version: str) -> tuple:
    """Sort key: 2.10 after 2.9; names that are not numbers after every numbered version."""
    parts = version.split(".")
    if all(part.isdigit() for part in parts):
        return (0, tuple(int(part) for part in parts), version)
    return (1, (), version)


class ManagementError(RuntimeError):
    """The management API refused a call; the message is TorchServe's."""


class Management:
    def __init__(self, url: str = DEFAULT_URL, model: str = MODEL_NAME, timeout: float = 300) -> None:
        self.url = url.rstrip("/")
        self.model = model
        # Registering waits for the new workers to load the model (synchronous=true).
        self.timeout = timeout

    def _call(self, method: str, path: str, **params: object) -> object:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(f"{self.url}{path}{query}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("message", exc.reason)
            except ValueError:
                message = exc.reason
            raise ManagementError(f"{method} {path}: {exc.code} {message}") from exc

    def versions(self) -> list[dict]:
        """One entry per registered version, oldest version first (TorchServe's own order changes
        with the versions' names): version, default (bool), workers (statuses), batch size."""
        default = self._call("GET", f"/models/{self.model}")[0]["modelVersion"]
        entries = [
            {
                "version": v["modelVersion"],
                "default": v["modelVersion"] == default,
                "archive": v["modelUrl"],
                "workers": [w["status"] for w in v["workers"]],
                "batch_size": v["batchSize"],
            }
            for v in self._call("GET", f"/models/{self.model}/all")
        ]
        return sorted(entries, key=lambda entry: _version_key(entry["version"]))

    def register(self, archive: str, workers: int = 1) -> str:
        answer = self._call("POST", "/models", url=archive, initial_workers=workers, synchronous="true")
        return answer["status"]

    def set_default(self, version: str) -> str:
        return self._call("PUT", f"/models/{self.model}/{version}/set-default")["status"]

    def scale(self, version: str, workers: int) -> str:
        path = f"/models/{self.model}/{version}"
        return self._call("PUT", path, min_worker=workers, max_worker=workers, synchronous="true")["status"]

    def unregister(self, version: str) -> str:
        return self._call("DELETE", f"/models/{self.model}/{version}")["status"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="management API")
    parser.add_argument("--model", default=MODEL_NAME)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered versions, the default one and their workers")
    register = sub.add_parser("register", help="register a .mar from the model store")
    register.add_argument("archive", help="file name in the model store, e.g. qmask-2.0.mar")
    register.add_argument("--workers", type=int, default=1)
    sub.add_parser("set-default", help="make a version answer /predictions/MODEL").add_argument("version")
    scale = sub.add_parser("scale", help="set a version's number of workers")
    scale.add_argument("version")
    scale.add_argument("--workers", type=int, required=True)
    sub.add_parser("unregister", help="remove a version (not the default one)").add_argument("version")
    args = parser.parse_args(argv)

    api = Management(args.url, args.model)
    try:
        if args.command == "list":
            for v in api.versions():
                mark = "*" if v["default"] else " "
                workers = ", ".join(v["workers"]) or "no workers"
                print(f"{mark} {v['version']}  {v['archive']}  batch {v['batch_size']}  {workers}")
        elif args.command == "register":
            print(api.register(args.archive, args.workers))
        elif args.command == "set-default":
            print(api.set_default(args.version))
        elif args.command == "scale":
            print(api.scale(args.version, args.workers))
        else:
            print(api.unregister(args.version))
    except (ManagementError, OSError) as exc:
        print(f"serve.manage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
