"""Two runs with the same inputs on one stack (issue 20, item 4): each submits jobs of its own, so a
run stopped with Ctrl-C cancels only its own job while the other's goes on, and the stopped run, started
again, submits its work anew instead of replaying its cancelled job."""

import io
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from services.pipeline.progress import Reporter
from services.pipeline.record import RunRecord
from services.pipeline.stages import Stopped, trainer_job
from services.trainer.main import create_app
from services.trainer.worker import trainer_worker
from shared.clients.trainer import TrainerClient
from shared.schemas.trainer import DirectoryModel, EvaluateSpec
from tests.services.trainer.conftest import fast, make_teacher


@pytest.fixture
def stack(sqlite_settings, trained_teacher):
    """A trainer API and one worker thread, as a stack several runs share."""
    settings = fast(sqlite_settings)
    teacher = make_teacher(settings, trained_teacher)
    stop = threading.Event()
    worker = threading.Thread(target=trainer_worker(settings).serve, args=(stop,), daemon=True)
    with TestClient(create_app(settings)) as http:
        worker.start()
        yield TrainerClient(http), teacher
        stop.set()
        worker.join(60)


def run_on(trainer: TrainerClient, directory: Path) -> SimpleNamespace:
    """What trainer_job reads of a run: its services, record, reporter, data and stop flag."""
    services = SimpleNamespace(trainer=trainer, check=lambda: None)
    reporter = Reporter(io.StringIO())
    return SimpleNamespace(
        services=services, record=RunRecord(directory), reporter=reporter, data=None, stopping=False
    )


def test_a_stopped_run_cancels_only_its_own_job_and_resumes_anew(stack, tmp_path):
    trainer, teacher = stack
    spec = EvaluateSpec(model=DirectoryModel(path=str(teacher)), batch_size=2, seq_len=16, eval_batches=2)
    first, second = run_on(trainer, tmp_path / "first"), run_on(trainer, tmp_path / "second")

    waited = {}
    other = threading.Thread(target=lambda: waited.update(result=trainer_job(second, "evaluate", spec)))
    other.start()
    first.stopping = True  # Ctrl-C on the first run while the second waits for the same work
    with pytest.raises(Stopped):
        trainer_job(first, "evaluate", spec)
    other.join(300)

    stopped_job = first.record.stage("evaluate").job_id
    second_job, result = waited["result"]
    assert second_job != stopped_job  # the same inputs, but a job of each run's own
    assert trainer.job(stopped_job).cancel_requested
    assert not trainer.job(second_job).cancel_requested and result.tokens > 0

    first.stopping = False  # the stopped run, started again: its cancelled job is not replayed
    resumed_job, resumed = trainer_job(first, "evaluate", spec)
    assert resumed_job not in (stopped_job, second_job) and first.record.stage("evaluate").attempt == 1
    assert resumed.loss == pytest.approx(result.loss)
