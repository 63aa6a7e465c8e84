"""The runtime's tests run on the trainer's tables and API: its fixtures."""

from tests.services.trainer.conftest import sessions, trainer  # noqa: F401
