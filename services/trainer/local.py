"""Run a job from a spec file without the queue, alone or under torchrun.

    unast-trainer run --spec spec.json --out DIR
    torchrun --standalone --nproc_per_node 4 -m services.trainer.cli run --spec spec.json --out DIR

The same runner as the queued job, with a LocalContext that keeps checkpoints and outputs in DIR:
rank 0 logs and writes (DIR/log.txt, DIR/result.json, DIR/job.json), every rank reads the checkpoint
to resume. CPU ranks talk over gloo, CUDA ranks over NCCL (UNAST_TRAINER_DEVICE=cuda). A job it
refers to (a distill job, say) is the folder of an earlier local run or a job id in the store.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from services.jobs.context import JobRecord, LocalContext
from services.trainer.kinds import KINDS
from services.trainer.learning.distributed import backend
from services.trainer.models import QUEUE
from shared.db import make_engine, make_sessionmaker
from shared.files import atomic_path
from shared.schemas.trainer import job_spec_adapter
from shared.settings import Settings


def store_lookup(settings: Settings):
    """Jobs by id from the trainer's store (read only)."""

    def lookup(job_id: str) -> JobRecord:
        engine = make_engine(settings.database_url)
        try:
            with make_sessionmaker(engine)() as session:
                row = QUEUE.get(session, job_id=job_id)
                if row is None:
                    raise LookupError(
                        f"no job {job_id!r} in {engine.url.render_as_string(hide_password=True)}"
                    )
                directory = Path(row.artifact_dir) if row.artifact_dir else None
                return JobRecord(row.id, row.kind, row.spec, row.state, row.result, directory)
        finally:
            engine.dispose()

    return lookup


def run_locally(spec_file: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Validate the spec, join the torchrun group if there is one, run the job, write result.json."""
    spec = job_spec_adapter.validate_json(spec_file.read_text())
    kind = KINDS[spec.kind]
    torch.set_num_threads(settings.torch_threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group(backend(settings))
    try:
        out.mkdir(parents=True, exist_ok=True)
        ctx = LocalContext(spec.model_dump(mode="json"), out, settings, lookup=store_lookup(settings))
        if ctx.rank == 0:
            ctx.write_record(kind.name, "running", None)
        result = kind.stored_result(kind.run(ctx))
        if ctx.rank == 0:
            with atomic_path(out / "result.json") as tmp:
                tmp.write_text(json.dumps(result, indent=1))
            ctx.write_record(kind.name, "succeeded", result)
        return result
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()
