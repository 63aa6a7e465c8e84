"""One router per resource: devices, LUTs, validations, and the per-device queries. Jobs are every
service's job routes (services/jobs/routes.py)."""
