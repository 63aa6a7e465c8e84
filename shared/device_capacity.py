"""What a training device offers: its memory and its float32 matmul rate, each asked once of a
short-lived process, so that a service or the command line that asks holds no GPU context (and
needs no torch of its own)."""

import functools
import logging
import os
import subprocess
import sys

log = logging.getLogger("unast.device_capacity")


def device_memory_bytes(device: str) -> int | None:
    """Memory of the trainer's device, or None when it cannot be told (the check is then skipped)."""
    if device == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return _cuda_memory_bytes(int(device.partition(":")[2] or 0))


@functools.cache
def _cuda_memory_bytes(index: int) -> int | None:
    answer = _ask(f"import torch; print(torch.cuda.get_device_properties({index}).total_memory)")
    if answer is None:
        log.warning("cannot tell the memory of cuda:%d; trainer jobs are not checked against it", index)
    return None if answer is None else int(answer)


def _ask(code: str) -> float | None:
    """The number a short-lived Python process running `code` prints; None when it prints none."""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return float(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


MATMUL = """
import time, torch
torch.set_num_threads({threads})
device, n = torch.device({device!r}), 1024
a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
for _ in range(3):
    a @ b
sync()
start, calls = time.perf_counter(), 0
while time.perf_counter() - start < 0.5:
    a @ b
    calls += 1
sync()
print(2 * n**3 * calls / (time.perf_counter() - start))
"""


@functools.cache
def device_flops(device: str, threads: int) -> float | None:
    """The device's float32 matmul rate, measured once by a short-lived process (the API holds no GPU
    context and no torch); None when it cannot be measured."""
    rate = _ask(MATMUL.format(device=device, threads=threads))
    if rate is None:
        log.warning("cannot measure the speed of %s; plans give no time", device)
    return rate
