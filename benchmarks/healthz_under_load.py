"""/healthz while a maximal body is checked, against the profiler and the search started as `unast run`
starts them (`python -m services.<name>.cli serve`, SQLite in a temporary folder), on localhost.

    .venv/bin/python -m benchmarks.healthz_under_load             # about a minute on 2 cores
    .venv/bin/python -m benchmarks.healthz_under_load --repeats 1

The bodies (issue 20, item 6; the first two are its reproductions):
- profiler, `POST /v1/devices/1/estimate` with 600,000 `choices` keys (12.5 MB; a 422);
- search, `POST /v1/search` with `{"slots": [0 x 1,000,000]}` (3 MB; a 422);
- search, `POST /v1/search` with 280,000 one-candidate slots (16 MB, valid JSON of a valid schema: it is
  built and reaches the route, which refuses it past UNAST_SEARCH_MAX_SLOTS; a 422).
While each is sent and checked, a second client asks /healthz every 20 ms on its own connection. Per
body: the POST's status and time, and the /healthz latencies (median, max). The first large body a
service gets also starts its checker processes: its row says so.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]


class Service:
    """`python -m services.<name>.cli serve` on a free port, with these UNAST_ settings."""

    def __init__(self, name: str, **settings: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
        env |= {f"UNAST_{k.upper()}": v for k, v in settings.items()}
        env |= {"UNAST_HOST": "127.0.0.1", f"UNAST_{name.upper()}_PORT": str(port)}
        env["UNAST_LOG_LEVEL"] = "warning"
        command = [sys.executable, "-m", f"services.{name}.cli", "serve"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{self.url}/healthz").raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the {name} service did not start") from None
                time.sleep(0.2)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        self.process.wait(30)


def health_while_posting(url: str, path: str, body: bytes) -> tuple[int, float, list[float]]:
    """(the POST's status, its seconds, /healthz latencies in seconds while it ran)."""
    answer: dict = {}

    def post() -> None:
        started = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        answer["status"] = httpx.post(url + path, content=body, headers=headers, timeout=600).status_code
        answer["s"] = time.perf_counter() - started

    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/healthz")  # the connection is open before the body goes
        thread = threading.Thread(target=post)
        thread.start()
        while thread.is_alive():
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
        thread.join()
    return answer["status"], answer["s"], latencies


def estimate_body(keys: int) -> bytes:
    choices = {f"b{i}.attn": "x" for i in range(keys)}
    return json.dumps({"shape": "tiny", "length": 8, "architecture": {"choices": choices}}).encode()


def zeros_body(slots: int) -> bytes:
    return json.dumps({"slots": [0] * slots}).encode()


def valid_search_body(max_bytes: int) -> bytes:
    slots = []
    size, i = 12, 0
    while True:
        slot = {"id": f"s{i}", "candidates": [{"id": "a", "score": 0}]}
        size += len(json.dumps(slot)) + 2
        if size > max_bytes:
            return json.dumps({"slots": slots}).encode()
        slots.append(slot)
        i += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2, help="times each body is sent")
    args = p.parse_args()
    max_bytes = 16 * 1024 * 1024  # UNAST_MAX_BODY_BYTES' default
    cases = [
        ("profiler", "/v1/devices/1/estimate", "600k choices keys", estimate_body(600_000)),
        ("search", "/v1/search", "slots: [0 x 1e6]", zeros_body(1_000_000)),
        ("search", "/v1/search", "280k valid slots", valid_search_body(max_bytes)),
    ]
    print(
        f"{'service':<9} {'body':<18} {'MB':>5} {'status':>6} {'POST s':>7} {'healthz median ms':>18} "
        f"{'max ms':>7} {'polls':>6}"
    )
    with tempfile.TemporaryDirectory() as folder:
        common = {"max_body_bytes": str(max_bytes), "input_roots": json.dumps([folder])}
        with (
            Service("profiler", database_url=f"sqlite:///{folder}/unast.db", **common) as profiler,
            Service("search", **common) as search,
        ):
            urls = {"profiler": profiler.url, "search": search.url}
            started = set()
            for name, path, label, body in cases:
                for _ in range(args.repeats):
                    status, seconds, latencies = health_while_posting(urls[name], path, body)
                    note = "" if name in started else "  (starts the checkers)"
                    started.add(name)
                    print(
                        f"{name:<9} {label:<18} {len(body) / 1e6:>5.1f} {status:>6} {seconds:>7.2f} "
                        f"{statistics.median(latencies) * 1e3:>18.1f} {max(latencies) * 1e3:>7.1f} "
                        f"{len(latencies):>6}{note}"
                    )


if __name__ == "__main__":
    main()
