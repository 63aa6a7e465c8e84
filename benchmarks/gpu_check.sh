#!/usr/bin/env bash
# benchmarks/gpu_check.sh: one run that checks UNAST's CUDA paths on a machine with one or more GPUs
# and prints a markdown table of what it did: step | what | wall s | peak GPU MiB | result.
#
#   bash benchmarks/gpu_check.sh                              # on the GPU machine (from any folder)
#   UNAST_GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # dry run: the same steps on CPU (gloo)
#
# The steps, in order (each one's output in its log under the temporary folder):
#   0. torch sees the GPUs; their count decides the ranks of steps 2 and 3;
#   1. the profiler builds a LUT on the GPU: `unast-profiler build` of the demo teacher
#      (models/shakespeare-teacher, prefill of 128 tokens, float32, quick's 15 s time cap) with
#      UNAST_PROFILER_DEVICE=cuda; checked: CUDA-event clock, activations measured by the allocator;
#   2. a distill job (`unast-trainer run` under torchrun --standalone) of 2 ranks over NCCL
#      (UNAST_TRAINER_DEVICE=cuda, a GPU per rank): 4 candidates per slot, 40 steps of 8 x 128 tokens,
#      a sharded checkpoint at step 20; checked: the result's world size, the device in its log (which
#      also gives each rank's peak memory: on cuda the allocator's, torch.cuda.max_memory_allocated);
#   3. a rank job on step 2's folder: 4 architectures x 20 steps, 2 ranks over NCCL; likewise checked;
#   4. `unast compress --device cuda --config quick --latency 0.5` with UNAST_TRAINER_DEVICE=cuda: the
#      embedded stack (three services and their workers) on free ports, on a database of its own (so
#      it builds its LUT through the profiler's worker rather than reusing step 1's); checked: exit 0
#      (compress itself refuses a profiler that measures another kind of device), report.md and
#      model/ written, and the trainer's job logs naming cuda as the device they trained on.
#
# One GPU visible: two ranks cannot each have a GPU, and NCCL refuses ranks that share one (each rank
# takes cuda:LOCAL_RANK, so rank 1 would ask for a cuda:1 that is not there). Steps 2 and 3 then run
# as one rank under torchrun: the CUDA training path and the launcher are checked, NCCL is not, and
# their rows say so. Two ranks over gloo on one GPU would check nothing a deployment runs: the
# trainer always takes NCCL when its device is cuda. With no GPU visible step 0 fails and the others
# are skipped.
#
# Time: expected to be a few minutes on a GPU machine (not yet measured on one). Each step has a time
# limit, all within a budget of 570 s for the whole run: a step past its limit is stopped (its process
# tree: SIGTERM, then SIGKILL) and failed, a step with no budget left is skipped, so the check ends
# within 10 minutes. The CPU dry run has 4x the limits; it took 10 minutes on 2 shared cores (the
# quick compress 8.5 of them).
#
# The table is printed whatever fails, and Ctrl-C / SIGTERM print it too; every process a step
# started is stopped on exit. The exit status is 0 only when every row passed. Nothing is downloaded.
# Everything goes to one `mktemp -d` folder (database, artifacts, logs), removed when every step
# passed and kept (its path printed) otherwise. Runs from the repository root with .venv/bin/python
# when there is one, else `python`. The caller's UNAST_* variables are cleared (the settings refuse
# one they do not know, UNAST_GPU_CHECK_DEVICE included, and a configured stack URL or database
# must not leak into the check); one torch thread per process (OMP_NUM_THREADS, UNAST_TORCH_THREADS).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MODE=${UNAST_GPU_CHECK_DEVICE:-cuda}
case $MODE in
    cuda | cpu) ;;
    *)
        echo "gpu_check: UNAST_GPU_CHECK_DEVICE is cuda (the default) or cpu, not '$MODE'" >&2
        exit 2
        ;;
esac
while read -r name; do unset "$name"; done < <(compgen -e | grep '^UNAST_' || true)

