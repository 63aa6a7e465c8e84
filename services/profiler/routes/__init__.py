"""One router per resource: devices, LUTs, jobs, validations, and the per-device queries."""
