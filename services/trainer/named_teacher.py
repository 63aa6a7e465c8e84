"""The teacher a model directory names in its provenance.json (an export does) is loaded beside the
model (kinds/model_ref.py): that file and the teacher's files are opened, so, like every file a job
opens, they must lie inside the roots (no symlink or path out of them)."""

import json
from pathlib import Path

from shared.errors import invalid
from shared.paths import confine, input_roots
from shared.settings import Settings


def check_named_teacher(field: str, directory: Path, settings: Settings) -> None:
    """422 naming the field when provenance.json, or the teacher it names, lies outside the roots."""
    provenance = directory / "provenance.json"
    if not provenance.is_file():
        return
    roots = input_roots(settings)
    try:
        confine(provenance, roots)
        named = json.loads(provenance.read_text())
    except ValueError as exc:  # outside the roots, or not JSON
        raise invalid(field, f"provenance.json: {exc}") from None
    teacher = named.get("teacher") if isinstance(named, dict) else None
    if not isinstance(teacher, str) or not Path(teacher).is_dir():
        return  # no teacher named: the directory is its own
    try:
        confine(teacher, roots)
        for file in [Path(teacher) / "config.json", *Path(teacher).glob("*.safetensors")]:
            confine(file, roots)
    except ValueError as exc:
        raise invalid(field, f"the teacher provenance.json names: {exc}") from None
