"""The most memory a job's process used while it ran: what the planner (shared/plan.py) predicts.

On CUDA the allocator's peak (torch.cuda.max_memory_allocated). On CPU the process's anonymous
resident memory (RssAnon: what it allocated; pages of memory-mapped files such as a safetensors
file being read are page cache the kernel can drop) above its level when the job started, sampled
every SAMPLE_S by a thread. The start is taken after the heap earlier jobs freed is handed back to
the system (glibc's malloc_trim), so a job in a long-lived worker is measured from what is live.
"""

import contextlib
import ctypes
import gc
import threading

import torch

from services.trainer.learning.distributed import rank_and_world, summed

SAMPLE_S = 0.01


def resident_bytes() -> int:
    """RssAnon of /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no RssAnon in /proc/self/status")


def release_freed_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the start keeps what it kept
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Started at construction; `per_process()` (a collective) stops it and returns every rank's peak."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
            return
        release_freed_heap()
        self.start = self.sampled = resident_bytes()
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.sampled = max(self.sampled, resident_bytes())

    def bytes(self) -> int:
        """This process's peak above its start, so far."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return max(self.sampled, resident_bytes()) - self.start

    def per_process(self) -> list[int]:
        rank, world = rank_and_world()
        if self.device.type != "cuda":
            self.done.set()
            self.sampler.join()
        mine = torch.zeros(world, dtype=torch.float64)
        mine[rank] = self.bytes()
        return [int(n) for n in summed(mine, self.device)]
