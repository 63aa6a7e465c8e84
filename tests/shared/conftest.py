"""The trainer's store fixture, for the tests of shared plumbing that run a worker on it."""

from tests.services.trainer.conftest import sessions  # noqa: F401
