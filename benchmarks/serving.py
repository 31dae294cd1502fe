"""Latency and throughput of a running TorchServe (`make serve` first).

    python -m benchmarks.serving [--requests 40] [--clients 1 8 16 32] [--photos ../shared/data/real-masked]

For each number of concurrent clients, sends `--requests` photos (the real masked photos, in name
order, round robin) as fast as the clients get answers, and prints the median and 95th-percentile
latency and the photos answered per second. Then a mixed load: the same photos with bad requests
between them (garbage, truncated files, wrong types, decompression bombs), which must not make a
single good photo fail. Last, photos one after another while a 10 s clip is unmasked by the clip
model (`--clip-url`): their latency must not depend on the clip. One request first warms the
worker up. The loops are bounded and only ever
talk to the given URL (loopback by default). The load generator runs on the same machine as the
server, so on a small machine it takes CPU from the server.
"""

from __future__ import annotations

import argparse
import io
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.data import REAL_MASKED
from qmask.imageio import FORMAT_BY_SUFFIX, SUPPORTED_FORMATS

DEFAULT_URL = "http://127.0.0.1:8080/predictions/qmask"
DEFAULT_CLIP_URL = "http://127.0.0.1:8080/predictions/qmask-video"
DEFAULT_PHOTOS = REAL_MASKED


@dataclass
class Level:
    clients: int
    latencies: list[float]  # seconds, of every answered request
    statuses: list[int]  # HTTP status of each request, 0 when there was no answer
    wall: float

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000 if ordered else math.nan


def post(url: str, body: bytes, media_type: str, timeout: float = 120) -> int:
    """The HTTP status of one photo's request; 0 when the server did not answer."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": media_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def bad_requests(photo: bytes) -> list[tuple[bytes, str]]:
    """Requests the server must refuse quickly, without harm to the photos between them."""
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400 MP in a few KB
    return [
        (b"not an image at all", "image/jpeg"),
        (photo[: len(photo) // 3], "image/png"),  # truncated
        (b"hello", "text/plain"),
        (bomb.getvalue(), "image/png"),
        (bytes(range(256)) * 64, "application/octet-stream"),
    ]


def run_level(url: str, items: list[tuple[bytes, str, bool]], clients: int, requests: int) -> Level:
    """`requests` requests (`items` round robin) from `clients` threads, each sending its next one
    once answered; items marked True are the photos whose answers and latency count."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: list[int] = []

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            body, media_type, counted = items[index % len(items)]
            start = time.perf_counter()
            status = post(url, body, media_type)
            elapsed = time.perf_counter() - start
            if not counted:
                continue
            with lock:
                statuses.append(status)
                if status:
                    latencies.append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    return Level(clients, latencies, statuses, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of JPEG/PNG/WebP photos")
    parser.add_argument("--requests", type=int, default=40, help="requests per level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--clip-url", default=DEFAULT_CLIP_URL, help="the clip model's endpoint")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in FORMAT_BY_SUFFIX)
    if not files:
        raise SystemExit(f"benchmarks.serving: no photos in {args.photos}")
    photos = [(p.read_bytes(), SUPPORTED_FORMATS[FORMAT_BY_SUFFIX[p.suffix.lower()]]) for p in files]
    if post(args.url, *photos[0]) != 200:
        raise SystemExit(
            f"benchmarks.serving: {args.url} does not answer a photo; is the server up (make serve)?"
        )
    print(f"{args.url}, {args.requests} requests per level, photos from {args.photos}")
    # A photo without a detectable face is answered too (422): it counts, and is listed.
    print("| clients | p50 ms | p95 ms | photos/s | answers other than 200 |")
    print("|---|---|---|---|---|")
    good = [(body, media_type, True) for body, media_type in photos]
    for clients in args.clients:
        print(row(run_level(args.url, good, clients, args.requests), str(clients)))
    # Mixed: after every good photo a bad request; 422 (no face) counts as answered, as above.
    bad = bad_requests(photos[0][0])
    mixed = [item for i, photo in enumerate(good) for item in (photo, (*bad[i % len(bad)], False))]
    clients = max(args.clients)
    level = run_level(args.url, mixed, clients, 2 * args.requests)
    print(row(level, f"{clients}, half bad"))
    failed = sum(s not in (200, 422) for s in level.statuses)
    print(f"\nmixed load: {len(level.statuses)} good photos, {failed} failed")
    print(while_clip(args.url, args.clip_url, photos[0]))


def while_clip(url: str, clip_url: str, photo: tuple[bytes, str], count: int = 10) -> str:
    """Latency of photos sent one after another while a 10 s clip (240 frames) is in work."""
    from benchmarks.reliability import photo_clip

    clip = photo_clip(240, 24)
    answer: list[tuple[int, float]] = []

    def send_clip() -> None:
        start = time.perf_counter()
        answer.append((post(clip_url, clip, "video/mp4", timeout=900), time.perf_counter() - start))

    worker = threading.Thread(target=send_clip)
    worker.start()
    time.sleep(3)  # the clip is being unmasked
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        status = post(url, *photo)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            return f"while a clip is in work: a photo got {status}"
    busy = worker.is_alive()
    worker.join()
    level = Level(1, latencies, [200] * count, sum(latencies))
    return (
        f"while a 10 s clip is in work ({'still' if busy else 'no longer'} after the photos; it took "
        f"{answer[0][1]:.0f} s, status {answer[0][0]}): {count} photos, p50 {level.percentile(50):.0f} ms, "
        f"p95 {level.percentile(95):.0f} ms"
    )


def row(level: Level, label: str) -> str:
    rate = len(level.latencies) / level.wall
    others = Counter(s for s in level.statuses if s != 200)
    listed = ", ".join(f"{n}x {s or 'no answer'}" for s, n in sorted(others.items())) or "none"
    return f"| {label} | {level.percentile(50):.0f} | {level.percentile(95):.0f} | {rate:.1f} | {listed} |"


if __name__ == "__main__":
    main()
