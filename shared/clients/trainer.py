"""Typed client of the trainer API."""

from typing import Any

from pydantic import BaseModel

from shared.clients.base import ServiceClient
from shared.schemas.jobs import Artifact, Job, JobLog, JobPage, JobResult


class TrainerClient(ServiceClient):
    service = "trainer"

    def submit(self, spec: BaseModel | dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Queue a job. With an idempotency key, a retry returns the job the first call made."""
        body = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(self.request("POST", "/v1/jobs", json=body, headers=headers))

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/v1/jobs/{job_id}"))

    def jobs(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> JobPage:
        params = {"limit": limit, "offset": offset} | {
            k: v for k, v in (("state", state), ("kind", kind)) if v is not None
        }
        return JobPage.model_validate(self.request("GET", "/v1/jobs", params=params))

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def log(self, job_id: str, *, tail: int = 100) -> JobLog:
        return JobLog.model_validate(self.request("GET", f"/v1/jobs/{job_id}/log", params={"tail": tail}))

    def result(self, job_id: str) -> JobResult:
        return JobResult.model_validate(self.request("GET", f"/v1/jobs/{job_id}/result"))

    def artifacts(self, job_id: str) -> list[Artifact]:
        return [Artifact.model_validate(a) for a in self.request("GET", f"/v1/jobs/{job_id}/artifacts")]
