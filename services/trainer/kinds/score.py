"""The score job: held-out e_ij for a distill job's candidates, batch by batch, with checkpoints.
Under torchrun the (slot, candidate) pairs are shared out among the ranks, balanced by how many slots
each runs (a pair runs from its slot to the end of the model): every rank runs the teacher once per
batch and only its own pairs; the per-batch sums are added up across ranks, so the table is the one
a single process computes.

The result is a ScoreTable (shared/schemas/scores.py): per slot, every candidate with its score, its
paired standard error and its operator, the teacher's own operator marked `reference`; joined with a
profiler LUT's cost table by operator spec (shared/search_input.py), it is a search request.

Noise: a score is a mean over held-out batches of (candidate's loss - teacher's loss) on the same
batch, so its standard error is that of a paired difference, and `rank_stability` says whether the
ranking of a slot's candidates holds between the two halves of the held-out batches.
"""

from pathlib import Path

import numpy as np
import torch
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.learning.data import heldout_batches, split_tokens
from services.trainer.learning.distributed import job_device, rank_and_world, summed
from services.trainer.learning.peak import PeakMemory
from services.trainer.learning.scores import batch_loss_sums
from services.trainer.learning.stats import spearman
from services.trainer.learning.students import load_candidates
from shared.model import Decoder
from shared.plan import owners
from shared.schemas.operators import is_teacher, operator_adapter, parse_slot_id
from shared.schemas.scores import ScoredCandidate, ScoredSlot, ScoreTable
from shared.schemas.trainer import ScoreSpec
from shared.settings import Settings

BATCH_LOSSES = "batch_losses"  # per held-out batch, the summed token loss of the teacher and of each pair


def check(spec: ScoreSpec, settings: Settings, session: Session) -> ScoreSpec:
    inputs.succeeded_job("body.distill_job", spec.distill_job, "distill", session)
    return spec.model_copy(update={"dataset": inputs.dataset("body.dataset", spec.dataset, settings)})


def run(ctx: JobContext) -> ScoreTable:
    spec = ScoreSpec.model_validate(ctx.spec)
    distill = ctx.job(spec.distill_job)
    teacher_dir = Path(distill.spec["teacher"])
    rank, world = rank_and_world()
    device = job_device(ctx.settings)
    peak = PeakMemory(device)
    teacher = Decoder.from_pretrained(teacher_dir).to(device).eval().requires_grad_(False)
    heldout = split_tokens(spec.dataset, teacher_dir, "heldout")
    batches = list(heldout_batches(heldout, spec.batch_size, spec.seq_len, spec.eval_batches))
    # per batch: the teacher's summed token loss, then every (slot, candidate)'s in a fixed order;
    # the teacher's own operators are not run (their score is 0)
    operators = distill.result["operators"]
    pairs = [
        (slot, cid)
        for slot, by_id in operators.items()
        for cid, payload in by_id.items()
        if not is_teacher(operator_adapter.validate_python(payload), teacher.shape, parse_slot_id(slot)[1])
    ]
    slot_index = {slot: i for i, (slot, _) in enumerate(teacher.slots())}
    owner = owners([len(slot_index) - slot_index[slot] for slot, _ in pairs], world)
    own = [j for j, r in enumerate(owner) if r == rank]  # this rank's pairs: the only ones it loads
    running = load_candidates(distill.directory, teacher, only={pairs[j] for j in own})
    # this rank's columns: the teacher's (rank 0's), then its pairs'; the others stay 0 until summed
    mine = torch.zeros(1 + len(pairs), dtype=torch.float64)
    mine[[1 + j for j in own] + ([0] if rank == 0 else [])] = 1
    shares = [owner.count(r) for r in range(world)]
    ctx.log(f"scoring {len(pairs)} (slot, candidate) pairs; per process: {', '.join(map(str, shares))}")
    sums = torch.zeros(len(batches), 1 + len(pairs), dtype=torch.float64)
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        sums, start = checkpoint.extra["sums"] * mine, checkpoint.step
    for step in range(start, len(batches)):
        ctx.step(step, len(batches))
        idx, targets = (t.to(device) for t in batches[step])
        teacher_sum, by_slot = batch_loss_sums(teacher, running, idx, targets)
        sums[step, 0] = teacher_sum
        for j in own:
            sums[step, 1 + j] = by_slot[pairs[j][0]][pairs[j][1]]
        sums[step] *= mine
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < len(batches):
            every = summed(sums, device)  # a collective: every rank takes part
            if rank == 0:
                ctx.save_checkpoint(step=step + 1, model={}, extra={"sums": every})
    sums = summed(sums, device)
    peaks = peak.per_process()  # a collective
    ctx.step(len(batches), len(batches))
    # the per-batch sums, for studies of the scores' noise (benchmarks/score_noise.py)
    columns = ["teacher"] + [f"{slot}/{cid}" for slot, cid in pairs]
    if rank == 0:
        meta = {"columns": columns, "tokens_per_batch": spec.batch_size * spec.seq_len}
        ctx.save_artifact(BATCH_LOSSES, {"sums": sums}, meta)
    tokens_per_batch = spec.batch_size * spec.seq_len
    table = table_from_sums(sums.numpy(), pairs, tokens_per_batch, teacher, operators)
    ctx.log(
        f"teacher held-out loss {table.teacher_loss:.4f} over {table.tokens} tokens on {world} process(es); "
        f"half-split rank stability {table.rank_stability}"
    )
    return table.model_copy(update={"peak_memory_bytes": peaks})


def table_from_sums(
    sums: np.ndarray, pairs: list[tuple[str, str]], tokens_per_batch: int, teacher, operators
) -> ScoreTable:
    """Scores, paired standard errors and the half-split rank stability from per-batch loss sums
    (rows: batches; columns: the teacher, then `pairs`)."""
    batches = len(sums)
    # per batch and pair: the mean loss change on that batch
    changes = (sums[:, 1:] - sums[:, :1]) / tokens_per_batch
    mean = changes.mean(axis=0)
    stderr = changes.std(axis=0, ddof=1) / np.sqrt(batches) if batches > 1 else np.zeros(len(pairs))
    halves = (
        [changes[: batches // 2].mean(axis=0), changes[batches // 2 :].mean(axis=0)] if batches >= 2 else []
    )
    column = {pair: i for i, pair in enumerate(pairs)}
    slots, stabilities = [], []
    for slot, by_id in operators.items():
        _, slot_type = parse_slot_id(slot)
        scored, run = [], [column[(slot, cid)] for cid in by_id if (slot, cid) in column]
        for cid in by_id:
            operator = operator_adapter.validate_python(operators[slot][cid])
            reference = is_teacher(operator, teacher.shape, slot_type)
            i = column.get((slot, cid))
            scored.append(
                ScoredCandidate(
                    id=cid,
                    operator=operator,
                    score=0.0 if i is None else float(mean[i]),
                    stderr=0.0 if i is None else float(stderr[i]),
                    reference=reference,
                )
            )
        if halves and len(run) >= 2:
            rho = spearman(halves[0][run], halves[1][run])
            if rho is not None:
                stabilities.append(rho)
        slots.append(ScoredSlot(id=slot, candidates=scored))
    return ScoreTable(
        teacher_loss=float(sums[:, 0].sum() / (tokens_per_batch * batches)),
        tokens=tokens_per_batch * batches,
        batches=batches,
        rank_stability=float(np.mean(stabilities)) if stabilities else None,
        slots=slots,
    )


KIND = JobKind(name="score", spec=ScoreSpec, result=ScoreTable, run=run, check=check, distributed=True)
