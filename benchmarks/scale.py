"""Past the demo's size (issue 19): a random-initialised teacher of a 135M-class Llama shape (30 blocks,
hidden 576, 9 heads / 3 KV heads of 64, MLP 1536, vocabulary 49,152, tied embeddings) through
`unast compress` with a reduced configuration, once with every trainer job in one process and once in
two (UNAST_TRAINER_PROCS_PER_JOB=2), one torch thread per process, side by side: every stage's wall
time, and each trainer job's peak memory per process with the planner's prediction beside it, and the
machine's own limit (matmul loops alone vs two at once, at an MLP projection's shape and at the LM
head's). Then the planner's projection for 1B and 8B
Llama shapes on an 80 GB GPU.

    .venv/bin/python -m benchmarks.scale                    # about 75 minutes on 2 cores
    .venv/bin/python -m benchmarks.scale --project-only     # the projection alone, at once
    .venv/bin/python -m benchmarks.scale --score-only       # the score job alone, 1 vs 2 processes
    .venv/bin/python -m benchmarks.scale --distill-only 2   # the distill job alone, 1 vs 2, twice

--score-only times the score job by itself (the job runner, `unast-trainer run`, alone and under
torchrun) at 1 and at 2 processes on the same teacher, pool and batches, with nothing else running in
the stack beside it: a check on the score row of the full run, about 25 minutes on 2 quiet cores.
--distill-only does the same for the full run's distill job, at 1 and at 2 processes in turn, REPEATS
times, each pair followed by the machine's limit (read a speed-up against the limit of its own
minutes), and splits each run's wall time by its log: fixed start, steps, held-out evaluation; about
12 minutes a repeat.

The two runs keep separate databases and artifacts (bench folder under --out); the profiler's LUT is
built by each run (it does not depend on the trainer's processes). A finished run is read back, not
run again.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services.trainer.learning import data
from shared import plan
from shared.candidates import slot_pools
from shared.model import Decoder
from shared.schemas.operators import Architecture
from shared.schemas.shape import PRESETS, ModelShape
from shared.schemas.trainer import RESULTS
from shared.settings import Settings

SMOL = ModelShape(
    vocab_size=49_152,
    hidden_size=576,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    intermediate_size=1536,
    tie_word_embeddings=True,
)
REDUCED = {  # the reduced configuration, over quick's fields
    "pool": "small",
    "distill_steps": 40,
    "distill_batch": 4,
    "seq_len": 128,
    "score_batches": 4,
    "k": 3,
    "rank_steps": 5,
    "finetune_steps": 20,
    "eval_every": 20,
    "eval_batches": 4,
    "batch": 4,
    "baselines": False,
    "onnx": False,
    "nemotron_nas_row": False,
}
LLAMA_1B = ModelShape(  # Llama 3.2 1B
    vocab_size=128_256,
    hidden_size=2048,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
    intermediate_size=8192,
    tie_word_embeddings=True,
)
LLAMA_8B = PRESETS["llama3-8b"]  # Llama 3.1 8B
GPU_BYTES = 80 * 10**9  # an 80 GB GPU
GPU_FLOPS = (
    400e12  # its sustained float32-master mixed-precision matmul rate, a datasheet's 989 TFLOP/s x 0.4
)


def teacher(folder: Path) -> Path:
    """The random teacher, with a BPE tokenizer trained on the built-in corpus (its vocabulary is the
    corpus's, within the model's 49,152)."""
    directory = folder / "teacher"
    if (directory / "model.safetensors").exists():
        return directory
    Decoder(SMOL).save_pretrained(directory)
    plays = data.play_files()
    text = [data.play_text(path.read_text(encoding="utf-8")) for path in plays.values()]
    data.save_tokenizer(data.train_tokenizer(text, vocab_size=8192), directory)
    return directory


def compress(folder: Path, model: Path, processes: int) -> Path:
    """`unast compress` with the reduced config on `processes` processes per trainer job; its run folder."""
    run = folder / f"run-{processes}"
    if (run / "report.md").exists():
        return run
    (folder / "reduced.json").write_text(json.dumps(REDUCED))
    settings = {
        "UNAST_DATABASE_URL": f"sqlite:///{folder / f'unast-{processes}.db'}",
        "UNAST_ARTIFACTS_ROOT": str(folder / f"artifacts-{processes}"),
        "UNAST_INPUT_ROOTS": json.dumps([str(folder)]),
        "UNAST_TRAINER_PROCS_PER_JOB": str(processes),
        "UNAST_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    ports = {"UNAST_PROFILER_PORT": 8101, "UNAST_SEARCH_PORT": 8102, "UNAST_TRAINER_PORT": 8103}
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | settings
    env |= {k: str(v + 10 * processes) for k, v in ports.items()}
    command = [sys.executable, "-m", "services.cli", "compress", "--model", str(model), "--latency", "0.5"]
    command += ["--config", str(folder / "reduced.json"), "--out", str(run)]
    print(f"running on {processes} process(es) per job: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, env=env, check=True)
    return run


def alone_env(folder: Path, database: str) -> dict[str, str]:
    """The environment of a job run by the job runner alone: one torch thread per process."""
    return {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | {
        "UNAST_INPUT_ROOTS": json.dumps([str(folder)]),
        "UNAST_DATABASE_URL": f"sqlite:///{folder / database}",  # refers to no job by id
        "UNAST_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }


def job_alone(
    jobs: Path, name: str, spec: dict, processes: int, env: dict[str, str]
) -> tuple[float, dict, list[tuple[float, str]]]:
    """A job run by the job runner (`unast-trainer run`, under torchrun for several processes) with
    nothing else of the stack beside it: its wall seconds, its result, and its log's lines (rank 0's)
    with the second each came at."""
    shutil.rmtree(jobs / name, ignore_errors=True)
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{name}.json").write_text(json.dumps(spec))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "services.trainer.cli", "run"]
    command += ["--spec", str(jobs / f"{name}.json"), "--out", str(jobs / name)]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as job:
        lines = [(time.perf_counter() - start, line.rstrip()) for line in job.stdout]
    if job.returncode != 0:
        raise subprocess.CalledProcessError(job.returncode, command)
    return time.perf_counter() - start, json.loads((jobs / name / "result.json").read_text()), lines


def distill_spec(model: Path, steps: int) -> dict:
    """The distill job `unast compress` asks for with the reduced config (pipeline/stages.py distill)."""
    pool = slot_pools(SMOL, "small")
    return {
        "kind": "distill",
        "teacher": str(model),
        "candidates": {slot: [op.model_dump(mode="json") for op in ops] for slot, ops in pool.items()},
        "steps": steps,
        "batch_size": REDUCED["distill_batch"],
        "seq_len": REDUCED["seq_len"],
        "warmup": max(1, steps // 20),
        "eval_batches": 8,
        "checkpoint_every": max(10, steps // 10),
    }


def score_only(folder: Path, model: Path, batches: int) -> None:
    """The score job at 1 and at 2 processes side by side, on the candidates of a one-step distill job
    (a pair's cost does not depend on how well its candidate learned); the two tables must be equal."""
    env = alone_env(folder, "score-only.db")
    jobs = folder / "score-only"
    distill = distill_spec(model, steps=1) | {"eval_batches": 1}
    score = {"kind": "score", "distill_job": str(jobs / "distill"), "eval_batches": batches}
    score |= {"batch_size": REDUCED["distill_batch"], "seq_len": REDUCED["seq_len"]}
    walls, tables = {}, {}
    for name, spec, processes in (("distill", distill, 1), ("score-1", score, 1), ("score-2", score, 2)):
        walls[name], result, _ = job_alone(jobs, name, spec, processes, env)
        tables[name] = result.get("slots")
    one, two = walls["score-1"], walls["score-2"]
    same = "equal" if tables["score-1"] == tables["score-2"] else "DIFFERENT"
    print(f"\n| score job, {batches} x 4 x {score['seq_len']} tokens | 1 process | 2 processes | speed-up |")
    print("| --- | --- | --- | --- |")
    print(f"| wall s (tables {same}) | {one:.0f} | {two:.0f} | {one / two:.2f}x |")


def distill_only(folder: Path, model: Path, repeats: int) -> None:
    """The distill job of the full run alone at 1 and at 2 processes, `repeats` times in turn, each pair
    followed by the machine's limit (so that a speed-up is read against the limit of its own minutes),
    split by its log: the fixed start (processes, teacher, tokens, students), the steps (with their
    checkpoints), the held-out evaluation and outputs."""
    env = alone_env(folder, "distill-only.db")
    jobs = folder / "distill-only"
    spec = distill_spec(model, steps=REDUCED["distill_steps"])
    (shape, loops) = LIMIT_SHAPES["an MLP projection, 512 x 576 @ 576 x 1536"]
    rows, pairs = [], []
    for repeat in range(1, repeats + 1):
        walls, results = {}, {}
        for processes in (1, 2):
            wall, result, lines = job_alone(jobs, f"distill-{processes}", spec, processes, env)
            started = next(at for at, line in lines if line.startswith("distilling "))
            stepped = next(at for at, line in lines if line.startswith(f"step {spec['steps']}/"))
            gib = ", ".join(f"{n / 2**30:.2f}" for n in result["peak_memory_bytes"])
            rows.append((repeat, processes, started, stepped - started, wall - stepped, wall, gib))
            walls[processes], results[processes] = wall, result
        nmse = [results[p]["heldout_nmse"] for p in (1, 2)]
        gap = max(abs(by[cid] - nmse[1][slot][cid]) for slot, by in nmse[0].items() for cid in by)
        pairs.append((repeat, walls[1] / walls[2], machine_limit(shape, loops), gap))
    print(
        f"\n| distill job, {spec['steps']} steps of 4 x 128, small pool | processes | fixed start s | "
        "steps s | held-out NMSE and outputs s | wall s | peak GiB per process |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for repeat, processes, started, steps, rest, wall, gib in rows:
        times = " | ".join(f"{t:.0f}" for t in (started, steps, rest, wall))
        print(f"| repeat {repeat} | {processes} | {times} | {gib} |")
    print(
        "\n| repeat | speed-up, 1 -> 2 processes | machine limit after it (MLP matmul) | "
        "speed-up / limit | held-out NMSE, largest difference |"
    )
    print("| --- | --- | --- | --- | --- |")
    for repeat, speed, limit, gap in pairs:
        print(f"| {repeat} | {speed:.2f}x | {limit:.2f}x | {speed / limit:.2f} | {gap:.1e} |")


def stages(run: Path, processes: int) -> dict[str, dict]:
    """Per stage of run.json: its wall seconds and, for a trainer job, its result's peak memory."""
    record = json.loads((run / "run.json").read_text())
    settings = Settings(database_url=f"sqlite:///{run.parent / f'unast-{processes}.db'}")
    from services.trainer.local import store_lookup

    lookup = store_lookup(settings)
    out = {}
    for name, stage in record["stages"].items():
        row = {"wall_s": stage.get("wall_s")}
        try:
            job = lookup(stage["job_id"]) if stage.get("job_id") else None
        except LookupError:  # a profiler job's id
            job = None
        if job is not None:
            result = RESULTS[job.kind].model_validate(job.result)
            row |= {"kind": job.kind, "peak": getattr(result, "peak_memory_bytes", [])}
        out[name] = row
    return out


def predicted(kind: str, processes: int, architecture: Architecture) -> float | None:
    pool = slot_pools(SMOL, "small")
    figures = {"seq_len": REDUCED["seq_len"], "processes": processes}
    match kind:
        case "distill":
            stage = plan.distill(SMOL, pool, batch_size=4, steps=40, **figures)
        case "score":
            stage = plan.score(SMOL, pool, batch_size=4, batches=4, **figures)
        case "rank":
            stage = plan.finetune(
                SMOL,
                architecture,
                batch_size=4,
                steps=5,
                kd=False,
                kind="rank",
                architectures=REDUCED["k"],
                **figures,
            )
        case "finetune":
            stage = plan.finetune(SMOL, architecture, batch_size=4, steps=20, kd=False, **figures)
        case _:
            return None
    return stage.peak_bytes


def side_by_side(folder: Path) -> None:
    one, two = stages(folder / "run-1", 1), stages(folder / "run-2", 2)
    architecture = Architecture.teacher(SMOL)
    print(
        "\n| stage | 1 process: wall s | 2 processes: wall s | speed-up | peak per process, 1 | "
        "peak per process, 2 (largest) | 2 / 1 | planned 1 / 2 (teacher's architecture) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    for name, a in one.items():
        b = two.get(name, {})
        wall_a, wall_b = a.get("wall_s"), b.get("wall_s")
        speed = f"{wall_a / wall_b:.2f}x" if wall_a and wall_b else ""
        peak_a, peak_b = max(a.get("peak") or [0]), max(b.get("peak") or [0])
        ratio = f"{peak_b / peak_a:.2f}" if peak_a and peak_b else ""
        planned = ""
        if kind := a.get("kind"):
            p1, p2 = predicted(kind, 1, architecture), predicted(kind, 2, architecture)
            planned = f"{gib(p1)} / {gib(p2)}" if p1 else ""
        print(
            f"| {name} | {wall_a} | {wall_b} | {speed} | {gib(peak_a) if peak_a else ''} | "
            f"{gib(peak_b) if peak_b else ''} | {ratio} | {planned} |"
        )


MATMUL = """
import sys, time, torch
torch.set_num_threads(1)
start_at, repeats, m, k, n = float(sys.argv[1]), *map(int, sys.argv[2:])
a, b = torch.randn(m, k), torch.randn(k, n)
while time.time() < start_at:  # start together
    time.sleep(0.01)
start = time.perf_counter()
for _ in range(repeats):
    a @ b
print(time.perf_counter() - start)
"""
LIMIT_SHAPES = {  # a batch's 512 tokens through the teacher's matmuls, (m, k, n) and loop length
    "an MLP projection, 512 x 576 @ 576 x 1536": ((512, 576, 1536), 2000),
    "the LM head, 512 x 576 @ 576 x 49152": ((512, 576, SMOL.vocab_size), 60),
}


def machine_limit(shape: tuple[int, int, int], repeats: int) -> float:
    """The most 2 processes can gain here: the same one-thread matmul loop alone, then two at once
    (throughput ratio). Processes on one machine share its cores' clocks, caches and memory bandwidth:
    a matmul whose weight outgrows the caches (the LM head's, 113 MB) shows what that sharing costs."""

    def at_once(n: int) -> list[float]:
        start_at = str(time.time() + 5)  # after every process has imported torch
        command = [sys.executable, "-c", MATMUL, start_at, str(repeats), *map(str, shape)]
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(p.communicate()[0]) for p in procs]

    (alone,) = at_once(1)
    return 2 * alone / max(at_once(2))


def projection() -> None:
    """The planner on 1B and 8B Llama shapes, the quality configuration's figures, default pool."""
    print(
        f"\nprojection: an {GPU_BYTES / 1e9:.0f} GB GPU at {GPU_FLOPS / 1e12:.0f} TFLOP/s sustained "
        "(fp32 weights, gradients and AdamW state; activations fp32)"
    )
    print("\n| teacher | stage | ranks needed | peak per rank at that many | hours on that many GPUs |")
    print("| --- | --- | --- | --- | --- |")
    for name, shape in (("Llama 1B", LLAMA_1B), ("Llama 8B", LLAMA_8B)):
        pool = slot_pools(shape, "default")
        teacher_arch = Architecture.teacher(shape)
        stages_ = {
            "distill (400 steps, 8 x 128)": lambda n, s=shape, p=pool: plan.distill(
                s, p, batch_size=8, seq_len=128, steps=400, processes=n
            ),
            "score (64 batches of 8 x 128)": lambda n, s=shape, p=pool: plan.score(
                s, p, batch_size=8, seq_len=128, batches=64, processes=n
            ),
            "rank (20 x 50 steps)": lambda n, s=shape, a=teacher_arch: plan.finetune(
                s,
                a,
                batch_size=8,
                seq_len=128,
                steps=50,
                kd=False,
                processes=n,
                kind="rank",
                architectures=20,
            ),
            "finetune (500 kd steps)": lambda n, s=shape, a=teacher_arch: plan.finetune(
                s, a, batch_size=8, seq_len=128, steps=500, kd=True, processes=n
            ),
        }
        for stage, at in stages_.items():
            needed = plan.ranks_needed(at, GPU_BYTES * 0.8)
            if needed is None:
                print(f"| {name} | {stage} | none fits | {at(plan.MAX_RANKS).peak_bytes / 1e9:.0f} GB | |")
                continue
            planned = at(needed)
            print(
                f"| {name} | {stage} | {needed} | {planned.peak_bytes / 1e9:.1f} GB | "
                f"{planned.hours(GPU_FLOPS):.2f} |"
            )


def batches(text: str) -> int:
    if (value := int(text)) < 1:
        raise argparse.ArgumentTypeError("needs at least 1")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("var/scale"))
    parser.add_argument("--project-only", action="store_true")
    parser.add_argument("--score-only", type=batches, metavar="BATCHES", nargs="?", const=2)
    parser.add_argument("--distill-only", type=batches, metavar="REPEATS", nargs="?", const=1)
    args = parser.parse_args()
    if args.project_only:
        projection()
        return
    folder = args.out.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    model = teacher(folder)
    if args.score_only is not None:
        score_only(folder, model, args.score_only)
        return
    if args.distill_only is not None:
        distill_only(folder, model, args.distill_only)
        return
    for processes in (1, 2):
        compress(folder, model, processes)
    side_by_side(folder)
    print("\nthe machine's limit for 2 processes (one-thread matmul loops, alone vs two at once):")
    for name, (shape, repeats) in LIMIT_SHAPES.items():
        print(f"- {name}: {machine_limit(shape, repeats):.2f}x")
    projection()


if __name__ == "__main__":
    main()
