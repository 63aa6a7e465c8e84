"""The run directory's record, run.json: what each stage was asked, what it made, how long it took.

A stage is keyed by a digest of its inputs. Started again (after a crash, a Ctrl-C or a changed
budget), the pipeline reuses every stage whose digest is unchanged and whose work succeeded, waits
for a recorded job that is still queued or running, and redoes the rest. The file is replaced
atomically after every change, so a crash leaves the last state whole.
"""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.files import atomic_path

RECORD = "run.json"


def digest(*parts: Any) -> str:
    """A stable digest of JSON-able inputs (pydantic models by their JSON)."""

    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    canonical = json.dumps([plain(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class RunRecord:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / RECORD
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("stages", {})

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def reusable(self, name: str, key: str) -> dict[str, Any] | None:
        """The stage's record when it finished with these inputs."""
        record = self.stage(name)
        return record if record.get("key") == key and record.get("state") == "done" else None

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        record = self.data["stages"].setdefault(name, {})
        record.update(fields)
        self.save()
        return record

    def start(self, name: str, key: str) -> None:
        """A stage begins (again): what an earlier attempt recorded under other inputs is dropped."""
        record = self.stage(name)
        if record.get("key") != key:
            self.data["stages"][name] = {}
        self.update(name, key=key, state="running", started_at=now())

    def finish(self, name: str, **fields: Any) -> dict[str, Any]:
        started = datetime.fromisoformat(self.stage(name)["started_at"])
        wall = (datetime.now(UTC) - started).total_seconds()
        return self.update(name, state="done", finished_at=now(), wall_s=round(wall, 1), **fields)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
