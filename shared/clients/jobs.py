"""What every client of a service with jobs shares: the job routes (services/jobs/routes.py) and the
one wait loop. The trainer's and the profiler's clients add how their jobs are submitted and what
their results are."""

import time
from collections.abc import Callable

from shared.clients.base import ServiceClient
from shared.schemas.jobs import FINISHED, Job, JobLog, JobPage, JobResult


class JobsClient(ServiceClient):
    def job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/v1/jobs/{job_id}"))

    def jobs(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> JobPage:
        """Newest first, with the number of jobs matching the filters."""
        params = {"limit": limit, "offset": offset} | {
            k: v for k, v in (("state", state), ("kind", kind)) if v is not None
        }
        return JobPage.model_validate(self.request("GET", "/v1/jobs", params=params))

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one stops at its next check (409: it finished)."""
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def log(self, job_id: str, *, tail: int = 100) -> JobLog:
        return JobLog.model_validate(self.request("GET", f"/v1/jobs/{job_id}/log", params={"tail": tail}))

    def raw_result(self, job_id: str) -> JobResult:
        """A succeeded job's result as stored JSON (each client's typed accessors read it as its kind's
        result model); 409 before it succeeded."""
        return JobResult.model_validate(self.request("GET", f"/v1/jobs/{job_id}/result"))

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[Job], None] | None = None,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll a job until it succeeded, failed or was cancelled, and return it. `on_progress` sees the
        job at every poll, the last one included, and may raise to stop waiting (the job goes on unless
        it cancels it). TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state in FINISHED:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout_s:g} s")
            time.sleep(poll_s)
