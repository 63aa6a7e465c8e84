"""LUTs: build one (a job), list them with filters, read one with its entries, export its cost table."""

from typing import Annotated

from fastapi import APIRouter, Query

from services.profiler import store
from services.profiler.deps import ThisDeviceDep, lut_or_404
from services.profiler.jobs import BuildSpec, submit
from services.profiler.limits import check_build
from services.profiler.lookup import cost_table
from services.profiler.shapes import model_directory_shape, resolved
from shared.api import DB_INT_MAX, CheckedRoute, RowId, SessionDep, SettingsDep, TokenDep
from shared.schemas.jobs import Job
from shared.schemas.lut import BuildRequest, CostTable, Dtype, Lut, LutSummary, Regime, shape_hash

router = APIRouter(prefix="/v1/luts", tags=["luts"], route_class=CheckedRoute)


@router.post(
    "",
    status_code=202,
    dependencies=[TokenDep],
    summary="Build (or rebuild) the LUT of this device for a shape and regime: returns the job at once",
    description="`shape` may be a full shape, a preset name, the shape hash of a stored LUT, or a model "
    "directory (or its config.json) inside UNAST_INPUT_ROOTS, as a trainer job's `teacher`.",
)
def build_lut(
    request: BuildRequest, session: SessionDep, settings: SettingsDep, device: ThisDeviceDep
) -> Job:
    build = resolved(BuildSpec, request, settings, session)
    check_build(build, device, settings)
    return Job.model_validate(submit(session, spec=build))


@router.get("", summary="LUTs, filtered by any of device, shape, regime, batch, length, dtype")
def list_luts(
    session: SessionDep,
    settings: SettingsDep,
    device_id: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
    shape: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="A preset or model name, a shape hash, or a model directory (or its config.json) "
            "inside UNAST_INPUT_ROOTS.",
        ),
    ] = None,
    regime: Regime | None = None,
    batch: Annotated[int | None, Query(ge=1, le=4096)] = None,
    length: Annotated[int | None, Query(ge=1, le=1_048_576)] = None,
    dtype: Dtype | None = None,
) -> list[LutSummary]:
    if shape is not None and "/" in shape:  # a model directory: its LUTs are those of its shape's hash
        shape = shape_hash(model_directory_shape("shape", shape, settings))
    return store.list_luts(
        session, device_id=device_id, shape=shape, regime=regime, batch=batch, length=length, dtype=dtype
    )


@router.get(
    "/{lut_id}", summary="One LUT with its fixed part and every operator's entry", responses={404: {}}
)
def get_lut(lut_id: RowId, session: SessionDep) -> Lut:
    return lut_or_404(session, lut_id)


@router.get(
    "/{lut_id}/export",
    summary="The LUT as a search request's slots and candidate costs (scores to be joined)",
    responses={404: {}},
)
def export_lut(lut_id: RowId, session: SessionDep) -> CostTable:
    return cost_table(lut_or_404(session, lut_id))
