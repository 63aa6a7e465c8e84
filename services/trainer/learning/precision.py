"""Mixed precision: a job's forward passes (the teacher's and the candidates' or the student's) run
under bfloat16 autocast where the device has it, while weights, gradients and AdamW's state stay
float32 (autocast casts only inside the operations it lists, matmuls first; losses are float32).

UNAST_TRAINER_PRECISION: `auto` (bfloat16 on a CUDA device that supports it, float32 elsewhere: on
CPU bfloat16 is fast only where the cores have AMX or AVX512-BF16), `bfloat16` or `float32`. Held-out
evaluations stay float32: they are measurements.
"""

import contextlib

import torch


def resolved(device: torch.device, precision: str) -> str:
    if precision != "auto":
        return precision
    return "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the forward passes run in."""
    if resolved(device, precision) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
