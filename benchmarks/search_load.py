"""The search service under load, against real uvicorn servers on localhost started by this script.

    .venv/bin/python benchmarks/search_load.py                  # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/search_load.py --requests 2     # quicker, noisier

The request: a synthetic 32 x 10 instance (services/search/synthetic.py: latency 50% and params 60% of
the teacher), K=5, max_overlap 0.7, gap 1e-3. Side by side, in one run:
- alone: one client sends its requests one after another (default settings);
- 8 clients at once, default settings (UNAST_SEARCH_CONCURRENCY = the core count, UNAST_SEARCH_QUEUE 8:
  every request is admitted, those beyond the concurrency wait for a solve slot);
- 8 clients at once with UNAST_SEARCH_CONCURRENCY=8: every request solved at once, as before the pool;
- a burst of 8 at once against UNAST_SEARCH_QUEUE=0: how many are refused (429 with Retry-After);
- a client that disconnects from a long request (K=1000, time_limit_s 60, UNAST_SEARCH_CONCURRENCY=1,
  UNAST_SEARCH_QUEUE=0): how soon after the disconnect the solve slot takes a new request.
Per run: requests/s over its wall time, p50 and p99 latency, and the ratios to the client alone.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from services.search.synthetic import synthetic_budgets, synthetic_slots

ROOT = Path(__file__).parents[1]
CLIENTS = 8


def request_body() -> dict:
    return {
        "slots": [s.model_dump() for s in synthetic_slots(32, 10)],
        "budgets": [b.model_dump(exclude_none=True) for b in synthetic_budgets()],
        "k": 5,
        "max_overlap": 0.7,
        "gap": 1e-3,
        "time_limit_s": 60,
    }


class Server:
    """`uvicorn services.search.main:create_app` on a free port, with these UNAST_ settings."""

    def __init__(self, **settings: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
        env |= {f"UNAST_{name.upper()}": value for name, value in settings.items()}
        command = [sys.executable, "-m", "uvicorn", "--factory", "services.search.main:create_app"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/healthz").raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the search server did not start") from None
                time.sleep(0.2)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *_exc) -> None:
        self.process.terminate()
        self.process.wait(30)


def load(url: str, body: dict, clients: int, per_client: int) -> dict:
    """`clients` threads, each sending `per_client` requests one after another, all started at once."""
    latencies: list[float] = []
    statuses: list[int] = []
    retry_after: list[str] = []
    start = threading.Barrier(clients)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            start.wait()
            for _ in range(per_client):
                began = time.perf_counter()
                response = http.post("/v1/search", json=body)
                latencies.append(time.perf_counter() - began)
                statuses.append(response.status_code)
                if response.status_code == 429:
                    retry_after.append(response.headers.get("retry-after", ""))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    served = [lat for lat, status in zip(latencies, statuses, strict=True) if status == 200]
    return {
        "served": len(served),
        "refused": statuses.count(429),
        "retry_after": sorted(set(retry_after)),
        "other": len(statuses) - len(served) - statuses.count(429),
        "rate": len(served) / wall,
        "p50": float(np.percentile(served, 50)) if served else float("nan"),
        "p99": float(np.percentile(served, 99)) if served else float("nan"),
    }


def freed_after_disconnect(body: dict) -> float:
    """Seconds from a client's disconnect, in the middle of a long solve, to its slot taking a request."""
    long = json.dumps(body | {"k": 1000, "time_limit_s": 60}).encode()
    small = body | {"k": 1}
    with Server(search_concurrency="1", search_queue="0") as server:
        client = socket.create_connection(("127.0.0.1", server.port))
        head = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        client.sendall(f"{head}Content-Length: {len(long)}\r\n\r\n".encode() + long)
        time.sleep(1.0)  # parsed and solving by now
        if httpx.post(f"{server.url}/v1/search", json=small, timeout=300).status_code != 429:
            raise RuntimeError("the long solve does not hold the solve slot")
        client.close()
        left = time.perf_counter()
        while httpx.post(f"{server.url}/v1/search", json=small, timeout=300).status_code == 429:
            time.sleep(0.05)
        return time.perf_counter() - left


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3, help="requests per client (alone: 2x this)")
    args = parser.parse_args()
    body = request_body()
    cores = os.cpu_count() or 1
    print(f"32 x 10, K=5, gap 1e-3; {cores} cores; load average before: {os.getloadavg()}")
    rows = []
    with Server() as server:
        httpx.post(f"{server.url}/v1/search", json=body, timeout=300).raise_for_status()  # warm up
        rows.append(
            ("1 client alone", f"default ({cores}, queue 8)", load(server.url, body, 1, 2 * args.requests))
        )
        rows.append(
            (
                f"{CLIENTS} clients",
                f"default ({cores}, queue 8)",
                load(server.url, body, CLIENTS, args.requests),
            )
        )
    with Server(search_concurrency=str(CLIENTS)) as server:
        rows.append(
            (
                f"{CLIENTS} clients",
                f"{CLIENTS} at once (no pool)",
                load(server.url, body, CLIENTS, args.requests),
            )
        )
    with Server(search_queue="0") as server:
        rows.append(
            (f"burst of {CLIENTS}", f"default ({cores}, queue 0)", load(server.url, body, CLIENTS, 1))
        )

    alone = rows[0][2]
    header = (
        f"{'run':>15} | {'concurrency':>20} | {'served':>6} {'429':>4} {'other':>5} | {'req/s':>6} "
        f"{'p50 s':>6} {'p99 s':>6} | {'req/s vs alone':>14} {'p50 vs alone':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, concurrency, r in rows:
        print(
            f"{name:>15} | {concurrency:>20} | {r['served']:>6} {r['refused']:>4} {r['other']:>5} | "
            f"{r['rate']:>6.2f} {r['p50']:>6.2f} {r['p99']:>6.2f} | "
            f"{r['rate'] / alone['rate']:>13.2f}x {r['p50'] / alone['p50']:>11.2f}x"
        )
    burst = rows[-1][2]
    print(f"burst: {burst['refused']} of {CLIENTS} refused with 429, Retry-After {burst['retry_after']}")
    print(f"disconnect: the solve slot took a new request {freed_after_disconnect(body):.2f} s after it")


if __name__ == "__main__":
    main()
