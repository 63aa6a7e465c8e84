"""Devices: one per fingerprint, recorded by the first job that measures on it."""

from fastapi import APIRouter

from services.profiler import store
from services.profiler.deps import ThisDeviceDep
from shared.api import CheckedRoute, RowId, SessionDep
from shared.errors import not_found
from shared.schemas.lut import Device, ThisDevice

router = APIRouter(prefix="/v1/devices", tags=["devices"], route_class=CheckedRoute)
this = APIRouter(prefix="/v1/device", tags=["devices"], route_class=CheckedRoute)


@this.get("", summary="The device this profiler measures (what its builds and validations run on)")
def this_device(session: SessionDep, device: ThisDeviceDep) -> ThisDevice:
    stored = store.get_device_by_key(session, key=device.key)
    return ThisDevice(id=stored.id if stored else None, **device.model_dump())


@router.get("", summary="Devices with measurements")
def list_devices(session: SessionDep) -> list[Device]:
    return store.list_devices(session)


@router.get("/{device_id}", summary="One device, with its fingerprint", responses={404: {}})
def get_device(device_id: RowId, session: SessionDep) -> Device:
    device = store.get_device(session, device_id=device_id)
    if device is None:
        raise not_found("device", device_id)
    return device
