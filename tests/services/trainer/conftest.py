"""Fixtures for the trainer's job tests: a migrated store, an API client, a small trained teacher."""

import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from services.trainer.learning import data
from services.trainer.main import MIGRATIONS, VERSION_TABLE, create_app
from shared.clients.trainer import TrainerClient
from shared.costs import weight_bytes
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.model import Decoder
from shared.schemas.scores import ScoreTable
from shared.schemas.search import Budget, Candidate, SearchRequest, Slot
from shared.schemas.shape import ModelShape
from shared.settings import Settings

# 2 blocks, GQA (4 heads on 2 KV heads): small enough to train and distil in seconds
TEST_TEACHER = ModelShape(
    vocab_size=384,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=176,
)


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
def teacher_dir(settings, trained_teacher):
    return make_teacher(settings, trained_teacher)


@pytest.fixture
def sqlite_teacher_dir(sqlite_settings, trained_teacher):
    return make_teacher(sqlite_settings, trained_teacher)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory) -> Path:
    """A small real teacher, trained for a few seconds on two plays (its dataset folder beside it)."""
    root = tmp_path_factory.mktemp("teacher")
    plays = data.play_files()
    train_text = data.play_text(plays["macbeth"].read_text(encoding="utf-8"))
    heldout_text = data.play_text(plays["the-tempest"].read_text(encoding="utf-8"))
    (root / "dataset").mkdir()
    (root / "dataset" / "train.txt").write_text(train_text)
    (root / "dataset" / "heldout.txt").write_text(heldout_text)
    tokenizer = data.train_tokenizer([train_text], vocab_size=TEST_TEACHER.vocab_size)
    tokens = data.encode(tokenizer, [train_text])
    torch.manual_seed(0)
    model = Decoder(TEST_TEACHER)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        x, y = data.sample_batch(tokens, 8, 64, generator)
        loss = model.loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(root / "teacher")
    data.save_tokenizer(tokenizer, root / "teacher")
    return root


def make_teacher(settings: Settings, trained: Path):
    """The trained test teacher and its dataset, copied into the settings' input root."""
    inputs = settings.input_roots[0]
    shutil.copytree(trained, inputs, dirs_exist_ok=True)
    return inputs / "teacher"


def params_search(table: ScoreTable, shape: ModelShape, k: int) -> SearchRequest:
    """The search request of a score table under a 60% parameter budget (costs: weight bytes at 1 byte)."""
    slots = [
        Slot(
            id=slot.id,
            candidates=[
                Candidate(
                    id=c.id,
                    score=max(0.0, c.score),
                    reference=c.reference,
                    costs={"params": weight_bytes(c.operator, shape, 1)},
                )
                for c in slot.candidates
            ],
        )
        for slot in table.slots
    ]
    return SearchRequest(slots=slots, budgets=[Budget(cost="params", fraction=0.6)], k=k, max_overlap=0.7)
