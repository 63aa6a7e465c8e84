"""What a trainer job will take, before it runs: peak memory per process and time, from the teacher's
shape, the candidates or architecture, the spec's figures and the number of processes.

Memory, in float32 bytes F = 4 per value, T = batch_size x seq_len tokens, h = hidden size:
- distill (per rank, each a contiguous run of the teacher's slots balanced by FLOPs, as the job
  does): the teacher's weights in its run (and the embedding on the rank whose run starts the pass);
  4 copies of the rank's trained candidates (weights, gradients, AdamW's two moments); every own
  slot's captured input and output (2 T h each); the largest of one candidate's backward graph and
  one teacher operator's forward intermediates (activations_per_token x T).
- score (per rank, the (slot, candidate) pairs shared out as the job does): the teacher and the rank's
  own candidates (weights only); the residual stream entering every slot (T h each, kept for the
  batch); one operator's intermediates; the logits (LOGIT_COPIES x T V).
- finetune and rank: shared/costs.py's job_memory_bytes for the student (rank: one architecture at a
  time, each rank its own), with the teacher beside it for a kd loss.
- every job: RUNTIME_BYTES (data, workspaces, the allocator's slack).

Time: FLOPs / (the device's matmul FLOP/s x UTILISATION); the trainer measures its device's rate,
a projection takes a datasheet's. FLOPs count 2 per multiply-add, a backward pass as twice its
forward (shared/costs.py's operator_flops per call):
- distill: steps x the busiest rank's (teacher forward through its run + 3 x its trained candidates'
  forward) -- the pipeline's start (one micro-batch's wait per step at most) not counted;
- score: eval_batches x (a teacher forward + every pair's forward from its slot to the head / ranks);
- finetune: steps x 3 x the student's forward (+ the teacher's forward for kd), over the ranks;
- rank: architectures x steps x 3 x a student's forward / ranks.
"""

from dataclasses import dataclass, field

from shared.costs import (
    FLOAT_BYTES,
    LOGIT_COPIES,
    activations_per_token,
    job_memory_bytes,
    operator_flops,
    operator_parameters,
    parameters,
)
from shared.schemas.operators import Architecture, OperatorSpec, is_teacher, parse_slot_id
from shared.schemas.shape import ModelShape

MAX_RANKS = 4096  # the most processes ranks_needed looks at
# Beside the model, a job's process holds its tokenised data, library workspaces and the allocator's
# retained heap: 90-120 MiB measured on CPU for teachers of 7M-50M parameters (tests/services/trainer/
# test_plan.py). On CUDA most of it stays on the host, so there it overstates the GPU's peak a little.
RUNTIME_BYTES = 128 * 2**20
UTILISATION = 0.5  # of a device's plain matmul rate a training job sustains (smaller, varied shapes)


@dataclass(frozen=True)
class StagePlan:
    kind: str
    processes: int
    memory: dict[str, int]  # the peak's parts per process, bytes (the largest rank's)
    flops: float  # per process
    detail: dict[str, int | float] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        return sum(self.memory.values())

    def hours(self, device_flops: float) -> float:
        return self.flops / device_flops / 3600


