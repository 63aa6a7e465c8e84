"""A claimed job run as several processes (torch.distributed), both sides of it.

The worker keeps the claim, the heartbeat and the job's row; it starts the ranks with
torch.distributed.run (`--standalone`: a rendezvous of its own on a free port, so jobs side by side do
not meet) in a process group of their own, and talks with them through files in <job dir>/processes:

    job.json      the worker writes: the job's id, kind, spec, attempt and the worker's pid
    progress.json rank 0 writes at every step and status: step, steps, progress, message
    log.txt       rank 0 appends the job's log lines; the worker forwards them to the job's log
    output.txt    the ranks' stdout and stderr (torchrun's too)
    result.json   rank 0 writes the job's result when every rank is done
    error.txt     a rank whose runner raised writes the error (its first line is the job's error);
                  not for an error out of a collective (a peer died): that job is re-queued

A cancel, a lost claim or the worker's shutdown stops the whole group (SIGTERM, then SIGKILL), then
the job ends as it would in one process. A rank that dies without a word (SIGKILL, out of memory)
takes the others with it (torchrun stops them) and the job goes back to the queue, the attempt spent,
to resume from its last checkpoint; a rank that outlives its worker stops at its next step.
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist

from services.jobs.context import JobRecord, JobStopped, LocalContext, QueuedContext
from services.jobs.kind import JobKind
from shared.files import atomic_path
from shared.settings import Settings

FOLDER = "processes"
POLL_S = 0.2
STOP_GRACE_S = 10.0


class RankFailed(Exception):
    """A rank's runner raised: the job fails with its error."""


# -- the worker's side ---------------------------------------------------------------------------


def run_processes(ctx: QueuedContext, kind: JobKind, processes: int, module: str) -> dict[str, Any]:
    """Run the claimed job as `processes` ranks of `python -m module <job dir>`; its stored result.
    Raises JobStopped (cancelled, released, lost, or "crashed" when a rank died) or RankFailed."""
    folder = ctx.directory / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # an earlier attempt's
        old.unlink()
    record = {"id": ctx.job_id, "kind": kind.name, "spec": ctx.spec, "worker_pid": os.getpid()}
    (folder / "job.json").write_text(json.dumps(record))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += [str(processes), "-m", module, str(ctx.directory)]
    ctx.log(f"running as {processes} processes: {' '.join(command[1:])}")
    with (folder / "output.txt").open("wb") as output:
        group = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    relay = _Relay(folder, ctx)
    try:
        while group.poll() is None:
            relay.forward()
            ctx.status(ctx.message or "running", ctx.progress)  # JobStopped when it must stop
            time.sleep(POLL_S)
    finally:
        _stop(group)
        relay.forward()
    if group.returncode == 0:
        return json.loads((folder / "result.json").read_text())
    if (error := folder / "error.txt").exists():
        ctx.log(error.read_text())
        raise RankFailed(error.read_text().splitlines()[0])
    tail = (folder / "output.txt").read_text(errors="replace")[-2000:]
    ctx.log(f"a process of the job died; the ranks' last output:\n{tail}")
    raise JobStopped("crashed", f"a process of the job died (torchrun exited {group.returncode})")


def _stop(group: subprocess.Popen) -> None:
    """The whole process group: SIGTERM, then SIGKILL after a grace period."""
    if group.poll() is not None:
        return
    for signum, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(group.pid, signum)
        except ProcessLookupError:
            return
        try:
            group.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _Relay:
    """Forwards rank 0's progress and new log lines to the queued job."""

    def __init__(self, folder: Path, ctx: QueuedContext):
        self.folder, self.ctx, self.offset = folder, ctx, 0

    def forward(self) -> None:
        try:
            progress = json.loads((self.folder / "progress.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            progress = None
        if progress is not None:
            self.ctx.step_done, self.ctx.steps = progress["step"], progress["steps"]
            self.ctx.progress, self.ctx.message = progress["progress"], progress["message"]
        log = self.folder / "log.txt"
        if log.exists():
            with log.open("rb") as f:
                f.seek(self.offset)
                text = f.read()
            whole = text[: text.rfind(b"\n") + 1]  # a line still being written waits for the next round
            self.offset += len(whole)
            for line in whole.decode().splitlines():
                self.ctx.log(line)


# -- a rank's side -------------------------------------------------------------------------------


class RankContext(LocalContext):
    """One rank of a job its worker runs as several processes: checkpoints and outputs in the job's
    folder as a local run's; rank 0 reports progress and log lines through files for the worker; a
    rank stops at its next step once the worker is gone."""

    def __init__(self, record: dict[str, Any], directory: Path, settings: Settings, lookup):
        super().__init__(record["spec"], directory, settings, lookup=lookup)
        self.job_id = record["id"]
        self.folder = directory / FOLDER
        self.worker_pid = record["worker_pid"]
        self.progress: dict[str, Any] = {"step": 0, "steps": None, "progress": None, "message": None}

    def step(self, step: int, steps: int, progress: float | None = None) -> None:
        message = f"step {step + 1} of {steps}" if step < steps else f"{steps} steps done"
        done = progress if progress is not None else step / steps if steps else None
        self._report(step=step, steps=steps, progress=done, message=message)

    def status(self, message: str, progress: float | None = None) -> None:
        self._report(message=message, **({} if progress is None else {"progress": progress}))

    def _report(self, **changes) -> None:
        if not _alive(self.worker_pid):
            raise JobStopped("lost", f"the worker (pid {self.worker_pid}) is gone")
        if self.rank == 0:
            self.progress |= changes
            with atomic_path(self.folder / "progress.json") as tmp:
                tmp.write_text(json.dumps(self.progress))

    def log(self, message: str) -> None:
        if self.rank == 0:
            with open(self.folder / "log.txt", "a") as f:
                f.write(message + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _collective_failed(exc: BaseException) -> bool:
    """Whether the error came out of torch.distributed (a collective whose peer died or hung up: gloo's
    "Connection reset by peer"), not out of the job's own code. Bounded if wrong: a job re-queued
    for it fails after its attempts. A send's work handle waited on in the job's own code raises
    gloo's error with no torch frame: its transport names it."""
    if isinstance(exc, dist.DistError) or "gloo/transport/" in str(exc):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"torch{os.sep}distributed{os.sep}" in frames[-1].filename


def serve_rank(
    directory: Path,
    kinds: Mapping[str, JobKind],
    settings: Settings,
    lookup: Callable[[str], JobRecord],
    backend: str,
) -> None:
    """The body of one rank (started by run_processes through torchrun): join the group, run the job,
    rank 0 writes the result; a runner's error goes to error.txt and the process exits 1."""
    record = json.loads((directory / FOLDER / "job.json").read_text())
    dist.init_process_group(backend)
    try:
        ctx = RankContext(record, directory, settings, lookup)
        try:
            result = kinds[record["kind"]].stored_result(kinds[record["kind"]].run(ctx))
        except JobStopped:
            sys.exit(1)
        except Exception as exc:
            if _collective_failed(exc):  # a peer died: the worker re-queues the job, not fails it
                sys.exit(1)
            with atomic_path(directory / FOLDER / "error.txt") as tmp:
                tmp.write_text(f"{type(exc).__name__}: {exc} (rank {ctx.rank})\n{traceback.format_exc()}")
            sys.exit(1)
        if ctx.rank == 0:
            with atomic_path(directory / FOLDER / "result.json") as tmp:
                tmp.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
