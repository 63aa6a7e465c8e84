"""Claims are atomic, heartbeats and outcomes only count from the job's owner, lost jobs come back."""

import threading
from datetime import timedelta

from sqlalchemy import update

from services.jobs.queue import stale_cutoff
from services.jobs.tables import utcnow
from services.trainer.models import QUEUE, Job
from tests.services.jobs.linear_job import LinearSpec


def submit(sessions, n: int = 1, **spec) -> list[str]:
    with sessions() as session:
        return [QUEUE.submit(session, spec=LinearSpec(steps=5, seed=i, **spec))[0].id for i in range(n)]


def claim(sessions, worker: str = "w1", kinds=("linear",)):
    with sessions() as session:
        return QUEUE.claim(session, worker=worker, kinds=kinds)


def test_concurrent_claims_never_hand_out_a_job_twice(sessions):
    ids = submit(sessions, 30)
    claimed: dict[str, list[str]] = {}

    def work(name: str) -> None:
        mine = claimed.setdefault(name, [])
        while (job := claim(sessions, name)) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [job_id for ids_ in claimed.values() for job_id in ids_]
    assert sorted(every) == sorted(ids)  # each job exactly once
    with sessions() as session:
        for job_id in ids:
            job = QUEUE.get(session, job_id=job_id)
            assert (job.state, job.attempt) == ("running", 1)
            assert job_id in claimed[job.worker]


def test_claims_take_the_oldest_job_of_a_known_kind(sessions):
    first, second = submit(sessions, 2)
    assert claim(sessions, kinds=("distill",)) is None
    job = claim(sessions)
    assert job.id == first and job.state == "running" and job.worker == "w1" and job.heartbeat_at
    assert claim(sessions).id == second
    assert claim(sessions) is None


def test_a_cancelled_job_is_not_claimed(sessions):
    (job_id,) = submit(sessions)
    with sessions() as session:
        QUEUE.cancel(session, job_id=job_id)
    assert claim(sessions) is None


def age(sessions, job_id: str, seconds: float) -> None:
    with sessions() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_stale_jobs_are_requeued_failed_or_cancelled(sessions):
    requeue, give_up, cancel, fresh = submit(sessions, 4)
    for _ in range(4):
        claim(sessions)
    with sessions() as session:
        session.execute(update(Job).where(Job.id == give_up).values(attempt=3))
        session.commit()
        QUEUE.cancel(session, job_id=cancel)
    for job_id in (requeue, give_up, cancel):
        age(sessions, job_id, 60)
    with sessions() as session:
        changed = QUEUE.recover_stale(session, stale_before=stale_cutoff(30), max_attempts=3)
    assert changed == {"queued": [requeue], "failed": [give_up], "cancelled": [cancel]}
    with sessions() as session:
        states = {job_id: QUEUE.get(session, job_id=job_id) for job_id in (requeue, give_up, cancel, fresh)}
    assert states[requeue].state == "queued" and states[requeue].worker is None
    assert states[give_up].state == "failed" and "3 workers were lost" in states[give_up].error
    assert states[cancel].state == "cancelled"
    assert states[fresh].state == "running"
    again = claim(sessions, "w2")
    assert (again.id, again.attempt) == (requeue, 2)


def test_only_the_owner_may_write_to_a_job(sessions):
    (job_id,) = submit(sessions)
    claim(sessions, "w1")
    age(sessions, job_id, 60)
    with sessions() as session:
        QUEUE.recover_stale(session, stale_before=stale_cutoff(30), max_attempts=3)
    claim(sessions, "w2")
    with sessions() as session:  # w1 was slow, not dead: it comes back and finds the job gone
        assert not QUEUE.heartbeat(session, job_id=job_id, worker="w1", step=3, steps=5)
        assert not QUEUE.finish(
            session, job_id=job_id, worker="w1", state="succeeded", step=5, steps=5, result={}
        )
        assert not QUEUE.release(session, job_id=job_id, worker="w1", step=3)
        assert QUEUE.heartbeat(session, job_id=job_id, worker="w2", step=2, steps=5)
        assert QUEUE.finish(
            session, job_id=job_id, worker="w2", state="succeeded", step=5, steps=5, result={"a": 1}
        )
        job = QUEUE.get(session, job_id=job_id)
        assert (job.state, job.result, job.worker, job.attempt) == ("succeeded", {"a": 1}, "w2", 2)


def test_a_released_job_gets_its_attempt_back(sessions):
    (job_id,) = submit(sessions)
    claim(sessions)
    with sessions() as session:
        assert QUEUE.release(session, job_id=job_id, worker="w1", step=3)
        job = QUEUE.get(session, job_id=job_id)
        assert (job.state, job.attempt, job.step, job.worker) == ("queued", 0, 3, None)


def test_a_released_job_whose_cancel_was_asked_is_cancelled_not_queued(sessions):
    """A stop that reaches the worker before the job sees its cancel (a pipeline's Ctrl-C stops both)
    must not hand the job to the next worker, which would only cancel it then."""
    (job_id,) = submit(sessions)
    claim(sessions)
    with sessions() as session:
        QUEUE.cancel(session, job_id=job_id)
        assert QUEUE.release(session, job_id=job_id, worker="w1", step=3)
        job = QUEUE.get(session, job_id=job_id)
        assert (job.state, job.worker, job.step) == ("cancelled", None, 3)
        assert job.finished_at is not None and "cancelled" in job.error
    assert claim(sessions, "w2") is None
