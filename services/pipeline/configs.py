"""How much work each stage does: `quick` (the README's first command, minutes on 2 CPU cores) and
`quality` (the figures behind the README's quality table). Sizes chosen by measurement; README says
what each took."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.candidates import Pool


@dataclass(frozen=True)
class Config:
    name: str
    # the device's LUT: prefill of `length` tokens, batch 1
    length: int
    lut_time_cap_s: float
    validation_count: int  # random architectures timed whole to check the LUT
    # Stage 1: distillation
    pool: Pool  # "default" or "small" (shared/candidates.py)
    distill_steps: int
    distill_batch: int
    # scores
    score_batches: int
    # Stage 2: search
    k: int
    search_time_limit_s: float
    # Stages 3 and 4
    rank_steps: int
    finetune_steps: int
    eval_every: int
    eval_batches: int
    batch: int
    seq_len: int
    loss: str
    # what else runs
    baselines: bool
    onnx: bool
    # in the default format, a Llama teacher's servable row beside UNAST: the nemotron-nas pool distilled
    # in the same job, searched, ranked and finetuned (what serving in that form costs; README)
    nemotron_nas_row: bool = True

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
)

CONFIGS = {c.name: c for c in (QUICK, QUALITY)}


def load_config(name_or_file: str) -> Config:
    """A configuration by name, or a JSON file of fields over the quick one's (its own sizes)."""
    if name_or_file in CONFIGS:
        return CONFIGS[name_or_file]
    path = Path(name_or_file)
    if not path.is_file():
        names = ", ".join(CONFIGS)
        raise ValueError(f"{name_or_file!r} is neither a configuration ({names}) nor a JSON file")
    fields = json.loads(path.read_text())
    unknown = set(fields) - set(QUICK.as_dict())
    if unknown:
        raise ValueError(f"{path}: unknown fields {', '.join(sorted(unknown))}")
    return Config(**{**QUICK.as_dict(), "name": path.stem, **fields})
