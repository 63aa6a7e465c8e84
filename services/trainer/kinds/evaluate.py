"""The evaluate job: held-out LM loss and perplexity of a model, on a fixed held-out token set.

Deterministic: the first `eval_batches` consecutive held-out windows, the same every time, so the
same model gives the same figure twice. The result says how many tokens it averaged over and how
many parameters the model has.
"""

from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.kinds.model_ref import check_model, load_model
from services.trainer.learning.data import split_tokens
from services.trainer.learning.distributed import job_device
from services.trainer.learning.training import heldout_loss
from shared.costs import parameters
from shared.schemas.trainer import EvaluateResult, EvaluateSpec
from shared.settings import Settings

SOURCES = {"directory", "student", "rank", "finetune"}


def check(spec: EvaluateSpec, settings: Settings, session: Session) -> EvaluateSpec:
    model = check_model("body.model", spec.model, settings, session, SOURCES)
    return spec.model_copy(
        update={"model": model, "dataset": inputs.dataset("body.dataset", spec.dataset, settings)}
    )


def run(ctx: JobContext) -> EvaluateResult:
    spec = EvaluateSpec.model_validate(ctx.spec)
    device = job_device(ctx.settings)
    ctx.status("loading the model")
    loaded = load_model(ctx, spec.model, device)
    heldout = split_tokens(spec.dataset, loaded.directory, "heldout")
    ctx.status("held-out loss", 0.1)
    evaluation = heldout_loss(
        loaded.model,
        heldout,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        batches=spec.eval_batches,
        device=device,
    )
    ctx.log(
        f"held-out loss {evaluation.loss:.4f} (perplexity {evaluation.perplexity:.2f}) "
        f"over {evaluation.tokens} tokens"
    )
    return EvaluateResult(
        loss=evaluation.loss,
        perplexity=evaluation.perplexity,
        tokens=evaluation.tokens,
        params=parameters(loaded.architecture, loaded.model.shape),
        architecture=loaded.architecture,
    )


KIND = JobKind(name="evaluate", spec=EvaluateSpec, result=EvaluateResult, run=run, check=check)
