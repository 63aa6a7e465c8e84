"""A queued job run by its worker as several processes (UNAST_TRAINER_PROCS_PER_JOB=2, gloo): the
one-process result, a rank's SIGKILL survived (re-queued, resumed), a cancel that stops every rank."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.distributed

from services.jobs.processes import _collective_failed
from services.trainer.paths import job_dir
from shared.schemas.trainer import DistillResult
from tests.services.trainer.conftest import fast
from tests.services.trainer.test_distill_job import (
    HANG_GUARD_S,
    distill_spec,
    run_next,
    stop_worker,
    worker_process,
)


def ranks_of(job_folder: Path) -> list[int]:
    """Pids of the processes running a rank of the job (python -m services.trainer.ranks <job dir>)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = b"services.trainer.ranks" in argv and b"torch.distributed.run" not in argv  # not torchrun
        if rank and str(job_folder).encode() in argv:
            pids.append(int(proc.name))
    return pids


def wait_for(condition, what: str, worker) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert worker.poll() is None, f"the worker exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.05)


def checkpoint_step(folder: Path) -> int:
    pointer = folder / "checkpoint" / "checkpoint.json"
    try:
        return json.loads(pointer.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_a_worker_runs_a_distill_job_as_two_processes_and_survives_a_ranks_sigkill(
    settings, trainer, teacher_dir
):
    spec = distill_spec(teacher_dir, steps=40, checkpoint_every=10, eval_batches=2)
    reference = trainer.submit(spec)  # one process, in this test's worker
    assert run_next(fast(settings))
    alone = DistillResult.model_validate(trainer.result(reference.id))

    two = fast(settings, trainer_procs_per_job=2, trainer_stale_s=60.0)
    job = trainer.submit(spec)
    folder = job_dir(two, job.id)
    worker = worker_process(two)
    try:
        wait_for(lambda: checkpoint_step(folder) >= 20, "step-20 checkpoint", worker)
        ranks = ranks_of(folder)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)  # one rank, without a word; the worker lives on
        wait_for(lambda: trainer.job(job.id).state == "succeeded", "success after the resume", worker)
        assert not ranks_of(folder)
    finally:
        stop_worker(worker)
    done = trainer.job(job.id)
    lines = [line.message for line in trainer.log(job.id, tail=500).lines]
    assert done.attempt == 2, lines
    assert any("a process of the job died" in line for line in lines), lines
    assert any(line.startswith("resuming from the checkpoint at step") for line in lines), lines
    assert any("running as 2 processes" in line for line in lines)
    shared = DistillResult.model_validate(trainer.result(job.id))
    assert shared.world_size == 2 and len(shared.parameters_per_process) == 2
    assert sum(shared.parameters_per_process) == alone.parameters_per_process[0]
    for slot, by_id in alone.heldout_nmse.items():
        assert shared.heldout_nmse[slot] == pytest.approx(by_id, rel=1e-4, abs=1e-7), slot


@pytest.mark.slow
def test_a_cancel_stops_every_rank_of_a_job(sqlite_settings, sqlite_trainer, sqlite_teacher_dir):
    """On SQLite alone: nothing here depends on the database (the SIGKILL test runs on both)."""
    settings, trainer, teacher_dir = sqlite_settings, sqlite_trainer, sqlite_teacher_dir
    two = fast(settings, trainer_procs_per_job=2)
    job = trainer.submit(distill_spec(teacher_dir, steps=10_000, checkpoint_every=1000))
    folder = job_dir(two, job.id)
    worker = worker_process(two)
    try:
        wait_for(lambda: (trainer.job(job.id).step or 0) >= 2, "relayed progress", worker)
        assert len(ranks_of(folder)) == 2
        trainer.cancel(job.id)
        wait_for(lambda: trainer.job(job.id).state == "cancelled", "cancelled job", worker)
        wait_for(lambda: not ranks_of(folder), "ranks gone", worker)
        assert worker.poll() is None  # the worker goes on to the next job
    finally:
        stop_worker(worker)


@pytest.mark.slow
def test_a_ranks_error_fails_the_job_with_it(sqlite_settings, sqlite_trainer, sqlite_teacher_dir):
    settings, trainer, teacher_dir = sqlite_settings, sqlite_trainer, sqlite_teacher_dir
    two = fast(settings, trainer_procs_per_job=2)
    spec = distill_spec(teacher_dir, steps=4, warmup=1, eval_batches=1)
    job = trainer.submit(spec)
    (teacher_dir / "model.safetensors").write_bytes(b"not a safetensors file")  # after the checks
    worker = worker_process(two)
    try:
        wait_for(lambda: trainer.job(job.id).state == "failed", "failed job", worker)
    finally:
        stop_worker(worker)
    done = trainer.job(job.id)
    assert done.attempt == 1 and "rank" in done.error and "Error" in done.error, done.error
    assert not ranks_of(job_dir(two, job.id))


def test_an_error_out_of_a_collective_is_a_peers_death_not_the_jobs_error():
    """A rank whose collective fails (its peer was killed: gloo's "Connection reset by peer") writes no
    error: the job is re-queued as for the dead rank, not failed with the survivor's error."""
    with pytest.raises(Exception) as raised:
        torch.distributed.all_reduce(torch.zeros(1))  # no group: raised from inside torch.distributed
    assert _collective_failed(raised.value)
    with pytest.raises(RuntimeError) as waited:  # as a send's work.wait() in the job's code raises it
        raise RuntimeError(
            "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
            "[127.0.0.1]:47496: Connection reset by peer."
        )
    assert _collective_failed(waited.value)
    with pytest.raises(ValueError) as own:
        raise ValueError("the job's own error")
    assert not _collective_failed(own.value)
