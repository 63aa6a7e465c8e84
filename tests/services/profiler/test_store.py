"""The profiler's tables on SQLite and PostgreSQL: upserts, one-transaction writes, filters, jobs."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services.jobs.tables import utcnow
from services.profiler import store
from services.profiler.device import DeviceInfo
from services.profiler.jobs import BuildSpec
from services.profiler.main import MIGRATIONS, VERSION_TABLE, create_app
from services.profiler.models import QUEUE, LutEntryRow, LutRow
from services.profiler.models import Job as JobRow
from services.profiler.profiling import ValidationMeasurement
from shared.clients.base import ServiceError
from shared.clients.profiler import ProfilerClient
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.schemas.lut import LutKey, ValidatedArchitecture, ValidationRequest
from shared.schemas.operators import Architecture, IdentityOp, LinearOp, MLPOp

from .conftest import OPERATORS, hand_measurement

DEVICE = DeviceInfo(
    key="0123456789abcdef",
    name="Test CPU (1 thread)",
    kind="cpu",
    memory_bytes=2**34,
    fingerprint={"cpu": "x"},
    gflops={"float32": 10.0, "float16": 1.0, "bfloat16": 5.0},
)
KEY = LutKey(shape="tiny", length=16)


@pytest.fixture
def sessions(settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    yield make_sessionmaker(engine)
    engine.dispose()


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_device_upsert_is_idempotent(sessions):
    with sessions.begin() as s:
        first = store.upsert_device(s, info=DEVICE)
    with sessions.begin() as s:
        assert store.upsert_device(s, info=DEVICE) == first
        assert [d.key for d in store.list_devices(s)] == [DEVICE.key]
        assert store.get_device(s, device_id=first).fingerprint == {"cpu": "x"}
        assert store.get_device(s, device_id=first + 1) is None


def test_rebuilding_a_lut_replaces_it_in_place(sessions):
    with sessions.begin() as s:
        device_id = store.upsert_device(s, info=DEVICE)
        lut_id = store.save_lut(
            s, device_id=device_id, key=KEY, measurement=hand_measurement(KEY, OPERATORS, 1.0)
        )
    with sessions.begin() as s:
        fewer = [IdentityOp(), LinearOp()]
        again = store.save_lut(s, device_id=device_id, key=KEY, measurement=hand_measurement(KEY, fewer, 2.0))
    with sessions() as s:
        assert again == lut_id and count(s, LutRow) == 1 and count(s, LutEntryRow) == 2
        lut = store.get_lut(s, lut_id=lut_id)
        assert lut.operator_count == 2 and [e.name for e in lut.entries] == ["identity", "linear"]
        assert lut.entries[1].latency.median_ms == 2.0 and lut.fixed.latency.median_ms == 2.0
        assert lut.shape == KEY.shape and lut.measured_at.tzinfo is not None
        assert store.find_lut(s, device_id=device_id, key=KEY).id == lut_id
        assert store.find_lut(s, device_id=device_id, key=KEY.model_copy(update={"batch": 2})) is None


def test_a_failure_inside_the_write_leaves_no_half_lut(sessions):
    with sessions.begin() as s:
        device_id = store.upsert_device(s, info=DEVICE)
    with pytest.raises(RuntimeError), sessions.begin() as s:
        store.save_lut(s, device_id=device_id, key=KEY, measurement=hand_measurement(KEY, OPERATORS))
        raise RuntimeError("the worker dies before the job is marked done")
    with sessions() as s:
        assert count(s, LutRow) == 0 and count(s, LutEntryRow) == 0


def test_list_filters(sessions):
    keys = [
        KEY,
        KEY.model_copy(update={"regime": "decode"}),
        LutKey(shape="small", length=16, dtype="bfloat16"),
    ]
    with sessions.begin() as s:
        device_id = store.upsert_device(s, info=DEVICE)
        ids = [
            store.save_lut(s, device_id=device_id, key=k, measurement=hand_measurement(k, OPERATORS))
            for k in keys
        ]
    with sessions() as s:
        assert [x.id for x in store.list_luts(s)] == ids
        assert [x.id for x in store.list_luts(s, shape="tiny")] == ids[:2]
        assert [x.id for x in store.list_luts(s, shape=keys[2].key_fields()["shape_hash"])] == ids[2:]
        assert [x.id for x in store.list_luts(s, regime="decode")] == ids[1:2]
        assert [x.id for x in store.list_luts(s, dtype="bfloat16", length=16, batch=1)] == ids[2:]
        assert store.list_luts(s, device_id=device_id + 1) == []


def test_validations_are_stored_with_their_architectures(sessions):
    with sessions.begin() as s:
        device_id = store.upsert_device(s, info=DEVICE)
        lut_id = store.save_lut(s, device_id=device_id, key=KEY, measurement=hand_measurement(KEY, OPERATORS))
        result = ValidatedArchitecture(
            architecture=Architecture.teacher(KEY.shape).replace("block0.mlp", MLPOp(intermediate_size=48)),
            predicted_ms=1.1,
            measured=hand_measurement(KEY, []).fixed.latency,
            error=0.1,
        )
        measurement = ValidationMeasurement(results=[result], drift=0.02)
        vid = store.save_validation(
            s, lut_id=lut_id, request=ValidationRequest(seed=5), measurement=measurement
        )
    with sessions() as s:
        validation = store.get_validation(s, validation_id=vid)
        assert validation.architectures == [result] and validation.seed == 5 and validation.count == 1
        assert (validation.median_abs_error, validation.max_abs_error, validation.drift) == (0.1, 0.1, 0.02)
        assert [v.id for v in store.list_validations(s, lut_id=lut_id)] == [vid]
        assert store.get_validation(s, validation_id=vid + 1) is None


def test_a_running_job_without_heartbeats_is_reported_failed(settings, sessions):
    """Readers apply the profiler's recovery (UNAST_PROFILER_STALE_S, one attempt): no resume."""
    specs = [BuildSpec(shape="tiny", length=16) for _ in range(3)]
    with sessions() as s:
        alive, dead, waiting = (QUEUE.submit(s, spec=spec)[0].id for spec in specs)
        QUEUE.claim(s, worker="w", kinds=["build"], job_id=alive)
        QUEUE.claim(s, worker="w", kinds=["build"], job_id=dead)
        QUEUE.heartbeat(s, job_id=alive, worker="w", step=0, steps=None, progress=0.5, message="timing")
        old = utcnow() - timedelta(minutes=5)
        s.execute(
            update(JobRow).where(JobRow.id.in_([dead, waiting])).values(heartbeat_at=old, created_at=old)
        )
        s.commit()
    with TestClient(create_app(settings)) as http:
        client = ProfilerClient(http)
        job = client.job(alive)
        assert (job.state, job.progress, job.message) == ("running", 0.5, "timing")
        job = client.job(dead)
        assert job.state == "failed" and "no heartbeat" in job.error
        # a queued job waits for a worker, however long: it has no heartbeat to lose
        assert client.job(waiting).state == "queued"
        assert [j.id for j in client.jobs(state="failed").jobs] == [dead]
        with pytest.raises(ServiceError) as err:
            client.job("999")
        assert err.value.status == 404
