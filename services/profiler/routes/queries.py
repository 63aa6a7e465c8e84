"""Per-device questions answered from the device's LUT: one operator's costs, a whole architecture's."""

from fastapi import APIRouter

from services.profiler.deps import lut_for_request
from services.profiler.lookup import NotMeasured, entry_for, estimate
from shared.api import CheckedRoute, RowId, SessionDep, SettingsDep
from shared.errors import ApiError, invalid
from shared.schemas.lut import Estimate, EstimateRequest, OperatorCost, OperatorCostRequest

router = APIRouter(prefix="/v1/devices/{device_id}", tags=["queries"], route_class=CheckedRoute)


@router.post(
    "/operator-cost",
    summary="Latency and memory of one operator on this device and regime",
    responses={404: {"description": "No such device, LUT, or operator not measured"}},
)
def operator_cost(
    device_id: RowId, request: OperatorCostRequest, session: SessionDep, settings: SettingsDep
) -> OperatorCost:
    lut = lut_for_request(session, settings, device_id, request)
    try:
        entry = entry_for(lut, request.operator)
    except NotMeasured as exc:
        raise ApiError(404, f"{exc}; rebuild the LUT with this operator in `operators`") from exc
    return OperatorCost(**entry.model_dump(), lut_id=lut.id, device_id=device_id)


@router.post(
    "/estimate",
    summary="Predicted latency and memory of an architecture: fixed part + its operators",
    responses={404: {"description": "No such device, LUT, or an operator not measured"}},
)
def estimate_architecture(
    device_id: RowId, request: EstimateRequest, session: SessionDep, settings: SettingsDep
) -> Estimate:
    lut = lut_for_request(session, settings, device_id, request)
    try:
        return estimate(lut, request.architecture)
    except NotMeasured as exc:
        raise ApiError(404, str(exc)) from exc
    except ValueError as exc:  # a slot the model lacks, or one the architecture misses
        slot = str(exc).split(":", 1)[0]
        raise invalid(f"body.architecture.choices.{slot}", str(exc)) from None
