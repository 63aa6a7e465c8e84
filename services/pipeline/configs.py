"""How much work each stage does: `quick` (the README's first command, minutes on 2 CPU cores) and
`quality` (the figures behind the README's quality table). Sizes chosen by measurement; README says
what each took."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.candidates import candidates
from shared.schemas.operators import AttentionOp, IdentityOp, LinearOp, MLPOp, OperatorSpec, teacher_operator
from shared.schemas.shape import ModelShape


@dataclass(frozen=True)
class Config:
    name: str
    # the device's LUT: prefill of `length` tokens, batch 1
    length: int
    lut_time_cap_s: float
    validation_count: int  # random architectures timed whole to check the LUT
    # Stage 1: distillation
    pool: str  # "default" (shared/candidates.py) or "small" (a few per slot type, below)
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


def pool(config: Config, shape: ModelShape) -> dict[str, list[OperatorSpec]] | None:
    """The distill job's candidates per slot (None: the trainer's default pool for every slot)."""
    if config.pool == "default":
        return None
    h, kv, d, i = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size
    attention = list(
        dict.fromkeys(
            [
                teacher_operator(shape, "attention"),
                IdentityOp(),
                LinearOp(),
                AttentionOp(
                    num_heads=h, num_kv_heads=max(1, kv // 2) if h % max(1, kv // 2) == 0 else kv, head_dim=d
                ),
                AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=max(2, 2 * (d // 4))),
                _half_heads(shape),
                _half_heads(shape).model_copy(update={"head_dim": max(2, 2 * (d // 4))}),
            ]
        )
    )
    widths = [m for m in candidates(shape, "mlp")[3:] if m.intermediate_size in {3 * i // 4, i // 2, i // 4}]
    mlp = [
        teacher_operator(shape, "mlp"),
        IdentityOp(),
        LinearOp(),
        *(widths or [MLPOp(intermediate_size=max(1, i // 2))]),
    ]
    return {
        f"block{layer}.{suffix}": (attention if suffix == "attn" else mlp)
        for layer in range(shape.num_layers)
        for suffix in ("attn", "mlp")
    }


def _half_heads(shape: ModelShape) -> AttentionOp:
    heads = max(1, shape.num_heads // 2)
    kv = max(k for k in range(1, heads + 1) if heads % k == 0 and k <= shape.num_kv_heads)
    return AttentionOp(num_heads=heads, num_kv_heads=kv, head_dim=shape.head_dim)
