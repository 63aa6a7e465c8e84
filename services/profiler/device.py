"""The device this profiler measures: its fingerprint, memory and a rough matmul rate.

Two measurements are comparable only on the same fingerprint: CPU model, instruction set and thread
count, or GPU name, compute capability and driver; plus the torch version. (The dtype is part of each
LUT's key rather than of the device.) The API process never touches the accelerator itself -- it asks
a short-lived `unast-profiler probe` process -- so serving requests holds no GPU context or memory.
"""

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import torch
from pydantic import BaseModel

from shared.settings import Settings

PROBE_MATMUL_SIZE = 256


class DeviceInfo(BaseModel):
    key: str
    name: str
    kind: str
    memory_bytes: int
    fingerprint: dict
    gflops: dict[str, float]  # measured matmul rate per dtype, for time estimates only


def torch_device(settings: Settings) -> torch.device:
    return torch.device(settings.profiler_device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return next((word for word in first.split() if word[:1].isdigit() and "." in word), first)


def fingerprint(device: torch.device) -> tuple[str, int, dict]:
    """(name, memory bytes, fingerprint) of the device as torch sees it."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        fp = {
            "kind": "cuda",
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_bytes": props.total_memory,
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
            "torch": torch.__version__,
        }
        return props.name, props.total_memory, fp
    threads = torch.get_num_threads()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fp = {
        "kind": "cpu",
        "cpu": _cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_bytes": memory,
        "torch": torch.__version__,
    }
    return f"{fp['cpu']} ({threads} thread{'s' * (threads > 1)})", memory, fp


def device_key(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    n = PROBE_MATMUL_SIZE
    a = torch.randn(n, n, device=device).to(dtype)
    times = []
    for _ in range(7):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[2:]) / 1e9


def probe(settings: Settings) -> DeviceInfo:
    """Fingerprint this process's device (torch threads set from settings) and time a small matmul."""
    torch.set_num_threads(settings.torch_threads)
    device = torch_device(settings)
    name, memory, fp = fingerprint(device)
    rates = {
        dtype: _matmul_gflops(device, getattr(torch, dtype)) for dtype in ("float32", "float16", "bfloat16")
    }
    return DeviceInfo(
        key=device_key(fp), name=name, kind=fp["kind"], memory_bytes=memory, fingerprint=fp, gflops=rates
    )


def probe_in_subprocess(settings: Settings) -> DeviceInfo:
    """probe() in a child process, once per API process, device and thread count."""
    return _probe_once(settings.profiler_device, settings.torch_threads)


@cache
def _probe_once(device: str, threads: int) -> DeviceInfo:
    env = {"UNAST_PROFILER_DEVICE": device, "UNAST_TORCH_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, "-m", "services.profiler.cli", "probe"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"probing the device failed: {result.stderr.strip()[-2000:]}")
    return DeviceInfo.model_validate_json(result.stdout)
