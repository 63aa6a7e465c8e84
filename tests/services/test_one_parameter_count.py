"""A model's parameter count is one function (shared/costs.py's `parameters`): the built torch model
has that many, the profiler's estimate (what the report prints) and the search's sum of the LUT's parts
say that many, and the trainer's memory check counts with it. Three heterogeneous students: mixed heads,
KV heads and head sizes, identity, linear and narrow MLPs, tied and untied embeddings."""

import json
import math

import pytest
import torch
from fastapi.testclient import TestClient

from services.profiler import store
from services.profiler.main import MIGRATIONS as PROFILER_MIGRATIONS
from services.profiler.main import VERSION_TABLE as PROFILER_VERSIONS
from services.profiler.main import create_app as profiler_app
from services.profiler.profiling import measured_operators
from services.trainer import memory
from services.trainer.main import MIGRATIONS as TRAINER_MIGRATIONS
from services.trainer.main import VERSION_TABLE as TRAINER_VERSIONS
from services.trainer.models import QUEUE
from shared.clients.profiler import ProfilerClient
from shared.costs import FLOAT_BYTES, MEMORY_SHARE, parameters
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.errors import ApiError
from shared.model import Decoder
from shared.schemas.lut import Build, EstimateRequest
from shared.schemas.operators import Architecture
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import DistillSpec, EvaluateSpec, StudentModel
from tests.services.profiler.conftest import hand_measurement
from tests.services.profiler.test_store import DEVICE

UNTIED = ModelShape(
    vocab_size=96,
    hidden_size=32,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=64,
)
TIED = ModelShape(**(UNTIED.model_dump() | {"tie_word_embeddings": True}))
QWEN2 = ModelShape(**(UNTIED.model_dump() | {"family": "qwen2"}))  # q/k/v biases
QWEN3 = ModelShape(**(TIED.model_dump() | {"family": "qwen3"}))  # per-head q/k norms
MISTRAL = ModelShape(**(UNTIED.model_dump() | {"family": "mistral", "sliding_window": 16}))


def student(*choices: str) -> Architecture:
    """Block by block: attention, MLP, attention, MLP, ..."""
    return Architecture(choices={f"block{i // 2}.{('attn', 'mlp')[i % 2]}": c for i, c in enumerate(choices)})


CASES = [
    (UNTIED, student("attn_h4_kv2_d8", "mlp_i64", "attn_h2_kv1_d16", "mlp_i24", "identity", "linear")),
    (TIED, student("linear", "identity", "attn_h8_kv8_d4", "mlp_i64", "attn_h1_kv1_d12", "linear")),
    (UNTIED, student("identity", "mlp_i8", "attn_h2_kv2_d8", "identity", "attn_h4_kv1_d6", "mlp_i64")),
    (QWEN2, student("attn_h4_kv2_d8", "mlp_i64", "attn_h2_kv1_d16", "mlp_i24", "identity", "linear")),
    (QWEN3, student("linear", "identity", "attn_h8_kv8_d4", "mlp_i64", "attn_h1_kv1_d12", "linear")),
    (MISTRAL, student("attn_h4_kv2_d8", "mlp_i64", "attn_h2_kv1_d16", "mlp_i24", "identity", "linear")),
]


@pytest.fixture
def databases(settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, PROFILER_MIGRATIONS, PROFILER_VERSIONS)
    upgrade(engine, TRAINER_MIGRATIONS, TRAINER_VERSIONS)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.mark.parametrize(
    ("shape", "architecture"), CASES, ids=["untied", "tied", "sparse", "qwen2", "qwen3", "mistral"]
)
def test_one_parameter_count(shape, architecture, settings, databases, tmp_path, monkeypatch):
    count = parameters(architecture, shape)

    # the torch model: distinct parameters, a tied embedding once
    torch.set_num_threads(1)
    model = Decoder(shape, architecture)
    assert count == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    # the profiler's estimate (the report's params) and the LUT's parts, as the search adds them
    key = Build(shape=shape, length=8, operators=[spec for _, _, spec in architecture.slots()])
    with databases.begin() as session:
        device_id = store.upsert_device(session, info=DEVICE)
        lut_id = store.save_lut(
            session, device_id=device_id, key=key, measurement=hand_measurement(key, measured_operators(key))
        )
    with TestClient(profiler_app(settings)) as http:
        profiler = ProfilerClient(http)
        estimate = profiler.estimate(device_id, EstimateRequest(lut_id=lut_id, architecture=architecture))
        table = profiler.export(lut_id)
    assert estimate.params == count
    by_id = {(s.id, c.id): c.costs["params"] for s in table.slots for c in s.candidates}
    assert table.fixed["params"] + sum(by_id[choice] for choice in architecture.choices.items()) == count

    # the trainer's memory check, on an evaluate job of this student
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps(shape.to_hf_config()))
    with databases() as session:
        distill, _ = QUEUE.submit(session, spec=DistillSpec(teacher=str(teacher), steps=1))
        spec = EvaluateSpec(model=StudentModel(distill_job=distill.id, architecture=architecture))
        stage = memory.job_plan(spec, session, processes=1)
        assert stage.memory["weights"] == FLOAT_BYTES * count
        need = stage.peak_bytes
        monkeypatch.setattr(memory, "device_memory_bytes", lambda _: math.ceil(need / MEMORY_SHARE) + 1)
        memory.check_memory(spec, settings, session)  # just fits
        monkeypatch.setattr(memory, "device_memory_bytes", lambda _: int(need / MEMORY_SHARE) - 2)
        with pytest.raises(ApiError):
            memory.check_memory(spec, settings, session)
