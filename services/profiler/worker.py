"""The profiler's worker (`unast-profiler worker`): the job runtime's worker with the profiler's kinds,
tables and settings. It measures the device it runs on; run one per device."""

import torch
from sqlalchemy import Engine

from services.jobs.worker import Worker, WorkerConfig
from services.profiler.jobs import KINDS
from services.profiler.main import MIGRATIONS, VERSION_TABLE
from services.profiler.models import QUEUE, recovery
from shared.db import upgrade
from shared.settings import Settings


def profiler_worker(settings: Settings) -> Worker:
    """A worker that measures this process's device (UNAST_PROFILER_DEVICE)."""
    torch.set_num_threads(settings.torch_threads)
    config = WorkerConfig(
        heartbeat_s=settings.profiler_heartbeat_s,
        recovery=recovery(settings),
        poll_s=settings.profiler_poll_s,
        directory=lambda job_id: settings.artifacts_root.resolve() / "profiler" / job_id,
    )

    def migrate(engine: Engine) -> None:
        upgrade(engine, MIGRATIONS, VERSION_TABLE)

    return Worker(settings, kinds=KINDS, queue=QUEUE, config=config, migrate=migrate)
