"""The trainer's contract: every job kind's spec and result, and the models a job can work on.

Pydantic only (no torch), so that clients (`unast compress`, a team's tooling) build specs and read
results with the same models the trainer validates and stores. Each kind's input checks and runner
live with it in services/trainer/kinds/<kind>.py. A spec is checked in two steps before any work
starts: its shape here (a 422 naming the field), then what needs the disk or the database (the
kind's `check`), then whether it fits the trainer's device (its `footprint`).
"""

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from shared.schemas.jobs import Dataset, JobRef, JobSpecBase, LearningRate, within_schedule
from shared.schemas.jobs import Path as PathField
from shared.schemas.operators import Architecture, OperatorSpec, fits, parse_slot_id
from shared.schemas.scores import ScoreTable

FinetuneLoss = Literal["lm", "kd", "mix"]


class Footprint(NamedTuple):
    """What a job holds in memory besides its model: the trainer refuses a job that cannot fit."""

    batch_size: int
    seq_len: int
    training: bool  # gradients, optimizer state and every layer's activations, or forward passes only


class _Spec(JobSpecBase):
    def footprint(self) -> Footprint:
        """Every kind declares it, so that none skips the memory check."""
        raise NotImplementedError(f"{type(self).__name__} declares no footprint")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- the models a job can work on -----------------------------------------------------------------


class DirectoryModel(_Frozen):
    """A model directory: a teacher, or an export (config.json, safetensors, tokenizer)."""

    source: Literal["directory"] = "directory"
    path: PathField


class StudentModel(_Frozen):
    """The student of one architecture, with its distill job's candidates: untrained beyond them."""

    source: Literal["student"] = "student"
    distill_job: JobRef
    architecture: Architecture = Field(description="A search solution, as the search returned it.")


class RankWinner(_Frozen):
    """The student of the architecture a rank job put first."""

    source: Literal["rank"] = "rank"
    rank_job: JobRef


class FinetunedModel(_Frozen):
    """What a finetune job trained."""

    source: Literal["finetune"] = "finetune"
    finetune_job: JobRef


class ScratchModel(_Frozen):
    """An architecture of the teacher's shape with every weight drawn at random (from the job's seed):
    what training the smaller model from scratch starts from (the report's from-scratch baseline)."""

    source: Literal["scratch"] = "scratch"
    teacher: PathField = Field(description="The teacher's directory: its shape and tokenizer, no weight.")
    architecture: Architecture = Field(description="A search solution, as the search returned it.")


ModelRef = Annotated[
    DirectoryModel | StudentModel | RankWinner | FinetunedModel | ScratchModel, Field(discriminator="source")
]


# -- distill (the paper's Stage 1) ------------------------------------------------------------------


class DistillSpec(_Spec):
    """Layer-wise distillation (the paper's Stage 1): every candidate learns its slot's teacher sublayer."""

    kind: Literal["distill"] = "distill"
    teacher: PathField = Field(
        description="Hugging Face Llama directory: config.json, *.safetensors, tokenizer."
    )
    dataset: Dataset = "shakespeare"
    candidates: dict[str, list[OperatorSpec]] | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Slot id (block<N>.attn, block<N>.mlp) -> the candidate operators to learn for it. "
        "Omitted: every slot of the teacher gets the default pool of `format` (shared/candidates.py).",
    )
    format: Literal["unast", "nemotron-nas"] = Field(  # shared.decilm.Format
        "unast",
        description="unast: any operator; nemotron-nas: only what the DeciLM / Nemotron-NAS block_configs "
        "form expresses (shared/decilm.py), so that the model opens in the engines that read that form: "
        "the default pool is the servable one, and a given candidate the form cannot express is refused "
        "(the teacher's own operator, each slot's reference, always allowed). A Llama teacher only.",
    )
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=2, le=131_072)
    learning_rate: LearningRate = 1e-3
    min_learning_rate: float = Field(1e-4, ge=0, le=10, allow_inf_nan=False)
    warmup: int = Field(0, ge=0, le=10_000_000)
    loss: Literal["nmse", "mse", "l1", "cosine"] = "nmse"
    eval_batches: int = Field(8, ge=1, le=100_000, description="Held-out batches for the final NMSE.")

    @field_validator("candidates")
    @classmethod
    def _slots_and_fit(
        cls, candidates: dict[str, list[OperatorSpec]] | None
    ) -> dict[str, list[OperatorSpec]] | None:
        for slot, specs in (candidates or {}).items():
            _, slot_type = parse_slot_id(slot)  # ValueError -> 422 naming the field
            if not 1 <= len(specs) <= 256:
                raise ValueError(f"{slot}: give between 1 and 256 candidates")
            for spec in specs:
                if not fits(spec, slot_type):
                    raise ValueError(f"{slot}: a {spec.kind} operator cannot fill a {slot_type} slot")
        return candidates

    _within_schedule = field_validator("min_learning_rate", "warmup")(within_schedule)

    def footprint(self) -> Footprint:
        return Footprint(self.batch_size, self.seq_len, training=True)


