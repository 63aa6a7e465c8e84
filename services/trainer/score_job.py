"""The score job: held-out e_ij for a distill job's candidates, batch by batch, with checkpoints.

The result's `slots` is the scores half of a search request (slot -> candidates with id, score,
operator spec, and `reference: true` on the teacher's own operator): join it with a profiler LUT
export's costs by operator spec, and it is a complete request to the search service.
"""

import json
from pathlib import Path
from typing import Any

import torch

from services.trainer.context import JobContext
from services.trainer.data import heldout_batches, job_tokens
from services.trainer.distill_job import job_device, load_candidates
from services.trainer.scores import batch_loss_sums, scores_from_sums
from shared.model import Decoder
from shared.schemas.jobs import DistillSpec, ScoreSpec
from shared.schemas.operators import is_teacher, operator_adapter, parse_slot_id


def run_score(ctx: JobContext) -> dict[str, Any]:
    spec = ScoreSpec.model_validate(ctx.spec)
    distill = ctx.job(spec.distill_job)
    teacher_dir = Path(DistillSpec.model_validate(distill.spec).teacher)
    device = job_device(ctx.settings)
    teacher = Decoder.from_pretrained(teacher_dir).to(device).eval().requires_grad_(False)
    candidates = load_candidates(Path(distill.artifact_dir), teacher)
    _, heldout = job_tokens(spec.dataset, teacher_dir)
    batches = list(heldout_batches(heldout, spec.batch_size, spec.seq_len, spec.eval_batches))
    # running sums, checkpointed as tensors: [teacher, then every (slot, candidate) in a fixed order];
    # the teacher's own operators are not run (their score is 0)
    pairs = [
        (slot, cid)
        for slot, modules in candidates.items()
        for cid, module in modules.items()
        if module is not teacher.operator(slot)
    ]
    sums = torch.zeros(1 + len(pairs), dtype=torch.float64)
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        sums, start = checkpoint.extra["sums"], checkpoint.step
    for step in range(start, len(batches)):
        ctx.step(step, len(batches))
        idx, targets = (t.to(device) for t in batches[step])
        teacher_sum, by_slot = batch_loss_sums(teacher, candidates, idx, targets)
        sums += torch.tensor(
            [teacher_sum] + [by_slot.get(s, {}).get(c, 0.0) for s, c in pairs], dtype=torch.float64
        )
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < len(batches):
            ctx.save_checkpoint(step=step + 1, model={}, extra={"sums": sums})
    ctx.step(len(batches), len(batches))
    tokens = sum(targets.numel() for _, targets in batches)
    per_pair: dict[str, dict[str, float]] = {}
    for (slot, cid), total in zip(pairs, sums[1:].tolist(), strict=True):
        per_pair.setdefault(slot, {})[cid] = total
    teacher_loss, scores = scores_from_sums(candidates, sums[0].item(), per_pair, tokens)
    operators = _operators(Path(distill.artifact_dir))
    slots = [
        {
            "id": slot,
            "candidates": [
                {
                    "id": cid,
                    "score": score,
                    "operator": operators[slot][cid],
                    "reference": is_teacher(
                        operator_adapter.validate_python(operators[slot][cid]),
                        teacher.shape,
                        parse_slot_id(slot)[1],
                    ),
                }
                for cid, score in by_candidate.items()
            ],
        }
        for slot, by_candidate in scores.items()
    ]
    ctx.log(f"teacher held-out loss {teacher_loss:.4f} over {tokens} tokens")
    return {"teacher_loss": teacher_loss, "tokens": tokens, "scores": scores, "slots": slots}


def _operators(artifact_dir: Path) -> dict[str, dict[str, dict]]:
    return json.loads((artifact_dir / "candidates.json").read_text())["operators"]
