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


def rows_gathered(parts: list[torch.Tensor], dst: int) -> list[torch.Tensor] | None:
    """Each rank's `parts` (the same shapes and dtypes on every rank: its rows of the same tensors),
    each joined along its first dimension in rank order on rank `dst` (a collective; the others get
    None). One message per dtype, not one per tensor."""
    rank, world = rank_and_world()
    if world == 1:
        return parts
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, part in enumerate(parts):
        by_dtype.setdefault(part.dtype, []).append(i)
    joined: list[torch.Tensor] = [torch.empty(0)] * len(parts)
    for indices in by_dtype.values():  # in the parts' order: the same on every rank
        flat = torch.cat([parts[i].reshape(-1) for i in indices])
        received = [torch.empty_like(flat) for _ in range(world)] if rank == dst else None
        dist.gather(flat, received, dst=dst)
        if received is None:
            continue
        sizes = [parts[i].numel() for i in indices]
        pieces = [each.split(sizes) for each in received]
        for k, i in enumerate(indices):
            joined[i] = torch.cat([piece[k].view(parts[i].shape) for piece in pieces])
    return joined if rank == dst else None


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
