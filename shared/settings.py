"""The one settings object every service and command reads (environment prefix UNAST_).

Every field is documented in README.md's settings table; a test keeps the two in step.
"""

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "UNAST_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True)

    database_url: str = Field(
        "sqlite:///var/unast.db",
        description="SQLAlchemy URL of the store; postgresql+psycopg://user@host/db switches to PostgreSQL.",
    )
    api_token: SecretStr | None = Field(
        None, description="When set, mutating endpoints require `Authorization: Bearer <token>`."
    )
    client_retry_s: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="How long a client keeps retrying what a service asks it to (503, 429 with "
        "Retry-After) and a service it cannot reach, with back-off, before it gives up.",
    )
    host: str = Field("127.0.0.1", description="Interface the services listen on.")
    profiler_port: int = Field(8001, ge=1, le=65535, description="Port of the profiler service.")
    search_port: int = Field(8002, ge=1, le=65535, description="Port of the search service.")
    trainer_port: int = Field(8003, ge=1, le=65535, description="Port of the trainer API.")
    profiler_url: str | None = Field(
        None, description="Base URL clients use for the profiler; default http://{host}:{profiler_port}."
    )
    search_url: str | None = Field(
        None, description="Base URL clients use for the search; default http://{host}:{search_port}."
    )
    trainer_url: str | None = Field(
        None, description="Base URL clients use for the trainer; default http://{host}:{trainer_port}."
    )
    max_body_bytes: int = Field(
        16 * 2**20, ge=1024, description="Largest request body a service accepts (bytes); larger is a 413."
    )
    artifacts_root: Path = Field(
        Path("var/artifacts"), description="Where trained weights, checkpoints and exports are written."
    )
    input_roots: list[Path] = Field(
        default_factory=lambda: [Path("models"), Path("var")],
        description="Folders that client-given input paths (teachers, datasets) must lie inside.",
    )
    torch_threads: int = Field(
        1, ge=1, le=256, description="torch intra-op threads for measuring and training (fixed, never auto)."
    )
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$", description="Log level.")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Longest a client may take to send a request body; slower is a 408."
    )
    # the database: every wait on it is bounded, so a database that is down or hung is a 503, not a hang
    database_connect_timeout_s: int = Field(
        5,
        ge=2,
        le=600,
        description="Longest a new PostgreSQL connection may take (whole seconds, at least 2).",
    )
    database_pool_timeout_s: float = Field(
        5.0, gt=0, le=600, description="Longest a request waits for a free connection of the pool."
    )
    database_statement_timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="PostgreSQL: longest one statement may run; SQLite: longest to wait for the write lock.",
    )
    database_startup_wait_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="At start-up, how long services and workers wait for the database before giving up.",
    )
    # profiler
    profiler_device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="The torch device the profiler measures."
    )
    profiler_max_job_s: float = Field(
        7200.0,
        gt=0,
        description="Longest a LUT build or validation may be estimated to take; longer is a 422.",
    )
    profiler_heartbeat_s: float = Field(
        5.0, gt=0, le=3600, description="How often a running profiler job records its heartbeat and progress."
    )
    profiler_stale_s: float = Field(
        50.0,
        gt=0,
        le=86_400,
        description="A running profiler job whose heartbeat is older than this is failed (its worker is "
        "lost; a measurement is not resumed).",
    )
    profiler_poll_s: float = Field(
        1.0, gt=0, le=600, description="How often an idle profiler worker looks for queued jobs."
    )

    # trainer
    trainer_heartbeat_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds between a running job's heartbeats (progress goes with them).",
    )
    trainer_stale_s: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="A running job whose heartbeat is older than this is re-queued (its worker is lost).",
    )
    trainer_poll_s: float = Field(
        2.0, gt=0, le=600, description="How often an idle worker looks for queued jobs and stale ones."
    )
    trainer_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="A job whose worker was lost this many times fails instead of re-queueing.",
    )

    trainer_device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="The torch device jobs train on (torchrun with cuda: each rank takes cuda:LOCAL_RANK).",
    )
    trainer_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Forward passes of training jobs under bfloat16 autocast (float32 master weights): "
        "auto = on CUDA devices that support it (services/trainer/learning/precision.py).",
    )
    trainer_procs_per_job: int = Field(
        1,
        ge=1,
        le=1024,
        description="Processes a worker runs each distill, score, rank and finetune job as "
        "(torch.distributed: gloo on cpu, NCCL on cuda, one GPU each); evaluate and export run in it.",
    )

    # search
    search_max_slots: int = Field(4096, ge=1, description="Most slots one search request may have.")
    search_max_candidates: int = Field(
        256, ge=1, description="Most candidates one slot of a search request may have."
    )
    search_max_k: int = Field(1000, ge=1, description="Largest k (architectures asked for) of a search.")
    search_max_time_limit_s: float = Field(
        600.0, gt=0, description="Largest time_limit_s a search or sweep request may ask for."
    )
    search_max_sweep_points: int = Field(200, ge=1, description="Most budget values one sweep may ask for.")
    search_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=1024,
        description="Searches and sweeps solved at once (default: the machine's core count).",
    )
    search_queue: int = Field(
        8,
        ge=0,
        le=100_000,
        description="Searches that may wait for a solve slot; more is a 429 with Retry-After.",
    )

    @field_validator("profiler_stale_s", "trainer_stale_s")
    @classmethod
    def _stale_after_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        # a live worker must get at least two heartbeats in before it could be taken for dead
        heartbeat = info.field_name.replace("_stale_s", "_heartbeat_s")
        if value < 2 * info.data.get(heartbeat, 0):
            raise ValueError(f"must be at least twice {heartbeat}")
        return value

    @model_validator(mode="after")
    def _no_unknown_variables(self) -> "Settings":
        # A misspelt UNAST_ variable would otherwise be ignored silently.
        known = {ENV_PREFIX + name.upper() for name in type(self).model_fields}
        unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as UNAST_ environment variables, for a child process to read back."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if name == "api_token" and self.api_token is not None:
                value = self.api_token.get_secret_value()
            if value is not None:
                env[ENV_PREFIX + name.upper()] = value if isinstance(value, str) else json.dumps(value)
        return env

    def service_url(self, service: str) -> str:
        """Base URL of one service ('profiler', 'search' or 'trainer')."""
        explicit = getattr(self, f"{service}_url")
        return explicit or f"http://{self.host}:{getattr(self, f'{service}_port')}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
