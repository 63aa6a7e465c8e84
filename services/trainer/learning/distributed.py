"""Torchrun helpers: which device a rank trains on, its share of independent work, collectives on
tensors (never pickled objects)."""

import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from services.jobs.checkpoint import unshared
from shared.files import atomic_path
from shared.settings import Settings


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def backend(settings: Settings) -> str:
    """torch.distributed's backend for the trainer's device: NCCL between GPUs, gloo on CPU."""
    return "nccl" if settings.trainer_device.startswith("cuda") else "gloo"


def job_device(settings: Settings) -> torch.device:
    """The settings' device; under torchrun on CUDA, this rank's own GPU."""
    if settings.trainer_device.startswith("cuda") and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(settings.trainer_device)


def summed(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The element-wise sum over ranks (each rank fills its own entries, zeros elsewhere)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    total = values.to(device).clone()
    dist.all_reduce(total)
    return total.cpu()


def gathered_files(tensors: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    """Every rank's tensors (disjoint keys), merged on rank 0 through a folder every rank can write (a
    collective; the others get {}). Through files, not the network: a rank's part may be larger than
    any device's memory, and the job's folder is shared by its ranks anyway."""
    rank, world = rank_and_world()
    if world == 1:
        return tensors
    with atomic_path(folder / f"rank{rank}.safetensors") as tmp:
        save_file(unshared(tensors), tmp)
    dist.barrier()
    merged: dict[str, torch.Tensor] = {}
    if rank == 0:
        for r in range(world):
            merged |= load_file(folder / f"rank{r}.safetensors")
        shutil.rmtree(folder)
    return merged
