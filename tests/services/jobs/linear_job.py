"""A small real job kind for testing the job machinery: fit a torch.nn.Linear to a fixed linear map.

It is written like a real kind: a spec, a typed result, a flat loop with `ctx.step` at the top of
each step, a checkpoint (model, optimizer, data RNG) every `checkpoint_every` steps, resume from the
last one, an artifact and a result at the end. Run as a script, it is a worker that knows this kind
(for the tests that start worker processes and kill them).
"""

import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from services.jobs.checkpoint import restore_optimizer
from services.jobs.context import JobContext
from services.jobs.kind import JobKind

IN, OUT = 8, 4


class LinearSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["linear"] = "linear"
    steps: int = Field(ge=1)
    learning_rate: float = Field(0.05, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(10, ge=1)
    step_delay_s: float = Field(0.0, ge=0, description="Slows the job down enough to kill or cancel it.")


class LinearResult(BaseModel):
    loss: float
    weight: list[float]
    bias: list[float]


def run_linear(ctx: JobContext, before_step: Callable[[int], None] = lambda _step: None) -> dict:
    spec = LinearSpec.model_validate(ctx.spec)
    torch.manual_seed(spec.seed)
    model = nn.Linear(IN, OUT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
    data = torch.Generator().manual_seed(spec.seed)
    target = torch.linspace(-1, 1, IN * OUT).view(OUT, IN)
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        model.load_state_dict(checkpoint.model)
        restore_optimizer(optimizer, checkpoint.optimizer)
        data.set_state(checkpoint.extra["data_rng"])
        start = checkpoint.step
    for step in range(start, spec.steps):
        ctx.step(step, spec.steps)
        before_step(step)
        x = torch.randn(32, IN, generator=data)
        loss = F.mse_loss(model(x), x @ target.T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        time.sleep(spec.step_delay_s)
        if (step + 1) % spec.checkpoint_every == 0:
            ctx.save_checkpoint(
                step=step + 1,
                model=model.state_dict(),
                optimizer=optimizer,
                extra={"data_rng": data.get_state()},
            )
    with torch.no_grad():
        x = torch.randn(256, IN, generator=torch.Generator().manual_seed(spec.seed + 1))
        final_loss = F.mse_loss(model(x), x @ target.T).item()
    ctx.save_artifact("linear", model.state_dict(), {"steps": spec.steps, "loss": final_loss})
    return {"loss": final_loss, "weight": model.weight.flatten().tolist(), "bias": model.bias.tolist()}


def linear_kind(runner: Callable[[JobContext], dict] = run_linear) -> JobKind:
    return JobKind(name="linear", spec=LinearSpec, result=LinearResult, run=runner)


if __name__ == "__main__":
    from services.trainer.cli import run_worker

    run_worker({"linear": linear_kind()})
