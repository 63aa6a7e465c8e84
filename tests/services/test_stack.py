"""The README's main job (`unast run`) starts all three services, which answer health and docs; it
stops every process it started on SIGINT or SIGTERM, even when killed outright, and refuses to start
over a stack already running."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HANG_GUARD_S = 60  # bounded waits against a hang; nothing here is timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(tmp_path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {name: free_port() for name in ("profiler", "search", "trainer")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    env |= {f"UNAST_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    env |= {"UNAST_DATABASE_URL": f"sqlite:///{tmp_path}/unast.db", "PYTHONUNBUFFERED": "1"}
    return env, ports


def start_stack(env) -> tuple[subprocess.Popen, str]:
    """`unast run`, once it says every service is ready; its output so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"], env=env, stdout=subprocess.PIPE, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "all services ready" in line:
            break
    assert any("all services ready" in line for line in lines), "".join(lines)
    return proc, "".join(lines)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + HANG_GUARD_S
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def assert_ports_closed(ports: dict[str, int]) -> None:
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_unast_run_starts_every_service_and_stops_every_child(tmp_path, signum):
    """SIGINT (Ctrl-C) or SIGTERM (docker, systemd, CI) stops every child; a second `unast run` over
    a running stack refuses to start instead of reporting it ready."""
    env, ports = stack_env(tmp_path)
    proc, output = start_stack(env)
    children = children_of(proc.pid)
    try:
        assert len(children) == 5  # three services and two workers
        for port in ports.values():
            base = f"http://127.0.0.1:{port}"
            assert f"{base}/docs" in output
            assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
            assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
            assert "swagger" in httpx.get(f"{base}/docs").text.lower()
        if signum == signal.SIGINT:
            second = subprocess.run(
                [sys.executable, "-m", "services.cli", "run"],
                env=env,
                capture_output=True,
                text=True,
                timeout=HANG_GUARD_S,
            )
            assert second.returncode != 0
            assert "already in use" in second.stderr and "Traceback" not in second.stderr
            assert "ready" not in second.stdout
    finally:
        proc.send_signal(signum)
        assert proc.wait(HANG_GUARD_S) == 0
        assert wait_until_gone(children) == []
    assert_ports_closed(ports)


LAUNCHER = """
import time
from services import stack
from shared.settings import Settings
sleeper = stack.Process("sleeper", "http.server", ("0", "--bind", "127.0.0.1"), None)
children = stack.start(Settings(), processes=(sleeper, sleeper))
print(" ".join(str(c.pid) for c in children), flush=True)
time.sleep(600)
"""


def test_children_stop_when_the_launcher_is_killed_outright():
    """SIGKILL gives the launcher no chance: the kernel signals its children (PR_SET_PDEATHSIG)."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    children = [int(pid) for pid in launcher.stdout.readline().split()]
    try:
        assert len(children) == 2 and all(alive(pid) for pid in children)
        launcher.kill()
        launcher.wait(HANG_GUARD_S)
        assert wait_until_gone(children) == []
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_unast_run_starts_again_a_worker_that_was_killed(tmp_path):
    """A SIGKILLed worker (out of memory, an operator's mistake) is started again: the stack keeps
    running jobs instead of leaving them queued for good."""
    env, _ports = stack_env(tmp_path)
    proc, _output = start_stack(env)
    try:
        (worker,) = [pid for pid in children_of(proc.pid) if "services.trainer.cli worker" in cmdline(pid)]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            workers = [p for p in children_of(proc.pid) if "services.trainer.cli worker" in cmdline(p)]
            if any(p != worker and alive(p) for p in workers):
                break
            time.sleep(0.2)
        assert any(p != worker and alive(p) for p in workers), "the killed worker was not started again"
        assert proc.poll() is None and len([p for p in children_of(proc.pid) if alive(p)]) == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG_GUARD_S) == 0


def test_the_supervisor_gives_up_on_a_process_that_keeps_exiting(tmp_path):
    from services import stack
    from shared.settings import Settings

    sleeper = stack.Process("sleeper", "http.server", ("0", "--bind", "127.0.0.1"), None)
    children = stack.start(Settings(), processes=(sleeper,))
    with open(tmp_path / "stack.log", "ab") as log:
        supervisor = stack.Supervisor(Settings(), children, (sleeper,), log, max_restarts=1, poll_s=0.05)
        supervisor.start()
        try:
            first = children[0]
            first.kill()
            deadline = time.monotonic() + HANG_GUARD_S
            while children[0] is first and time.monotonic() < deadline:
                time.sleep(0.05)
            assert children[0] is not first and children[0].poll() is None  # started again
            children[0].kill()
            supervisor.join(HANG_GUARD_S)
            assert not supervisor.is_alive()
            assert supervisor.failure == "sleeper exited with code -9 after 1 restarts (see the stack's log)"
        finally:
            supervisor.stop()
            stack.stop(children)
    logged = (tmp_path / "stack.log").read_text()
    assert "sleeper exited with code -9; starting it again (1/1)" in logged and supervisor.failure in logged