if [[ -x $ROOT/.venv/bin/python ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=$(command -v python || command -v python3 || true)
fi
if [[ -z $PY ]]; then
    echo "gpu_check: no .venv/bin/python and no python on PATH" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/unast-gpu-check.XXXXXX")
mkdir -p "$WORK/logs"
NOTE=$WORK/note # a step writes the result's remark here (it runs in a subshell of its own)
TEACHER=$ROOT/models/shakespeare-teacher

export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 UNAST_TORCH_THREADS=1
export UNAST_DATABASE_URL=sqlite:///$WORK/unast.db UNAST_ARTIFACTS_ROOT=$WORK/artifacts
export UNAST_PROFILER_DEVICE=$MODE UNAST_TRAINER_DEVICE=$MODE

if [[ $MODE == cuda ]]; then SCALE=1; else SCALE=4; fi
BUDGET_S=$((570 * SCALE))

# -- process control ---------------------------------------------------------------------------------

CHILD=""       # the running step's process (a subshell running the step's function)
SAMPLER=""     # nvidia-smi sampling the GPUs' memory during a step
INTERRUPTED="" # INT, TERM or HUP once the run was told to stop
PASSED=""      # the last step passed

now() { date +%s.%N; }

tree_of() { # the process tree under pid $1 ($1 first), from one snapshot of the process table
    ps -e -o pid= -o ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            queue = root
            while (queue != "") {
                n = split(queue, q, " "); queue = ""
                for (i = 1; i <= n; i++) { out = out " " q[i]; queue = queue kids[q[i]] }
            }
            print out
        }'
}

stop_tree() { # SIGTERM to the whole tree (torchrun's workers sit in sessions of their own), then SIGKILL
    local pids pid alive
    pids=$(tree_of "$1")
    # shellcheck disable=SC2086 # a list of pids
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 40); do # up to 20 s: compress cancels its job and stops its stack on SIGTERM
        alive=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
        [[ -z $alive ]] && break
        sleep 0.5
    done
    # shellcheck disable=SC2086
    [[ -n ${alive:-} ]] && kill -KILL $alive 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

start_sampler() { # $1: the file of samples
    SAMPLER=""
    if [[ $MODE == cuda ]] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$1" 2>/dev/null &
        SAMPLER=$!
    fi
}

stop_sampler() { # prints the largest memory.used of any GPU in $1's samples, or -
    if [[ -n $SAMPLER ]]; then
        kill "$SAMPLER" 2>/dev/null || true
        wait "$SAMPLER" 2>/dev/null || true
        SAMPLER=""
        awk '$1 + 0 > max { max = $1 + 0 } END { print (NR ? max : "-") }' "$1"
    else
        echo "-"
    fi
}

on_exit() {
    local rc=$?
    [[ -n $CHILD ]] && stop_tree "$CHILD"
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
    exit "$rc"
}
trap on_exit EXIT
trap 'INTERRUPTED=INT' INT
trap 'INTERRUPTED=TERM' TERM
trap 'INTERRUPTED=HUP' HUP

# -- the table ---------------------------------------------------------------------------------------

ROWS=()
FAILED=0
T_START=$(now)

cell() { tr '|\n' '/ ' <<<"$*" | sed 's/ *$//'; } # one table cell: no pipe, no newline

record() { # record STEP WHAT WALL PEAK RESULT
    ROWS+=("| $(cell "$1") | $(cell "$2") | $3 | $4 | $(cell "$5") |")
    [[ $5 == PASS* ]] || FAILED=1
}

last_error() { # the line of a log that most likely says why it failed: the last exception raised (a
    # torchrun rank's included, not torchrun's own summary), else the last line naming an error
    awk 'NF { last = $0 }
         /^(\[rank[0-9]+\]:)? *[A-Za-z_.]*(Error|Exception)(:|$)/ && !/ChildFailedError/ { raised = $0 }
         /[Ee]rror|FAIL|refused|[Ii]nvalid/ && !/^ *File / { err = $0 }
         END { out = raised != "" ? raised : err != "" ? err : last; print substr(out, 1, 200) }' "$1"
}

elapsed() { awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%d", b - a }'; }

# run_step STEP WHAT LIMIT_S FUNCTION: run FUNCTION under the limit and record its row; PASSED says
# whether it passed. Never called as a condition: bash ignores `set -e` in a function called as one,
# and in whatever it starts, so a step's failing command would not stop the step.
run_step() {
    PASSED=""
    local step=$1 what=$2 limit=$3 fn=$4 left log samples t0 wall peak rc=0 timed_out="" note=""
    if [[ -n $INTERRUPTED ]]; then
        record "$step" "$what" "-" "-" "SKIP (the run was stopped by SIG$INTERRUPTED)"
        return 0
    fi
    left=$((BUDGET_S - $(elapsed)))
    if ((left < 20)); then
        record "$step" "$what" "-" "-" "SKIP (the run's ${BUDGET_S} s budget is spent)"
        return 0
    fi
    ((limit * SCALE < left)) && limit=$((limit * SCALE)) || limit=$left
    log=$WORK/logs/$step-$fn.log
    samples=$WORK/logs/$step-$fn.gpu
    : >"$NOTE"
    echo "[gpu_check] step $step: $what (limit ${limit} s; log $log)" >&2
    start_sampler "$samples"
    t0=$(now)
    "$fn" >"$log" 2>&1 &
    CHILD=$!
    while kill -0 "$CHILD" 2>/dev/null; do
        if [[ -n $INTERRUPTED ]]; then
            stop_tree "$CHILD"
            break
        fi
        if (($(awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { print (b - a > l) }'))); then
            timed_out=1
            stop_tree "$CHILD"
            break
        fi
        sleep 0.5
    done
    wait "$CHILD" || rc=$?
    CHILD=""
    wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    peak=$(stop_sampler "$samples")
    [[ -s $NOTE ]] && note=$(cell "$(cat "$NOTE")")
    if [[ -n $INTERRUPTED ]]; then
        record "$step" "$what" "$wall" "$peak" "FAIL (stopped by SIG$INTERRUPTED; log $log)"
    elif [[ -n $timed_out ]]; then
        record "$step" "$what" "$wall" "$peak" "FAIL (past its ${limit} s limit, stopped; log $log)"
    elif ((rc != 0)); then
        record "$step" "$what" "$wall" "$peak" "FAIL (exit $rc: ${note:-$(last_error "$log")}; log $log)"
    else
        record "$step" "$what" "$wall" "$peak" "PASS${note:+ ($note)}"
        PASSED=1
    fi
    echo "[gpu_check] step $step: ${ROWS[-1]}" >&2
}

# -- the steps (each runs in a subshell of its own, its output to its log) ---------------------------

step_devices() {
    "$PY" - "$MODE" "$NOTE" "$WORK/gpus" <<'EOF'
import os, sys
import torch
import torch.distributed as dist

mode, note, gpus = sys.argv[1:]
count = torch.cuda.device_count() if torch.cuda.is_available() else 0
open(gpus, "w").write(str(count))
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {count} GPU(s) visible, "
      f"NCCL available: {dist.is_nccl_available()}, gloo: {dist.is_gloo_available()}")
for i in range(count):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
if mode == "cpu":
    text = f"dry run on CPU ({os.cpu_count()} cores), torch {torch.__version__}; gloo between ranks"
else:
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    text = f"{count} x {', '.join(names) or 'no GPU'}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    if count == 0:
        text = "torch sees no CUDA device (CUDA_VISIBLE_DEVICES, driver, a CPU build of torch?)"
    elif count >= 2 and not dist.is_nccl_available():
        text += "; this torch has no NCCL"
        count = 0
open(note, "w").write(text)
sys.exit(0 if mode == "cpu" or count else 1)
EOF
}

step_lut() {
    "$PY" -m services.profiler.cli build --shape "$TEACHER" --length 128 --time-cap-s 15 >"$WORK/lut.json"
    "$PY" - "$WORK/lut.json" "$MODE" "$NOTE" <<'EOF'
import json, sys

lut, mode, note = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
clocks, method = ("cuda_events",), "measured"
if mode == "cpu":
    clocks, method = ("thread_time", "perf_counter"), "computed"
text = (f"LUT {lut['id']}: {len(lut['entries'])} operators, clock {lut['clock']}, activations "
        f"{lut['activation_method']}, built in {lut['build_seconds']:.0f} s, drift {lut['drift'] or 0:+.1%}")
wrong = [] if lut["clock"] in clocks else [f"clock {lut['clock']}, not {clocks[0]}"]
if lut["activation_method"] != method:
    wrong.append(f"activations {lut['activation_method']}, not {method}")
wrong += [] if lut["entries"] else ["no entries"]
open(note, "w").write("; ".join(wrong) or text)
print(text)
sys.exit(1 if wrong else 0)
EOF
}

check_trainer_run() { # check_trainer_run FOLDER: the world size and device a local run reports
    "$PY" - "$1" "$NPROC" "$MODE" "$NOTE" "$RANKS_NOTE" <<'EOF'
import json, sys
from pathlib import Path

out, ranks, mode, note, ranks_note = Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
result = json.loads((out / "result.json").read_text())
lines = (out / "log.txt").read_text().splitlines()
on = next((line.split(" on ")[-1].split(",")[0] for line in lines if f" on {ranks} x {mode}" in line), None)
wrong = [] if result["world_size"] == ranks else [f"world size {result['world_size']}, not {ranks}"]
wrong += [] if on else [f"its log names no training on {ranks} x {mode}"]
extra = ""
if "ranking" in result:
    extra = f", {len(result['ranking'])} ranked, winner was #{result['winner_search_rank']}"
# the distill job's own figure (on cuda the allocator's peak, torch.cuda.max_memory_allocated)
peak = next((line.split(": ", 1)[1] for line in lines if line.startswith("peak memory per process")), None)
extra += f", peak memory per process {peak}" if peak else ""
open(note, "w").write("; ".join(wrong) or f"on {on}{extra}; {ranks_note}")
sys.exit(1 if wrong else 0)
EOF
}

torchrun_job() { # torchrun_job SPEC OUT: `unast-trainer run` as NPROC ranks
    "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
        -m services.trainer.cli run --spec "$1" --out "$2"
}

step_distill() {
    "$PY" - "$TEACHER" "$WORK/distill.json" <<'EOF'
import sys
from pathlib import Path
from shared.candidates import slot_pools
from shared.pretrained import read_model
from shared.schemas.trainer import DistillSpec

teacher, spec_file = sys.argv[1:]
shape, _ = read_model(Path(teacher))
pools = slot_pools(shape, "small")  # teacher, identity, linear, ..., the smallest: keep those four
candidates = {slot: [*ops[:3], ops[-1]] for slot, ops in pools.items()}
spec = DistillSpec(teacher=teacher, candidates=candidates, steps=40, batch_size=8, seq_len=128,
                   warmup=4, checkpoint_every=20, eval_batches=4)
Path(spec_file).write_text(spec.model_dump_json(indent=1))
EOF
    torchrun_job "$WORK/distill.json" "$WORK/distill"
    check_trainer_run "$WORK/distill"
}

step_rank() {
    "$PY" - "$WORK/distill" "$WORK/rank.json" <<'EOF'
import json, sys
from pathlib import Path
from shared.schemas.operators import spec_name
from shared.schemas.trainer import DistillSpec, RankSpec

distill, spec_file = sys.argv[1:]
learned = DistillSpec.model_validate(json.loads((Path(distill) / "job.json").read_text())["spec"])
ids = {slot: [spec_name(op) for op in ops] for slot, ops in learned.candidates.items()}
# each slot's ids: the teacher's, identity, linear, the smallest (step 2's choice)
architectures = [
    {"choices": {slot: pick(slot, i) for i, slot in enumerate(ids)}}
    for pick in (
        lambda slot, i: ids[slot][-1],  # the smallest everywhere
        lambda slot, i: ids[slot][2],  # linear everywhere
        lambda slot, i: ids[slot][0 if i % 4 < 2 else -1],  # every other block the smallest
        lambda slot, i: ids[slot][0 if slot.endswith("attn") else -1],  # the smallest MLPs only
    )
]
spec = RankSpec(distill_job=distill, architectures=architectures, steps=20, batch_size=8, seq_len=128,
                eval_batches=4)
Path(spec_file).write_text(spec.model_dump_json(indent=1))
EOF
    torchrun_job "$WORK/rank.json" "$WORK/rank"
    check_trainer_run "$WORK/rank"
}

step_compress() {
    local ports
    ports=$("$PY" -c '
import socket
held = [socket.socket() for _ in range(3)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))')
    read -r UNAST_PROFILER_PORT UNAST_SEARCH_PORT UNAST_TRAINER_PORT <<<"$ports"
    export UNAST_PROFILER_PORT UNAST_SEARCH_PORT UNAST_TRAINER_PORT
    export UNAST_DATABASE_URL=sqlite:///$WORK/compress/unast.db UNAST_ARTIFACTS_ROOT=$WORK/compress/artifacts
    mkdir -p "$WORK/compress"
    local rc=0
    "$PY" -m services.cli compress --model "$TEACHER" --latency 0.5 --device "$MODE" --config quick \
        --out "$WORK/compress/run" 2>&1 | tee "$WORK/compress/out.log" || rc=$?
    if ((rc != 0)); then # a service's error is a 500 here, its exception in the stack's log
        local said raised
        said=$(last_error "$WORK/compress/out.log")
        raised=$(last_error "$WORK/compress/run/stack.log")
        echo "$said; stack.log: $raised" >"$NOTE"
        return "$rc"
    fi
    "$PY" - "$WORK/compress" "$MODE" "$NOTE" <<'EOF'
import json, sqlite3, sys
from pathlib import Path

folder, mode, note = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
run = folder / "run"
stages = json.loads((run / "run.json").read_text()).get("stages", {})
device = stages.get("profile", {}).get("device") or "?"  # compress refuses a profiler of another kind
wrong = [f"no {name}" for name in ("report.md", "model/config.json") if not (run / name).is_file()]
# where the trainer's worker trained: its jobs' log lines name the device
with sqlite3.connect(folder / "unast.db") as db:
    query = ("SELECT message FROM trainer_job_logs WHERE message LIKE 'distilling %' "
             "OR message LIKE 'finetuning %' OR message LIKE 'ranking %'")
    lines = [message for (message,) in db.execute(query)]
trained = sorted({line.split(" on ")[-1].split(",")[0] for line in lines})
wrong += [] if trained and all(f" x {mode}" in f" {t}" for t in trained) else [f"trained on {trained}"]
longest = sorted((s["wall_s"], name) for name, s in stages.items() if s.get("wall_s"))[::-1][:4]
walls = ", ".join(f"{name} {wall:.0f} s" for wall, name in longest)
text = (f"report.md and model/ written; profiled on {device}; trained on {', '.join(trained)}; "
        f"longest: {walls}")
open(note, "w").write("; ".join(wrong) or text)
sys.exit(1 if wrong else 0)
EOF
}

# -- the run -----------------------------------------------------------------------------------------

NPROC=2
RANKS_NOTE="2 ranks over gloo (dry run)"
WHAT_RANKS="2 ranks, gloo (dry run)"
if [[ $MODE == cuda ]]; then WHAT_RANKS="2 ranks, NCCL"; fi

run_step 0 "devices: what torch sees ($MODE)" 60 step_devices
if [[ -n $PASSED ]]; then
    NGPU=$(cat "$WORK/gpus")
    if [[ $MODE == cuda ]]; then
        RANKS_NOTE="2 ranks over NCCL, one GPU each"
        if ((NGPU < 2)); then
            NPROC=1
            WHAT_RANKS="1 rank (1 GPU visible)"
            RANKS_NOTE="1 rank only: 1 GPU visible, NCCL not exercised"
        fi
    fi
    run_step 1 "profiler: LUT build of the demo teacher on $MODE (prefill 128, float32, 15 s cap)" \
        150 step_lut
    run_step 2 "trainer: distill job under torchrun, $WHAT_RANKS, 40 steps" 180 step_distill
    if [[ -n $PASSED ]]; then
        run_step 3 "trainer: rank job on step 2's folder, $WHAT_RANKS, 4 architectures x 20 steps" \
            150 step_rank
    else
        record 3 "trainer: rank job on step 2's folder, $WHAT_RANKS" "-" "-" \
            "SKIP (${INTERRUPTED:+the run was stopped by SIG}${INTERRUPTED:-step 2 failed})"
    fi
    run_step 4 "unast compress --device $MODE --config quick --latency 0.5 (trainer on $MODE)" \
        420 step_compress
else
    for step in "1 profiler: LUT build" "2 trainer: distill job" "3 trainer: rank job" "4 unast compress"; do
        record "${step%% *}" "${step#* }" "-" "-" "SKIP (step 0 failed: no device to check)"
    done
fi

echo
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
echo "UNAST GPU check ($MODE), $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT, $(hostname)"
echo
echo "| step | what | wall s | peak GPU MiB | result |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo
echo "total wall time: $(elapsed) s (budget ${BUDGET_S} s); logs: $WORK/logs"
if [[ $MODE == cuda ]]; then
    echo "peak GPU MiB: the most memory.used of any GPU while the step ran (nvidia-smi every 0.5 s: every"
    echo "process's, CUDA contexts included)"
fi
if [[ -n $INTERRUPTED ]]; then
    echo "stopped by SIG$INTERRUPTED: the logs are kept in $WORK"
    exit $((128 + $(kill -l "$INTERRUPTED")))
elif ((FAILED)); then
    echo "some steps did not pass: their logs are kept in $WORK"
    exit 1
fi
rm -rf "$WORK"
echo "every step passed; $WORK removed"
