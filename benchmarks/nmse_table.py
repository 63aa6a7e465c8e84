"""Distil a fixed candidate set on the demo teacher and print the held-out normalised MSE table:
attention vs MLP candidates, first vs last blocks (the paper's Table 1 / Finding 5 pattern).

    .venv/bin/python -m benchmarks.nmse_table [--teacher DIR] [--steps 300] [--out var/nmse-table]
"""

import argparse
from pathlib import Path

from benchmarks.common import DEMO_TEACHER
from services.trainer.local import run_locally
from shared.model import Decoder
from shared.schemas.operators import (
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    OperatorSpec,
    slot_id,
    teacher_operator,
)
from shared.schemas.trainer import DistillResult, DistillSpec
from shared.settings import get_settings


def candidates(shape) -> dict[str, list[OperatorSpec]]:
    h, kv, d, i = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size
    attention = [
        teacher_operator(shape, "attention"),
        AttentionOp(num_heads=h, num_kv_heads=max(1, kv // 2), head_dim=d),  # fewer KV heads
        AttentionOp(num_heads=h // 2, num_kv_heads=max(1, kv // 2), head_dim=d),  # half the heads
        AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=d // 2),  # half the head size
        LinearOp(),
        IdentityOp(),
    ]
    mlp = [
        teacher_operator(shape, "mlp"),
        MLPOp(intermediate_size=i // 2),
        MLPOp(intermediate_size=i // 4),
        LinearOp(),
        IdentityOp(),
    ]
    return {
        slot_id(layer, kind): attention if kind == "attention" else mlp
        for layer in range(shape.num_layers)
        for kind in ("attention", "mlp")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--teacher", type=Path, default=DEMO_TEACHER)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("var/nmse-table"))
    args = p.parse_args()
    shape = Decoder.from_pretrained(args.teacher).shape
    spec = DistillSpec(
        teacher=str(args.teacher.resolve()),
        dataset="shakespeare",
        candidates=candidates(shape),
        steps=args.steps,
        batch_size=8,
        seq_len=256,
        learning_rate=5e-4,
        min_learning_rate=5e-5,
        warmup=20,
        checkpoint_every=100,
        eval_batches=16,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spec.json").write_text(spec.model_dump_json(indent=1))
    result = DistillResult.model_validate(run_locally(args.out / "spec.json", args.out, get_settings()))
    nmse = result.heldout_nmse
    layers = shape.num_layers
    for kind in ("attn", "mlp"):
        ids = list(nmse[f"block0.{kind}"])
        print(f"\n{kind} candidate".ljust(22) + "".join(f"block{b}".rjust(10) for b in range(layers)))
        for cid in ids:
            print(cid.ljust(21) + "".join(f"{nmse[f'block{b}.{kind}'][cid]:10.4f}" for b in range(layers)))


if __name__ == "__main__":
    main()
