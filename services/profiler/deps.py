"""Dependencies the profiler's routes share: this device, LUT look-ups."""

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from services.profiler import store
from services.profiler.device import DeviceInfo, probe_in_subprocess
from services.profiler.shapes import resolved
from shared.api import SettingsDep
from shared.errors import ApiError, invalid, not_found
from shared.schemas.lut import Lut, LutKey, LutRef, shape_hash
from shared.settings import Settings


def this_device(settings: SettingsDep) -> DeviceInfo:
    """The device this profiler measures (probed once, in a child process)."""
    try:
        return probe_in_subprocess(settings)
    except (RuntimeError, OSError) as exc:
        raise ApiError(503, str(exc)) from exc


ThisDeviceDep = Annotated[DeviceInfo, Depends(this_device)]


def lut_or_404(session: Session, lut_id: int) -> Lut:
    lut = store.get_lut(session, lut_id=lut_id)
    if lut is None:
        raise not_found("LUT", lut_id)
    return lut


def lut_for_request(session: Session, settings: Settings, device_id: int, ref: LutRef) -> Lut:
    """The LUT a query names, by id or by key, on the device of the path; 404 when there is none."""
    if store.get_device(session, device_id=device_id) is None:
        raise not_found("device", device_id)
    if ref.lut_id is not None:
        lut = lut_or_404(session, ref.lut_id)
        if lut.device_id != device_id:
            raise invalid(
                "body.lut_id", f"LUT {ref.lut_id} belongs to device {lut.device_id}, not {device_id}"
            )
        return lut
    key = resolved(LutKey, ref, settings, session)
    lut = store.find_lut(session, device_id=device_id, key=key)
    if lut is None:
        raise ApiError(
            404,
            f"no LUT on device {device_id} for shape {key.shape.name or shape_hash(key.shape)}, "
            f"{key.regime}, batch {key.batch}, length {key.length}, {key.dtype}; "
            "build one with POST /v1/luts",
        )
    return lut
