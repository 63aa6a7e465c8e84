"""Shared set-up for the benchmarks: a teacher, its default candidates, token batches; the services and
record of a finished `unast compress` run, for the benchmarks of Stages 3 and 4."""

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from services.pipeline.configs import Config
from services.pipeline.progress import Reporter
from services.pipeline.record import RunRecord
from services.pipeline.stack import services
from services.pipeline.stages import Run
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
from shared.schemas.shape import ModelShape
from shared.settings import get_settings

DEMO_TEACHER = Path(__file__).parents[1] / "models" / "shakespeare-teacher"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--teacher", type=Path, default=DEMO_TEACHER, help="teacher directory (HF format)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    return p


def load_teacher(directory: Path) -> Decoder:
    if (directory / "config.json").exists():
        return Decoder.from_pretrained(directory).eval()
    # timings do not depend on the weights: a random teacher of the demo's shape serves as well
    print(f"(no teacher at {directory}; using random weights of the demo teacher's shape)")
    shape = ModelShape(
        vocab_size=2048,
        hidden_size=192,
        num_layers=6,
        num_heads=6,
        num_kv_heads=6,
        head_dim=32,
        intermediate_size=512,
    )
    torch.manual_seed(0)
    return Decoder(shape).eval()


def four_candidates(shape: ModelShape) -> dict[str, list[OperatorSpec]]:
    """Per slot: linear and three downsized operators (teacher and identity need no training)."""
    h, kv, d, i = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size
    attention = [
        LinearOp(),
        AttentionOp(num_heads=h // 2, num_kv_heads=max(1, kv // 2), head_dim=d),
        AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=d // 2),
        AttentionOp(num_heads=h // 2, num_kv_heads=max(1, kv // 2), head_dim=d // 2),
    ]
    mlp = [
        LinearOp(),
        MLPOp(intermediate_size=3 * i // 4),
        MLPOp(intermediate_size=i // 2),
        MLPOp(intermediate_size=i // 4),
    ]
    out = {}
    for layer in range(shape.num_layers):
        out[slot_id(layer, "attention")] = attention
        out[slot_id(layer, "mlp")] = mlp
    return out


def with_fixed(shape: ModelShape, candidates: dict[str, list[OperatorSpec]]) -> dict[str, list[OperatorSpec]]:
    return {
        slot: [teacher_operator(shape, "attention" if slot.endswith("attn") else "mlp"), IdentityOp(), *specs]
        for slot, specs in candidates.items()
    }


def batches(shape: ModelShape, n: int, batch: int, seq_len: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, shape.vocab_size, (batch, seq_len + 1), generator=g) for _ in range(n)]


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    print(f"torch threads: {n}; load average before: {os.getloadavg()}")


@contextmanager
def pipeline_run(run_dir: Path, name: str) -> Iterator[tuple[Run, RunRecord]]:
    """A finished `unast compress` run's services (its stack, or an embedded one) and record, and a Run
    of this benchmark's own (its stages recorded in <run>/benchmarks/<name>.json), to submit jobs
    beside the run's: the same store, keyed by their inputs, so a benchmark run again reuses its jobs."""
    done = RunRecord(run_dir)
    inputs = done.data.inputs
    if inputs is None:
        raise SystemExit(f"{run_dir} holds no `unast compress` run (no run.json with inputs)")
    settings = get_settings()
    with services(settings, run_dir / "benchmarks" / f"{name}-stack.log") as svc, Reporter() as reporter:
        teacher = Path(inputs.model)
        run = Run(
            services=svc,
            record=RunRecord(run_dir / "benchmarks" / name),
            config=Config(**inputs.config),
            reporter=reporter,
            teacher=teacher,
            shape=Decoder.from_pretrained(teacher).shape,
            budgets=inputs.budgets,
            device_kind=inputs.device,
            out=run_dir,
        )
        yield run, done
