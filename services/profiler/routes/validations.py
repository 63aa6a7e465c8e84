"""Validations: random architectures from a LUT's operators, timed whole, against the LUT's prediction."""

from fastapi import APIRouter

from services.profiler import store
from services.profiler.deps import ThisDeviceDep, lut_or_404
from services.profiler.jobs import ValidationSpec, submit
from services.profiler.limits import check_validation
from shared.api import CheckedRoute, RowId, SessionDep, SettingsDep, TokenDep
from shared.errors import ApiError, not_found
from shared.schemas.jobs import Job
from shared.schemas.lut import Validation, ValidationRequest

router = APIRouter(prefix="/v1", tags=["validations"], route_class=CheckedRoute)


@router.post(
    "/luts/{lut_id}/validations",
    status_code=202,
    dependencies=[TokenDep],
    summary="Time random architectures end to end and compare with the LUT: returns the job at once",
    responses={404: {}, 409: {"description": "The LUT belongs to another device"}},
)
def validate_lut(
    lut_id: RowId,
    request: ValidationRequest,
    session: SessionDep,
    settings: SettingsDep,
    device: ThisDeviceDep,
) -> Job:
    lut = lut_or_404(session, lut_id)
    owner = store.get_device(session, device_id=lut.device_id)
    if owner.key != device.key:
        raise ApiError(
            409,
            f"LUT {lut_id} was measured on {owner.name} ({owner.key}); this profiler measures "
            f"{device.name} ({device.key})",
        )
    check_validation(lut, request, device, settings)
    return Job.model_validate(submit(session, spec=ValidationSpec(**request.model_dump(), lut_id=lut_id)))


@router.get("/luts/{lut_id}/validations", summary="Validations of one LUT", responses={404: {}})
def list_validations(lut_id: RowId, session: SessionDep) -> list[Validation]:
    lut_or_404(session, lut_id)
    return store.list_validations(session, lut_id=lut_id)


@router.get(
    "/validations/{validation_id}", summary="Predicted vs measured, per architecture", responses={404: {}}
)
def get_validation(validation_id: RowId, session: SessionDep) -> Validation:
    validation = store.get_validation(session, validation_id=validation_id)
    if validation is None:
        raise not_found("validation", validation_id)
    return validation
