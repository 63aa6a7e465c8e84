"""Torchrun helpers: which device a rank trains on, its share of independent work, collectives on
tensors (never pickled objects)."""

import os

import torch
import torch.distributed as dist
from torch import nn

from shared.settings import Settings


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def job_device(settings: Settings) -> torch.device:
    """The settings' device; under torchrun on CUDA, this rank's own GPU."""
    if settings.trainer_device.startswith("cuda") and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(settings.trainer_device)


def owners(costs: list[float], world: int) -> list[int]:
    """The rank that takes each of independent pieces of work of these costs: the largest first, each
    to the rank with the least so far (longest-processing-time first: within 4/3 of the best split).
    The same on every rank: ties go to the lower rank, equal costs keep their order."""
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        rank = min(range(world), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += costs[i]
    return owner


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce every gradient as one flat buffer (one collective, not one per tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def gathered_rng_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's data RNG state (a collective: every rank takes part), so that each rank resumes
    its own batch stream."""
    state = generator.get_state()
    _, world = rank_and_world()
    if world == 1:
        return {"data_rng.0": state}
    gathered = [torch.empty_like(state, device=device) for _ in range(world)]
    dist.all_gather(gathered, state.to(device))
    return {f"data_rng.{r}": s.cpu() for r, s in enumerate(gathered)}


def summed(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The element-wise sum over ranks (each rank fills its own entries, zeros elsewhere)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    total = values.to(device).clone()
    dist.all_reduce(total)
    return total.cpu()
