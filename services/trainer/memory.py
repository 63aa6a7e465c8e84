"""Refusing at submission a trainer job that cannot fit the trainer's device memory.

Rough on purpose, like the profiler's limits (services/profiler/limits.py): it tells a job that fits
from one that cannot by orders of magnitude (seq_len 131072 x batch_size 4096), not a tight bound.
The model is taken at its teacher's size (a student is no larger), all in float32:

- weights, and for a training job their gradients and AdamW's two moments, plus the teacher beside;
- activations: batch x seq_len x hidden x layers x ACTIVATIONS_PER_CHANNEL, all layers kept for the
  backward pass when training, about one layer's worth when only evaluating;
- logits: batch x seq_len x vocab, times LOGIT_COPIES (logits, log-softmax, their gradient).

The device is the trainer's (UNAST_TRAINER_DEVICE): this machine's memory for `cpu`; a CUDA device's,
asked once of a short-lived process so that the API holds no GPU context. A job may plan on
MEMORY_SHARE of it.
"""

import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.trainer.models import QUEUE
from shared.errors import ApiError
from shared.schemas.shape import ModelShape
from shared.settings import Settings

log = logging.getLogger("unast.trainer.memory")

MEMORY_SHARE = 0.8
FLOAT_BYTES = 4
ACTIVATIONS_PER_CHANNEL = (
    16  # kept per token, channel and layer for the backward pass (attention, MLP, norms)
)
LOGIT_COPIES = 3
TRAINING_KINDS = {"distill", "rank", "finetune"}  # the others only evaluate


def device_memory_bytes(device: str) -> int | None:
    """Memory of the trainer's device, or None when it cannot be told (the check is then skipped)."""
    if device == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return _cuda_memory_bytes(int(device.partition(":")[2] or 0))


@functools.cache
def _cuda_memory_bytes(index: int) -> int | None:
    code = f"import torch; print(torch.cuda.get_device_properties({index}).total_memory)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        log.warning("cannot tell the memory of cuda:%d; trainer jobs are not checked against it", index)
        return None


def estimate_bytes(shape: ModelShape, *, batch: int, seq_len: int, training: bool) -> dict[str, float]:
    """The parts of a job's memory, in bytes."""
    h, layers = shape.hidden_size, shape.num_layers
    attention = h * shape.head_dim * 2 * (shape.num_heads + shape.num_kv_heads)  # q and o, k and v
    params = shape.vocab_size * h * (1 if shape.tie_word_embeddings else 2)
    params += layers * (attention + 3 * h * shape.intermediate_size)
    tokens = batch * seq_len
    return {
        "weights": params * FLOAT_BYTES * (5 if training else 1),  # + gradients, 2 moments, the teacher
        "activations": tokens * h * (layers if training else 1) * ACTIVATIONS_PER_CHANNEL * FLOAT_BYTES,
        "logits": tokens * shape.vocab_size * LOGIT_COPIES * FLOAT_BYTES,
    }


def check_memory(spec: BaseModel, settings: Settings, session: Session) -> None:
    """422 naming batch_size and seq_len when the job would not fit the trainer's device. Runs after the
    kind's own check, so paths are resolved and referenced jobs exist."""
    fields = spec.model_dump()
    if "batch_size" not in fields or "seq_len" not in fields:
        return
    shape = _model_shape(fields, session)
    available = device_memory_bytes(settings.trainer_device)
    if shape is None or available is None:
        return
    parts = estimate_bytes(
        shape,
        batch=fields["batch_size"],
        seq_len=fields["seq_len"],
        training=fields["kind"] in TRAINING_KINDS,
    )
    need, offered = sum(parts.values()), available * MEMORY_SHARE
    if need <= offered:
        return
    breakdown = ", ".join(f"{_gib(v)} of {k}" for k, v in parts.items())
    message = (
        f"the job needs about {_gib(need)} ({breakdown}); the trainer's device ({settings.trainer_device}) "
        f"offers {_gib(offered)}: use a smaller batch_size or seq_len"
    )
    details = [{"field": f"body.{name}", "message": message} for name in ("batch_size", "seq_len")]
    raise ApiError(422, f"body.batch_size, body.seq_len: {message}", details=details)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _model_shape(spec: dict[str, Any], session: Session) -> ModelShape | None:
    """The shape of the model a job works on, at its teacher's size; None when it cannot be found."""
    directory = _model_dir(spec, session)
    try:
        return ModelShape.from_hf_config(json.loads((directory / "config.json").read_text()))
    except (OSError, TypeError, ValueError, KeyError):
        return None


def _model_dir(spec: dict[str, Any], session: Session, depth: int = 0) -> Path | None:
    """A directory whose config.json has the job's model shape (or its teacher's): the teacher, the
    model directory, or found through the jobs the spec names."""
    if depth > 4:
        return None
    if spec.get("teacher"):
        return Path(spec["teacher"])
    for ref in ("distill_job", "rank_job", "finetune_job"):
        if spec.get(ref):
            job = QUEUE.get(session, job_id=spec[ref])
            return _model_dir(job.spec, session, depth + 1) if job is not None else None
    model = spec.get("model")
    if isinstance(model, dict):
        return Path(model["path"]) if model.get("path") else _model_dir(model, session, depth + 1)
    return None
