"""The README's main job (`unast run`) starts all three services, which answer health and docs."""

import os
import signal
import socket
import subprocess
import sys

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unast_run_starts_every_service(tmp_path):
    ports = {name: free_port() for name in ("profiler", "search", "trainer")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    env |= {f"UNAST_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    env |= {"UNAST_DATABASE_URL": f"sqlite:///{tmp_path}/unast.db", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "all services ready" in line:
                break
        assert any("all services ready" in line for line in lines), "".join(lines)
        for _name, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            assert f"{base}/docs" in "".join(lines)
            assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
            assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
            assert "swagger" in httpx.get(f"{base}/docs").text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    for port in ports.values():  # the children went with it
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