class DistillResult(BaseModel):
    teacher: str = Field(description="The teacher's directory.")
    heldout_nmse: dict[str, dict[str, float]] = Field(
        description="Slot -> candidate id -> held-out normalised MSE (identity 1, the teacher's own 0)."
    )
    operators: dict[str, dict[str, OperatorSpec]] = Field(description="Slot -> candidate id -> operator.")
    world_size: int = Field(description="Processes that trained (torchrun ranks).")
    peak_memory_bytes: list[int] = Field(
        default_factory=list, description="Each process's peak memory (services/trainer/learning/peak.py)."
    )
    parameters_per_process: list[int] = Field(
        default_factory=list,
        description="Trained parameters each process held (the slots are shared out among them).",
    )
    train_tokens: int | None = Field(
        None, description="The dataset's training tokens in the teacher's tokenizer, as the job read them."
    )
    heldout_tokens: int | None = Field(None, description="The dataset's held-out tokens, likewise.")


# -- score (the e_ij); its result is shared/schemas/scores.py's ScoreTable -------------------------


class ScoreSpec(_Spec):
    """Candidate scores (the paper's e_ij): held-out loss with one slot replaced, minus the teacher's."""

    kind: Literal["score"] = "score"
    distill_job: JobRef = Field(description="A succeeded distill job: its teacher and candidates.")
    dataset: Dataset = "shakespeare"
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=2, le=131_072)
    eval_batches: int = Field(
        32,
        ge=1,
        le=100_000,
        description="Held-out batches the scores average over (32 x 8 x 128 tokens: where the candidates' "
        "ranking held best between halves of the held-out text on the demo teacher; README).",
    )

    def footprint(self) -> Footprint:
        return Footprint(self.batch_size, self.seq_len, training=False)


# -- evaluate -------------------------------------------------------------------------------------


class EvaluateSpec(_Spec):
    kind: Literal["evaluate"] = "evaluate"
    model: ModelRef
    dataset: Dataset = "shakespeare"
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=2, le=131_072)
    eval_batches: int = Field(64, ge=1, le=100_000, description="Held-out batches to average over.")

    def footprint(self) -> Footprint:
        return Footprint(self.batch_size, self.seq_len, training=False)


class EvaluateResult(BaseModel):
    loss: float = Field(description="Mean next-token cross-entropy on the held-out set (nats per token).")
    perplexity: float
    tokens: int = Field(description="Held-out tokens the loss averages over.")
    params: int = Field(description="The model's parameters (tied ones once).")
    architecture: Architecture


# -- rank (the paper's Stage 3) and finetune (Stage 4) ----------------------------------------------


