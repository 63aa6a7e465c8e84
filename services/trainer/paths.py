"""Each trainer job writes under its own folder."""

from pathlib import Path

from shared.settings import Settings


def job_dir(settings: Settings, job_id: str) -> Path:
    """The folder of one job's checkpoints and outputs."""
    return settings.artifacts_root.resolve() / job_id
