"""Typed client of the trainer API: specs and results are the contract in shared/schemas/trainer.py."""

from pathlib import Path, PurePosixPath

import httpx
from pydantic import BaseModel

from shared.clients.base import ServiceError, service_error
from shared.clients.jobs import JobsClient
from shared.files import atomic_path
from shared.schemas.jobs import Artifact, Job
from shared.schemas.trainer import RESULTS, JobPlan, JobSpec


class TrainerClient(JobsClient):
    """Submit, artifacts and typed results here; reading, cancelling and waiting in JobsClient."""

    service = "trainer"

    def submit(self, spec: JobSpec, *, idempotency_key: str | None = None) -> Job:
        """Queue a job. With an idempotency key, a retry returns the job the first call made."""
        body = spec.model_dump(mode="json")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(self.request("POST", "/v1/jobs", json=body, headers=headers))

    def plan(self, spec: JobSpec) -> JobPlan:
        """What the job would take on the trainer's device (nothing is queued)."""
        return JobPlan.model_validate(self.request("POST", "/v1/plans", json=spec.model_dump(mode="json")))

    def result(self, job_id: str) -> BaseModel:
        """A succeeded job's result, as its kind's result model (DistillResult, ScoreTable, ...)."""
        answer = self.raw_result(job_id)
        return RESULTS[answer.kind].model_validate(answer.result)

    def artifacts(self, job_id: str) -> list[Artifact]:
        return [Artifact.model_validate(a) for a in self.request("GET", f"/v1/jobs/{job_id}/artifacts")]

    def download_folder(self, job_id: str, files: list[str], folder: str, target: Path) -> None:
        """The files a job lists under `folder` of its own (export/config.json, ...), into `target` with
        their paths below `folder`. The names come from the service: every one is checked before
        anything is written, and one that would land outside `target` (absolute, `..`, a link out of
        it) is a ServiceError."""
        inside = [(file, below(target, folder, file)) for file in files]
        for file, path in inside:
            self.download(job_id, file, path)

    def download(self, job_id: str, file: str, target: Path) -> None:
        """One file a job wrote (a path inside its folder, e.g. export/model.onnx), streamed to `target`
        and put in place whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with (
                atomic_path(target) as tmp,
                open(tmp, "wb") as f,
                self.http.stream("GET", f"/v1/jobs/{job_id}/files/{file}") as response,
            ):
                if response.is_error:
                    response.read()
                    raise service_error(response)
                for chunk in response.iter_bytes():
                    f.write(chunk)
        except httpx.TransportError as exc:  # the trainer went away mid-file: one error, no half file
            raise ServiceError(
                503, "unreachable", f"{self.http.base_url} stopped sending {file} ({exc})"
            ) from None


def below(target: Path, folder: str, name: str) -> Path:
    """Where a file the service names `folder/...` goes under `target`; ServiceError when that is not
    inside `target`, as written or once the links already there are followed."""
    parts = PurePosixPath(name).parts
    written = len(parts) > 1 and parts[0] == folder and ".." not in parts and "\0" not in name
    path = target.joinpath(*parts[1:]) if written else target
    if not written or not path.resolve().is_relative_to(target.resolve()):
        raise ServiceError(
            502,
            "bad_file_name",
            f"refused the file name {name!r} from the service: not a file under {folder}/",
        )
    return path
