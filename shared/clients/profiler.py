"""Typed client of the profiler API: devices, LUT builds, queries, validations, exports."""

from typing import Any

from shared.clients.jobs import JobsClient
from shared.schemas.jobs import Job
from shared.schemas.lut import (
    BuildRequest,
    BuildResult,
    CostTable,
    Device,
    Estimate,
    EstimateRequest,
    Lut,
    LutSummary,
    OperatorCost,
    OperatorCostRequest,
    ThisDevice,
    Validation,
    ValidationRequest,
    ValidationResult,
)


class ProfilerClient(JobsClient):
    """Builds and validations are jobs: follow them with JobsClient (job, wait, cancel, log), read what
    they made with build_result / validation_result."""

    service = "profiler"

    def this_device(self) -> ThisDevice:
        """The device this profiler measures."""
        return ThisDevice.model_validate(self.request("GET", "/v1/device"))

    def devices(self) -> list[Device]:
        return [Device.model_validate(d) for d in self.request("GET", "/v1/devices")]

    def device(self, device_id: int) -> Device:
        return Device.model_validate(self.request("GET", f"/v1/devices/{device_id}"))

    def build_lut(self, request: BuildRequest) -> Job:
        """Start a build; follow it with wait(job.id), then build_result(job.id)."""
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
        """Start a validation; follow it with wait(job.id), then validation_result(job.id)."""
        body = (request or ValidationRequest()).model_dump(mode="json")
        return Job.model_validate(self.request("POST", f"/v1/luts/{lut_id}/validations", json=body))

    def build_result(self, job_id: str) -> BuildResult:
        """The LUT a succeeded build wrote (409 before it succeeded)."""
        return BuildResult.model_validate(self.raw_result(job_id).result)

    def validation_result(self, job_id: str) -> ValidationResult:
        """The validation a succeeded validation job wrote (409 before it succeeded)."""
        return ValidationResult.model_validate(self.raw_result(job_id).result)

    def validation(self, validation_id: int) -> Validation:
        return Validation.model_validate(self.request("GET", f"/v1/validations/{validation_id}"))

    def validations(self, lut_id: int) -> list[Validation]:
        return [Validation.model_validate(v) for v in self.request("GET", f"/v1/luts/{lut_id}/validations")]
