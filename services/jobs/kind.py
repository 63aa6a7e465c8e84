"""A job kind, declared once: its spec, its input checks, its runner, its typed result.

A service lists its kinds (a dict name -> JobKind); the API validates a submission against the kind's
spec, then its `check` (what needs the disk or the database), and queues it; a worker claims only the
kinds it has and runs `run(ctx)`, a plain function with a flat loop (see context.py). What `run`
returns is validated into `result` before it is stored. A kind whose outputs live in the service's
own tables (a profiler LUT) gives `save`, called in the transaction that marks the job succeeded.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from shared.settings import Settings


def no_checks(spec: BaseModel, _settings: Settings, _session: Session) -> BaseModel:
    return spec


@dataclass(frozen=True)
class JobKind:
    name: str
    spec: type[BaseModel]
    result: type[BaseModel]
    run: Callable[[JobContext], Any]
    check: Callable[[Any, Settings, Session], BaseModel] = no_checks  # 422s naming the field; the stored spec
    save: Callable[[Session, Any], Any] | None = (
        None  # run's value -> result, inside the finishing transaction
    )
    distributed: bool = False  # run shares its work out among torch.distributed ranks (processes.py)

    def stored_result(self, value: Any) -> dict[str, Any]:
        """What `run` (and `save`) returned, checked against the result model, as stored JSON."""
        return self.result.model_validate(value).model_dump(mode="json")
