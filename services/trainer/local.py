"""Run a distillation from the command line, alone or under torchrun, without the job queue.

    unast-trainer distill --spec spec.json --out DIR
    torchrun --standalone --nproc_per_node 4 -m services.trainer.cli distill --spec spec.json --out DIR

The same loop as the queued job (distill_job.run_distill) with a context that keeps its checkpoints
and outputs in DIR instead of the database: rank 0 logs and writes, every rank reads the checkpoint
to resume. CPU ranks talk over gloo, CUDA ranks over NCCL (UNAST_TRAINER_DEVICE=cuda).
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from services.trainer.checkpoint import (
    NO_OPTIMIZER,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_artifact,
)
from shared.files import atomic_path
from shared.schemas.jobs import DistillSpec
from shared.settings import Settings


class LocalContext:
    """The part of JobContext a runner uses, kept in a folder: checkpoints, outputs, a log file."""

    def __init__(self, spec: dict[str, Any], directory: Path, settings: Settings):
        self.spec = spec
        self.directory = directory
        self.settings = settings
        self.rank = dist.get_rank() if dist.is_initialized() else 0

    def step(self, step: int, steps: int) -> None:
        pass  # nothing to cancel from: stop the process to stop the run, restart it to resume

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)
            with open(self.directory / "log.txt", "a") as f:
                f.write(message + "\n")

    def save_checkpoint(self, *, step: int, model, optimizer=None, extra=None) -> None:
        save_checkpoint(
            self.directory / "checkpoint",
            step=step,
            config=self.spec,
            model=model,
            optimizer=optimizer.state_dict() if optimizer else NO_OPTIMIZER,
            extra=extra,
        )

    def load_checkpoint(self) -> Checkpoint | None:
        checkpoint = load_checkpoint(self.directory / "checkpoint")
        if checkpoint is not None and checkpoint.config != self.spec:
            raise RuntimeError(f"{self.directory} holds a checkpoint of another spec")
        if checkpoint is not None:
            self.log(f"resuming from the checkpoint at step {checkpoint.step}")
        return checkpoint

    def save_artifact(self, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        return write_artifact(self.directory, name, tensors, meta)


def distill_locally(spec_file: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Validate the spec, join the torchrun group if there is one, distil, write result.json."""
    from services.trainer.distill_job import run_distill

    spec = DistillSpec.model_validate_json(spec_file.read_text())
    torch.set_num_threads(settings.torch_threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if settings.trainer_device.startswith("cuda") else "gloo")
    try:
        out.mkdir(parents=True, exist_ok=True)
        ctx = LocalContext(spec.model_dump(mode="json"), out, settings)
        result = run_distill(ctx)
        if ctx.rank == 0:
            with atomic_path(out / "result.json") as tmp:
                tmp.write_text(json.dumps(result, indent=1))
        return result
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()
