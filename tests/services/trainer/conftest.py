"""Fixtures for the trainer's job tests: a migrated store, an API client, a teacher-shaped folder."""

import json

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from services.trainer.main import MIGRATIONS, VERSION_TABLE, create_app
from shared.clients.trainer import TrainerClient
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.settings import Settings


def fast(settings: Settings, **changes) -> Settings:
    """The settings with heartbeats and polls short enough for tests to run in seconds."""
    quick = {"trainer_heartbeat_s": 0.1, "trainer_stale_s": 2.0, "trainer_poll_s": 0.1}
    return Settings(**(settings.model_dump() | quick | changes))


@pytest.fixture
def sessions(settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def trainer(settings):
    with TestClient(create_app(settings)) as http:
        yield TrainerClient(http)


@pytest.fixture
def sqlite_trainer(sqlite_settings):
    """For checks that do not depend on the database backend."""
    with TestClient(create_app(sqlite_settings)) as http:
        yield TrainerClient(http)


@pytest.fixture
def teacher_dir(settings):
    return make_teacher(settings)


@pytest.fixture
def sqlite_teacher_dir(sqlite_settings):
    return make_teacher(sqlite_settings)


def make_teacher(settings: Settings):
    """A folder shaped like a Hugging Face model directory (what submission checks look at)."""
    folder = settings.input_roots[0] / "teacher"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(2)}, folder / "model.safetensors")
    return folder
