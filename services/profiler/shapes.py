"""A model shape from the name a client gives it: a preset, the shape hash of a stored LUT, or the
Hugging Face model directory (or its config.json) that a trainer job takes as its teacher."""

import json
import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.profiler.models import LutRow
from shared.errors import invalid
from shared.paths import confine, input_roots
from shared.schemas.lut import LutKey
from shared.schemas.shape import PRESETS, ModelShape
from shared.settings import Settings

SHAPE_HASH = re.compile(r"[0-9a-f]{16}")


def resolve_shape(field: str, shape: ModelShape | str, settings: Settings, session: Session) -> ModelShape:
    """The shape named; a 422 naming the field when nothing answers to the name."""
    if isinstance(shape, ModelShape):
        return shape
    if shape in PRESETS:
        return PRESETS[shape]
    if SHAPE_HASH.fullmatch(shape):
        stored = session.scalar(select(LutRow.shape).where(LutRow.shape_hash == shape).limit(1))
        if stored is None:
            raise invalid(field, f"no stored LUT has the shape hash {shape}")
        return ModelShape.model_validate(stored)
    return model_directory_shape(field, shape, settings)


def model_directory_shape(field: str, path: str, settings: Settings) -> ModelShape:
    """The shape of a model directory (or its config.json) inside the input roots, named after it."""
    try:
        given = confine(path, input_roots(settings))
    except ValueError as exc:
        message = f"{path!r} is no preset ({', '.join(PRESETS)}), stored shape hash or model directory"
        raise invalid(field, f"{message}: {exc}") from None
    config_file = given if given.is_file() else given / "config.json"
    if not config_file.is_file():
        raise invalid(field, f"{path} has no config.json (a Hugging Face model directory)")
    try:
        confine(config_file, input_roots(settings))
        config = json.loads(config_file.read_text())
        shape = ModelShape.from_hf_config(config)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError and ValidationError are ValueErrors
        raise invalid(field, f"{config_file} is not a supported model: {exc}") from None
    return shape.model_copy(update={"name": config.get("_name_or_path") or Path(config_file).parent.name})


Key = TypeVar("Key", bound=LutKey)


def resolved(model: type[Key], request: BaseModel, settings: Settings, session: Session) -> Key:
    """A request with its shape resolved, as `model` (LutKey, Build, ...); a 422 naming the field for an
    unknown name or a length beyond the model's positions. Fields `model` lacks are left out."""
    shape = resolve_shape("body.shape", request.shape, settings, session)
    fields = {k: v for k, v in request.model_dump().items() if k in model.model_fields}
    try:
        return model.model_validate({**fields, "shape": shape})
    except ValidationError as exc:  # the length against the resolved shape's positions
        error = exc.errors()[0]
        raise invalid("body." + ".".join(map(str, error["loc"])), error["msg"]) from None
