"""The trainer's job kinds, each in its own module (input checks, runner; the spec and result are
the contract in shared/schemas/trainer.py).

distill (Stage 1), score (the e_ij), evaluate, rank (Stage 3), finetune (Stage 4), export. A worker
claims only the kinds it is given, so jobs of a kind no worker knows wait in the queue.
"""

from services.jobs.kind import JobKind
from services.trainer.kinds import distill, evaluate, export, finetune, rank, score

KINDS: dict[str, JobKind] = {
    module.KIND.name: module.KIND for module in (distill, score, evaluate, rank, finetune, export)
}