def owners(costs: list[float], world: int) -> list[int]:
    """The rank that takes each of independent pieces of work of these costs: the largest first, each
    to the rank with the least so far (longest-processing-time first: within 4/3 of the best split).
    The same on every rank: ties go to the lower rank, equal costs keep their order."""
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        rank = min(range(world), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += costs[i]
    return owner


def runs(costs: list[float], world: int) -> list[int]:
    """The rank that takes each of pieces of work that must stay in order (the teacher's slots, which
    its pass goes through one after another): each rank a contiguous run, every rank one where there
    are enough pieces, the most costly run as cheap as it can be (bisection on its cost, each run
    filled greedily). The same on every rank."""

    def packed(limit: float) -> list[int] | None:
        owner: list[int] = []
        rank, load = 0, 0.0
        for i, cost in enumerate(costs):
            every_rank_needs_one = len(costs) - i == world - 1 - rank
            if owner and (load + cost > limit or every_rank_needs_one):
                rank, load = rank + 1, 0.0
                if rank == world:
                    return None
            owner.append(rank)
            load += cost
        return owner

    low, high = max(costs, default=0.0), sum(costs)
    best = packed(high)
    for _ in range(60):
        middle = (low + high) / 2
        if (owner := packed(middle)) is None:
            low = middle
        else:
            high, best = middle, owner
    return best or []


def trained(slot: str, spec: OperatorSpec, shape: ModelShape) -> bool:
    """Whether a distill job trains this candidate (the teacher's own operator and identity it does not)."""
    _, slot_type = parse_slot_id(slot)
    return spec.kind != "identity" and not is_teacher(spec, shape, slot_type)


class TooManyProcesses(ValueError):
    """More processes than a distill job has slots: a rank would have nothing to run or train."""


def slot_runs(
    candidates: dict[str, list[OperatorSpec]], shape: ModelShape, tokens: int, seq_len: int, world: int
) -> list[range]:
    """Each rank's run of the teacher's slot indices in a distill job: the teacher's pass through the
    slot and 3 x its trained candidates' forward FLOPs on a step's tokens, balanced over contiguous
    runs (a rank runs its run of the teacher, then trains its slots' candidates)."""
    teacher = Architecture.teacher(shape)
    costs = [
        operator_flops(op, shape, rows=tokens, attended=seq_len)
        + 3
        * sum(
            operator_flops(c, shape, rows=tokens, attended=seq_len)
            for c in candidates.get(slot, [])
            if trained(slot, c, shape)
        )
        for slot, _, op in teacher.slots()
    ]
    owner = runs(costs, world)
    if len(set(owner)) < world:
        raise TooManyProcesses(f"{world} processes for {len(owner)} slots: use at most {len(owner)}")
    return [range(owner.index(r), owner.index(r) + owner.count(r)) for r in range(world)]


def _teacher_forward(shape: ModelShape, tokens: int, seq_len: int, head: bool) -> float:
    teacher = Architecture.teacher(shape)
    body = sum(operator_flops(op, shape, rows=tokens, attended=seq_len) for _, _, op in teacher.slots())
    return body + (operator_flops(None, shape, rows=tokens, attended=seq_len) if head else 0.0)


def distill(
    shape: ModelShape,
    candidates: dict[str, list[OperatorSpec]],
    *,
    batch_size: int,
    seq_len: int,
    steps: int,
    processes: int,
) -> StagePlan:
    tokens = batch_size * seq_len
    teacher = list(Architecture.teacher(shape).slots())
    h = shape.hidden_size
    plans = []
    for rank, run in enumerate(slot_runs(candidates, shape, tokens, seq_len, processes)):
        mine = [slot for slot, _, _ in teacher[run.start : run.stop] if slot in candidates]
        learned = [op for s in mine for op in candidates[s] if trained(s, op, shape)]
        ops = [op for _, _, op in teacher[run.start : run.stop]]
        held = sum(operator_parameters(op, shape) for op in ops) + (shape.vocab_size * h if rank == 0 else 0)
        graph = max((activations_per_token(op, shape) for op in learned + ops), default=0)
        params = sum(operator_parameters(op, shape) for op in learned)
        memory = {
            "teacher's run": held * FLOAT_BYTES,
            "candidates and AdamW": 4 * params * FLOAT_BYTES,
            "captured activations": 2 * tokens * h * len(mine) * FLOAT_BYTES,
            "one operator's graph": tokens * graph * FLOAT_BYTES,
            "runtime": RUNTIME_BYTES,
        }
        flops = sum(operator_flops(op, shape, rows=tokens, attended=seq_len) for op in ops)
        flops += 3 * sum(operator_flops(op, shape, rows=tokens, attended=seq_len) for op in learned)
        plans.append((sum(memory.values()), memory, params, len(mine), flops))
    _, memory, params, own_slots, _ = max(plans, key=lambda p: p[0])  # the rank that needs the most
    per_step = max(p[4] for p in plans)
    detail = {"trained parameters": params, "slots": own_slots}
    return StagePlan("distill", processes, memory, steps * per_step, detail)


def score(
    shape: ModelShape,
    candidates: dict[str, list[OperatorSpec]],
    *,
    batch_size: int,
    seq_len: int,
    batches: int,
    processes: int,
) -> StagePlan:
    tokens = batch_size * seq_len
    teacher = Architecture.teacher(shape)
    ops = [op for _, _, op in teacher.slots()]
    slots = [slot for slot, _, _ in teacher.slots()]
    suffix = [  # the teacher's FLOPs from each slot on, head included
        sum(operator_flops(op, shape, rows=tokens, attended=seq_len) for op in ops[i + 1 :])
        + operator_flops(None, shape, rows=tokens, attended=seq_len)
        for i in range(len(ops))
    ]
    index = {slot: i for i, slot in enumerate(slots)}
    pairs = [  # the teacher's own operators are not run
        (slot, op)
        for slot, specs in candidates.items()
        for op in specs
        if not is_teacher(op, shape, parse_slot_id(slot)[1])
    ]
    cost = [operator_flops(op, shape, rows=tokens, attended=seq_len) + suffix[index[s]] for s, op in pairs]
    owner = owners([float(len(slots) - index[slot]) for slot, _ in pairs], processes)  # as the job does
    share = max(sum(c for c, r in zip(cost, owner, strict=True) if r == rank) for rank in range(processes))
    held = max(  # the candidates a rank loads: its own pairs'
        sum(operator_parameters(op, shape) for (slot, op), r in zip(pairs, owner, strict=True) if r == rank)
        for rank in range(processes)
    )
    run = ops + [op for specs in candidates.values() for op in specs]  # the teacher's, the candidates'
    intermediates = max(activations_per_token(op, shape) for op in run)
    memory = {
        "teacher": parameters(teacher, shape) * FLOAT_BYTES,
        "candidates": held * FLOAT_BYTES,
        "residual streams": tokens * shape.hidden_size * len(slots) * FLOAT_BYTES,
        "one operator's intermediates": tokens * intermediates * FLOAT_BYTES,
        "logits": tokens * shape.vocab_size * LOGIT_COPIES * FLOAT_BYTES,
        "runtime": RUNTIME_BYTES,
    }
    per_batch = _teacher_forward(shape, tokens, seq_len, head=True) + share
    return StagePlan("score", processes, memory, batches * per_batch, {"pairs": len(pairs)})


def finetune(
    shape: ModelShape,
    architecture: Architecture,
    *,
    batch_size: int,
    seq_len: int,
    steps: int,
    kd: bool,
    processes: int,
    kind: str = "finetune",
    architectures: int = 1,
) -> StagePlan:
    """A finetune (data-parallel: each rank its rows of the batch), or a rank job's short finetunes
    (`architectures` of them, shared out whole among the ranks)."""
    rows = batch_size // processes if kind == "finetune" else batch_size
    memory = job_memory_bytes(architecture, shape, batch_size=rows, seq_len=seq_len, training=True)
    if not kd:
        memory["weights"] -= parameters(Architecture.teacher(shape), shape) * FLOAT_BYTES
    memory["runtime"] = RUNTIME_BYTES
    tokens = rows * seq_len
    student = sum(
        operator_flops(op, shape, rows=tokens, attended=seq_len) for _, _, op in architecture.slots()
    )
    student += operator_flops(None, shape, rows=tokens, attended=seq_len)
    per_step = 3 * student + (_teacher_forward(shape, tokens, seq_len, head=True) if kd else 0.0)
    rounds = -(-architectures // processes) if kind == "rank" else 1
    return StagePlan(kind, processes, memory, steps * per_step * rounds)


def ranks_needed(plan, available_bytes: float) -> int | None:
    """The fewest processes (1, 2, 4, ...) whose per-process peak fits, by `plan(processes)`; None when
    none does up to MAX_RANKS, or up to the most a distill job can be shared over (a slot a process)."""
    processes = 1
    while processes <= MAX_RANKS:
        try:
            if plan(processes).peak_bytes <= available_bytes:
                return processes
        except TooManyProcesses:
            return None
        processes *= 2
    return None
