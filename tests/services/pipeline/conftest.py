"""The pipeline's tests compress the trainer tests' small trained teacher."""

from tests.services.trainer.conftest import trained_teacher  # noqa: F401
