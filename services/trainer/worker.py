"""The trainer's worker (`unast-trainer worker`): the job runtime's worker with the trainer's kinds,
tables and settings. Start as many as you like, on one database."""

from collections.abc import Mapping

import torch
from sqlalchemy import Engine

from services.jobs.kind import JobKind
from services.jobs.worker import Worker, WorkerConfig
from services.trainer.kinds import KINDS
from services.trainer.main import MIGRATIONS, VERSION_TABLE
from services.trainer.models import QUEUE, recovery
from services.trainer.paths import job_dir
from shared.db import upgrade
from shared.settings import Settings


def trainer_worker(settings: Settings, kinds: Mapping[str, JobKind] = KINDS) -> Worker:
    torch.set_num_threads(settings.torch_threads)
    config = WorkerConfig(
        heartbeat_s=settings.trainer_heartbeat_s,
        recovery=recovery(settings),
        poll_s=settings.trainer_poll_s,
        directory=lambda job_id: job_dir(settings, job_id),
        processes=settings.trainer_procs_per_job,
        rank_module="services.trainer.ranks",
    )

    def migrate(engine: Engine) -> None:
        upgrade(engine, MIGRATIONS, VERSION_TABLE)

    return Worker(settings, kinds=kinds, queue=QUEUE, config=config, migrate=migrate)