class TrainingSchedule(_Spec):
    """The finetune's hyper-parameters (the paper's Table 7: Adam, cosine decay from 5e-4 to 5e-5)."""

    dataset: Dataset = "shakespeare"
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096, description="The global batch (split across torchrun ranks).")
    seq_len: int = Field(128, ge=2, le=131_072)
    learning_rate: LearningRate = 5e-4
    min_learning_rate: float = Field(5e-5, ge=0, le=10, allow_inf_nan=False)
    warmup: int = Field(0, ge=0, le=10_000_000)
    weight_decay: float = Field(
        0.0, ge=0, le=10, allow_inf_nan=False, description="AdamW's (none: a finetune from trained weights)."
    )
    loss: FinetuneLoss = Field(
        "lm",
        description="lm: next-token cross-entropy (the paper's short finetune); kd: KL to the teacher's "
        "logits; mix: both.",
    )
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False, description="Of the kd loss.")
    kd_weight: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="Of kd in the mix loss.")
    eval_batches: int = Field(16, ge=1, le=100_000, description="Held-out batches of each evaluation.")

    _within_schedule = field_validator("min_learning_rate", "warmup")(within_schedule)

    def footprint(self) -> Footprint:
        return Footprint(self.batch_size, self.seq_len, training=True)


class RankSpec(TrainingSchedule):
    kind: Literal["rank"] = "rank"
    distill_job: JobRef = Field(description="The succeeded distill job whose candidates build the students.")
    architectures: list[Architecture] = Field(
        min_length=1,
        max_length=1000,
        description="The search's solutions in its order, as it returned them (their `choices` are used).",
    )
    steps: int = Field(50, ge=1, le=10_000_000, description="Short-finetune steps per architecture.")


class RankedArchitecture(BaseModel):
    search_rank: int = Field(description="1-based position in the search's order.")
    architecture: Architecture
    loss_before: float = Field(description="Held-out loss of the student before the short finetune.")
    loss_after: float = Field(description="Held-out loss after it.")
    perplexity_after: float


class RankResult(BaseModel):
    ranking: list[RankedArchitecture] = Field(
        description="Best first: by held-out loss after the short finetune."
    )
    winner: Architecture
    winner_search_rank: int = Field(description="Where the winner stood in the search's order.")
    search_top_rank: int = Field(description="Where the search's first architecture stands now (1 = best).")
    spearman: float | None = Field(
        description="Spearman's correlation between the search's order and the order after the finetune."
    )
    spearman_before: float | None = Field(
        description="Spearman's correlation between the search's order and the loss before the finetune."
    )
    steps: int
    heldout_tokens: int
    world_size: int
    peak_memory_bytes: list[int] = Field(
        default_factory=list, description="Each process's peak memory (services/trainer/learning/peak.py)."
    )


class FinetuneSpec(TrainingSchedule):
    kind: Literal["finetune"] = "finetune"
    model: StudentModel | RankWinner | ScratchModel = Field(
        discriminator="source",
        description="A student (a distill job and a search solution), a rank job, meaning its winner, or an "
        "architecture from random weights (scratch: training the smaller model from scratch).",
    )
    steps: int = Field(500, ge=1, le=10_000_000)
    loss: FinetuneLoss = Field(
        "kd",
        description="lm: next-token cross-entropy; kd: KL to the teacher's logits; mix: both. kd is the "
        "default: the lowest held-out perplexity at equal steps on the demo teacher (README).",
    )
    eval_every: int = Field(100, ge=1, le=10_000_000, description="Steps between held-out evaluations.")


class CurvePoint(BaseModel):
    step: int
    loss: float = Field(description="Held-out loss at this step.")
    perplexity: float


class FinetuneResult(BaseModel):
    architecture: Architecture
    teacher: str = Field(description="The teacher the student was made from.")
    lineage: dict[str, str] = Field(description="The jobs that made the model it started from.")
    curve: list[CurvePoint] = Field(
        description="Held-out loss every eval_every steps, first and last included."
    )
    loss: float = Field(description="Held-out loss at the end.")
    perplexity: float
    heldout_tokens: int
    tokens_trained: int
    params: int
    model_dir: str = Field(description="The finetuned model: config.json, model.safetensors, tokenizer.")
    train_seconds: float = Field(
        description="Wall time of this attempt's training steps (held-out evaluations left out)."
    )
    world_size: int
    peak_memory_bytes: list[int] = Field(
        default_factory=list, description="Each process's peak memory (services/trainer/learning/peak.py)."
    )


