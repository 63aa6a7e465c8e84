"""One rank of a distill or score job that a worker runs as several processes
(UNAST_TRAINER_PROCS_PER_JOB; services/jobs/processes.py): `python -m services.trainer.ranks <job dir>`,
started by the worker through torch.distributed.run, never by hand."""

import sys
from pathlib import Path

import torch

from services.jobs.processes import serve_rank
from services.trainer.kinds import KINDS
from services.trainer.learning.distributed import backend
from services.trainer.local import store_lookup
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    torch.set_num_threads(settings.torch_threads)
    serve_rank(Path(sys.argv[1]), KINDS, settings, store_lookup(settings), backend(settings))


if __name__ == "__main__":
    main()
