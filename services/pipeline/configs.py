"""How much work each stage does: `quick` (the README's first command, minutes on 2 CPU cores) and
`quality` (the figures behind the README's quality table). Sizes chosen by measurement; README says
what each took."""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.dataclasses import dataclass

from shared.candidates import Pool
from shared.schemas.lut import BuildRequest, ValidationRequest
from shared.schemas.search import SearchRequest
from shared.schemas.shape import one_line
from shared.schemas.trainer import DistillSpec, FinetuneSpec, RankSpec, ScoreSpec


def sent_as(model: type[BaseModel], name: str) -> Any:
    """The type and bounds of the request field a configuration's field is sent in: a value the service
    would refuse is refused when the configuration is read, not after the profile stage."""
    field = model.model_fields[name]
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


# strict: "many" is not a number of steps, nor true one (a JSON file's fields are checked on reading)
@dataclass(frozen=True, config=ConfigDict(strict=True))
class Config:
    name: str
    # the device's LUT: prefill of `length` tokens, batch 1
    length: sent_as(BuildRequest, "length")
    lut_time_cap_s: sent_as(BuildRequest, "time_cap_s")
    validation_count: sent_as(ValidationRequest, "count")  # random architectures timed whole to check the LUT
    # Stage 1: distillation
    pool: Pool  # "default" or "small" (shared/candidates.py)
    distill_steps: sent_as(DistillSpec, "steps")
    distill_batch: sent_as(DistillSpec, "batch_size")
    # scores
    score_batches: sent_as(ScoreSpec, "eval_batches")
    # Stage 2: search
    k: sent_as(SearchRequest, "k")
    search_time_limit_s: sent_as(SearchRequest, "time_limit_s")
    # Stages 3 and 4
    rank_steps: sent_as(RankSpec, "steps")
    finetune_steps: sent_as(FinetuneSpec, "steps")
    eval_every: sent_as(FinetuneSpec, "eval_every")
    eval_batches: sent_as(FinetuneSpec, "eval_batches")
    batch: sent_as(FinetuneSpec, "batch_size")
    seq_len: sent_as(FinetuneSpec, "seq_len")
    loss: sent_as(FinetuneSpec, "loss")
    # what else runs
    baselines: bool
    onnx: bool
    # in the default format, a Llama teacher's servable row beside UNAST: the nemotron-nas pool distilled
    # in the same job, searched, ranked and finetuned (what serving in that form costs; README)
    nemotron_nas_row: bool = True
    # UNAST's architecture trained from random weights on 10x the tokens UNAST's model was trained on
    # (methods.scratch): the paper's cost claim, measured; an hour on 2 cores beside `quality`
    scratch: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = Config(
    name="quick",
    length=128,
    lut_time_cap_s=15.0,
    validation_count=5,
    pool="small",
    distill_steps=100,
    distill_batch=8,
    score_batches=12,
    k=5,
    search_time_limit_s=30.0,
    rank_steps=20,
    finetune_steps=120,
    eval_every=40,
    eval_batches=12,
    batch=8,
    seq_len=128,
    loss="lm",  # kd lowers perplexity more per step, but a step costs 2.6x: lm fits the quick budget
    baselines=True,
    onnx=True,
)

QUALITY = Config(
    name="quality",
    length=128,
    lut_time_cap_s=60.0,
    validation_count=20,
    pool="default",
    distill_steps=400,
    distill_batch=8,
    score_batches=64,
    k=20,
    search_time_limit_s=60.0,
    rank_steps=50,
    finetune_steps=500,
    eval_every=100,
    eval_batches=32,
    batch=8,
    seq_len=128,
    loss="kd",
    baselines=True,
    onnx=True,
    scratch=True,
)

CONFIGS = {c.name: c for c in (QUICK, QUALITY)}


def load_config(name_or_file: str) -> Config:
    """A configuration by name, or a JSON file of fields over the quick one's (its own sizes).
    ValueError, one line naming the file and the field, for a file that does not make one."""
    if name_or_file in CONFIGS:
        return CONFIGS[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        names = ", ".join(CONFIGS)
        raise ValueError(f"{name_or_file!r} is neither a configuration ({names}) nor a JSON file")
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: not a JSON object of fields")
    unknown = set(fields) - set(QUICK.as_dict())
    if unknown:
        raise ValueError(f"{path}: unknown fields {', '.join(sorted(unknown))}")
    try:
        return changed(QUICK, name=path.stem, **fields)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def changed(config: Config, **fields: Any) -> Config:
    """The configuration with these fields changed; ValueError, one line naming the field."""
    try:
        return Config(**{**config.as_dict(), **fields})
    except ValidationError as exc:
        raise ValueError(one_line(exc)) from None