# -- export ---------------------------------------------------------------------------------------

EXPORT_PROBE = Footprint(batch_size=2, seq_len=32, training=False)  # the logits it checks the files by


class ExportTarget(_Frozen):
    """What the architecture was searched for: recorded in provenance.json as the client gives it."""

    device: str | None = Field(None, max_length=200, description="The device's name.")
    device_id: int | None = None
    lut_id: int | None = None
    predicted: dict[str, float] = Field(
        default_factory=dict, description="The LUT's prediction, e.g. latency_ms, memory_bytes, params."
    )


class ExportSpec(_Spec):
    kind: Literal["export"] = "export"
    model: ModelRef = Field(description="A finetune job's model, a rank job's winner, or a student.")
    onnx: bool = Field(True, description="Also write model.onnx and check it in onnxruntime.")
    format: Literal["unast", "nemotron-nas"] = Field(  # shared.decilm.Format
        "unast",
        description="nemotron-nas: the job fails unless the architecture fits the DeciLM / Nemotron-NAS "
        "block_configs form (nemotron-nas/ is written whenever it fits).",
    )
    target: ExportTarget = Field(default_factory=ExportTarget)

    def footprint(self) -> Footprint:
        return EXPORT_PROBE


class ExportResult(BaseModel):
    directory: str = Field(description="The export, on the trainer's machine.")
    files: list[str] = Field(description="Its files, relative to the job's folder (GET .../files/<path>).")
    architecture: Architecture
    params: int
    reload_identical: bool = Field(description="Our loader gives bit-identical logits from the directory.")
    onnx_max_abs_diff: float | None = Field(description="Largest |logit difference| onnxruntime vs torch.")
    onnx_generate_equal: bool | None = Field(
        None, description="onnxruntime's greedy tokens (with the graph's KV cache) equal Decoder.generate's."
    )
    decilm: bool = Field(
        description="nemotron-nas/ was written: every block fits the block_configs convention."
    )
    decilm_reasons: list[str] = Field(description="Why blocks do not fit that convention, when they do not.")


# -- every kind ---------------------------------------------------------------------------------------

# -- plans (shared/plan.py): what a job would take, before it is queued --------------------------


class JobPlan(BaseModel):
    kind: str
    processes: int = Field(
        description="Processes a worker runs it as (UNAST_TRAINER_PROCS_PER_JOB for distill, score, rank "
        "and finetune; 1 for the others)."
    )
    peak_bytes: int = Field(description="Expected peak memory per process (float32 throughout).")
    memory: dict[str, int] = Field(description="The peak's parts, bytes per process.")
    flops: float = Field(description="Floating-point operations per process (2 per multiply-add).")
    device: str = Field(description="The trainer's device (UNAST_TRAINER_DEVICE).")
    device_memory_bytes: int | None = Field(description="Its memory; null when it cannot be told.")
    fits: bool | None = Field(description="Whether the peak is within MEMORY_SHARE of the device's memory.")
    processes_needed: int | None = Field(
        description="The fewest processes (1, 2, 4, ...) on which it fits; null when none does, when the "
        "kind does not share its work out, or when the device's memory is unknown."
    )
    device_flops: float | None = Field(
        None, description="The device's measured float32 matmul rate, FLOP/s (null: not measured)."
    )
    seconds: float | None = Field(
        None, description="Expected time: flops / (device_flops x shared.plan.UTILISATION)."
    )


JobSpec = Annotated[
    DistillSpec | ScoreSpec | EvaluateSpec | RankSpec | FinetuneSpec | ExportSpec,
    Field(discriminator="kind"),
]
job_spec_adapter: TypeAdapter[Any] = TypeAdapter(JobSpec)

RESULTS: dict[str, type[BaseModel]] = {
    "distill": DistillResult,
    "score": ScoreTable,
    "evaluate": EvaluateResult,
    "rank": RankResult,
    "finetune": FinetuneResult,
    "export": ExportResult,
}
