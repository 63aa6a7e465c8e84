"""Typed client of the profiler API: devices, LUT builds, queries, validations, exports."""

import time
from typing import Any

from shared.clients.base import ServiceClient
from shared.schemas.lut import (
    BuildRequest,
    CostTable,
    Device,
    Estimate,
    EstimateRequest,
    Job,
    Lut,
    LutSummary,
    OperatorCost,
    OperatorCostRequest,
    ThisDevice,
    Validation,
    ValidationRequest,
)

FINISHED = ("succeeded", "failed")


class ProfilerClient(ServiceClient):
    service = "profiler"

    def this_device(self) -> ThisDevice:
        """The device this profiler measures."""
        return ThisDevice.model_validate(self.request("GET", "/v1/device"))

    def devices(self) -> list[Device]:
        return [Device.model_validate(d) for d in self.request("GET", "/v1/devices")]

    def device(self, device_id: int) -> Device:
        return Device.model_validate(self.request("GET", f"/v1/devices/{device_id}"))

    def build_lut(self, request: BuildRequest) -> Job:
        """Start a build; poll it with job() or wait_for()."""
        return Job.model_validate(self.request("POST", "/v1/luts", json=request.model_dump(mode="json")))

    def luts(self, **filters: Any) -> list[LutSummary]:
        params = {k: v for k, v in filters.items() if v is not None}
        return [LutSummary.model_validate(s) for s in self.request("GET", "/v1/luts", params=params)]

    def lut(self, lut_id: int) -> Lut:
        return Lut.model_validate(self.request("GET", f"/v1/luts/{lut_id}"))

    def export(self, lut_id: int) -> CostTable:
        return CostTable.model_validate(self.request("GET", f"/v1/luts/{lut_id}/export"))

    def operator_cost(self, device_id: int, request: OperatorCostRequest) -> OperatorCost:
        path = f"/v1/devices/{device_id}/operator-cost"
        return OperatorCost.model_validate(self.request("POST", path, json=request.model_dump(mode="json")))

    def estimate(self, device_id: int, request: EstimateRequest) -> Estimate:
        path = f"/v1/devices/{device_id}/estimate"
        return Estimate.model_validate(self.request("POST", path, json=request.model_dump(mode="json")))

    def validate_lut(self, lut_id: int, request: ValidationRequest | None = None) -> Job:
        body = (request or ValidationRequest()).model_dump(mode="json")
        return Job.model_validate(self.request("POST", f"/v1/luts/{lut_id}/validations", json=body))

    def validation(self, validation_id: int) -> Validation:
        return Validation.model_validate(self.request("GET", f"/v1/validations/{validation_id}"))

    def validations(self, lut_id: int) -> list[Validation]:
        return [Validation.model_validate(v) for v in self.request("GET", f"/v1/luts/{lut_id}/validations")]

    def job(self, job_id: int) -> Job:
        return Job.model_validate(self.request("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, **filters: Any) -> list[Job]:
        params = {k: v for k, v in filters.items() if v is not None}
        return [Job.model_validate(j) for j in self.request("GET", "/v1/jobs", params=params)]

    def wait_for(self, job_id: int, timeout_s: float = 3600.0, poll_s: float = 0.5) -> Job:
        """Poll a job until it succeeds or fails; TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job.state in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout_s:.0f} s")
            time.sleep(poll_s)
