"""`unast compress` at a tiny size, through real HTTP on localhost: an embedded stack of real service
and worker processes, a small trained teacher, few steps, K=4. The run is stopped with SIGTERM during
distillation (the job is cancelled, the stack stopped), started again and killed in the middle of
scoring (the command and its whole stack, as a crash would), and started once more, its trainer worker
SIGKILLed in the middle of a job (the stack starts it again, and the job resumes): it finishes
without redoing the stages that had finished, and its outputs link up (scores from the trainer, costs
from the profiler, solutions from the search, a reloadable exported model, a report with figures)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from services.trainer.models import QUEUE as TRAINER_QUEUE
from shared.db import make_engine, make_sessionmaker
from shared.model import Decoder
from tests.services.trainer.conftest import make_teacher

ROOT = Path(__file__).parents[3]
HANG_GUARD_S = 900  # only against a hang; nothing is timed
TINY = {
    "length": 32,
    "lut_time_cap_s": 1.0,
    "validation_count": 3,
    "pool": "small",
    "distill_steps": 40,
    "distill_batch": 4,
    "score_batches": 2,
    "k": 4,
    "search_time_limit_s": 10.0,
    "rank_steps": 3,
    "finetune_steps": 6,
    "eval_every": 3,
    "eval_batches": 2,
    "batch": 4,
    "seq_len": 32,
    "onnx": True,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compress(tmp_path: Path, env: dict, teacher: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "services.cli", "compress", "--model", str(teacher), "--latency", "0.6"]
    command += ["--config", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "run")]
    log = open(tmp_path / "compress.log", "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def processes_in_group(group: int) -> list[int]:
    """Processes still in a process group (the stopped command's: its stack's too), from /proc."""
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group and fields[0] != "Z":  # the group id; zombies are gone already
                    left.append(int(entry.name))
    return left


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def record(tmp_path: Path) -> dict:
    path = tmp_path / "run" / "run.json"
    return json.loads(path.read_text()) if path.exists() else {"stages": {}}


@pytest.mark.slow
def test_a_killed_run_resumes_and_its_stages_link_up(tmp_path, sqlite_settings, trained_teacher):
    teacher = make_teacher(sqlite_settings, trained_teacher)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY | {"scratch": True}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | sqlite_settings.to_env()
    env |= {f"UNAST_{name}_PORT": str(free_port()) for name in ("PROFILER", "SEARCH", "TRAINER")}
    env |= {"UNAST_TRAINER_HEARTBEAT_S": "0.5", "UNAST_TRAINER_STALE_S": "2", "UNAST_TRAINER_POLL_S": "0.2"}
    env |= {"UNAST_PROFILER_POLL_S": "0.2", "PYTHONUNBUFFERED": "1"}

    def wait_for(process: subprocess.Popen, stage: str, what: str = "job_id") -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while record(tmp_path)["stages"].get(stage, {}).get(what) is None:
            assert process.poll() is None, (tmp_path / "compress.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{stage} never started"
            time.sleep(0.2)

    stopped = compress(tmp_path, env, teacher)
    try:  # SIGTERM while the distill job runs: it is cancelled, the run stops resumable, nothing is left
        wait_for(stopped, "distill")
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(120) == 130
        left = processes_in_group(stopped.pid)  # before any clean-up of ours
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stopped.pid, signal.SIGKILL)
    assert left == [], "processes of the stopped run are left"
    cancelled = record(tmp_path)["stages"]["distill"]
    assert "Run the same command again to resume" in (tmp_path / "compress.log").read_text()

    first = compress(tmp_path, env, teacher)
    try:  # kill it, stack and all, once distillation is done and scoring under way
        wait_for(first, "score")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = record(tmp_path)["stages"]
    assert before["distill"]["state"] == "done" and before["score"]["state"] == "running"
    # the cancelled distill job was submitted again under a new key, not waited for
    assert before["distill"]["job_id"] != cancelled["job_id"] and before["distill"]["attempt"] == 1

    second = compress(tmp_path, env, teacher)
    try:  # SIGKILL its trainer worker in the middle of a job: the stack starts it again, the job resumes
        wait_for(second, "unast-rank")
        rank_job = record(tmp_path)["stages"]["unast-rank"]["job_id"]
        trainer = f"http://127.0.0.1:{env['UNAST_TRAINER_PORT']}"
        deadline = time.monotonic() + HANG_GUARD_S
        while httpx.get(f"{trainer}/v1/jobs/{rank_job}").json()["state"] != "running":
            assert time.monotonic() < deadline, "the rank job never ran"
            time.sleep(0.1)
        (worker,) = [p for p in processes_in_group(second.pid) if "services.trainer.cli worker" in cmdline(p)]
        os.kill(worker, signal.SIGKILL)
        assert second.wait(HANG_GUARD_S) == 0, (tmp_path / "compress.log").read_text()[-5000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    stack_log = (tmp_path / "run" / "stack.log").read_text()
    assert "trainer-worker exited with code -9; starting it again (1/3)" in stack_log
    with make_sessionmaker(make_engine(sqlite_settings.database_url))() as session:
        lines = [line.message for line in TRAINER_QUEUE.log(session, job_id=rank_job, tail=100)]
    assert "worker lost (its process is gone): queued" in lines and "succeeded" in lines
    log = (tmp_path / "compress.log").read_text()
    after = record(tmp_path)["stages"]
    # the finished stages were not redone: the same LUT, the same distill job; scoring went on
    assert after["profile"]["lut_id"] == before["profile"]["lut_id"]
    assert after["distill"]["job_id"] == before["distill"]["job_id"]
    assert after["distill"]["finished_at"] == before["distill"]["finished_at"]
    assert after["score"]["job_id"] == before["score"]["job_id"]
    assert log.count("[distill] job") == 1  # waited for once, in the first run
    for stage in ("unast-search", "unast-rank", "unast-finetune", "export", "measure", "depth-finetune"):
        assert after[stage]["state"] == "done", stage

    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    for figure in ("architecture.png", "search.png", "rank.png", "latency.png", "finetune.png"):
        assert (run / "figures" / figure).stat().st_size > 1000 and f"figures/{figure}" in report
    for method in ("| teacher |", "| unast |", "| unast-depth |", "| depth |", "| scratch |"):
        assert method in report
    # from scratch: UNAST's architecture from random weights, on 10x the tokens UNAST's model cost
    cells = {}  # a row's name -> its cells, the first table's row where two tables name it (scratch)
    for line in report.splitlines():
        if line.startswith("|"):
            cells.setdefault(line.split("|")[1].strip(), line.split("|")[2:-1])
    spent = int(cells["**UNAST, in all**"][0].replace(",", ""))
    assert (
        spent == 40 * 4 * 32 + 2 * 4 * 32 + 4 * 3 * 4 * 32 + 6 * 4 * 32
    )  # distill, score, rank K=4, finetune
    assert int(cells["**from scratch**"][0].replace(",", "")) == 10 * spent
    assert float(cells["scratch"][1]) > 384 / 2 > float(cells["scratch"][2])  # random, then trained
    for method in ("unast", "depth", "scratch"):  # every method meets the latency budget: its share, <= 100%
        share = cells[method][4].split("%")[0]
        assert 0 < int(share) <= 100, cells[method]
        short = "(short)" in cells[method][4]  # more than 5% under its budget: said in its row
        assert int(share) <= 95 if short else int(share) >= 95, cells[method]
    assert after["scratch"]["state"] == "done" and "trained from scratch on 10x the tokens" in report
    exported = Decoder.from_pretrained(run / "model")
    provenance = json.loads((run / "model" / "provenance.json").read_text())
    assert provenance["jobs"]["finetune_job"] == after["unast-finetune"]["job_id"]
    assert provenance["searched_for"]["lut_id"] == after["profile"]["lut_id"]
    with torch.no_grad():
        assert exported(torch.randint(0, 384, (1, 8))).shape == (1, 8, 384)


@pytest.mark.slow
def test_a_servable_run_exports_the_form_that_its_readers_and_transformers_load(
    tmp_path, sqlite_settings, trained_teacher
):
    """`--format nemotron-nas` at tiny size: the export's nemotron-nas/ folder reads back, by the form's
    reference reader, as the exported architecture, and reloads exactly in our loader and in transformers
    with the shipped code."""
    transformers = pytest.importorskip("transformers")
    from tests.shared.decilm_reference import read_blocks

    teacher = make_teacher(sqlite_settings, trained_teacher)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY | {"k": 2, "baselines": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | sqlite_settings.to_env()
    env |= {f"UNAST_{name}_PORT": str(free_port()) for name in ("PROFILER", "SEARCH", "TRAINER")}
    env |= {"UNAST_TRAINER_POLL_S": "0.2", "UNAST_PROFILER_POLL_S": "0.2"}
    command = [sys.executable, "-m", "services.cli", "compress", "--model", str(teacher), "--latency", "0.6"]
    command += ["--config", str(tmp_path / "tiny.json"), "--format", "nemotron-nas"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "run")], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    export = tmp_path / "run" / "model"
    folder = export / "nemotron-nas"
    model = Decoder.from_pretrained(export).eval()
    blocks = read_blocks(json.loads((folder / "config.json").read_text()))
    shape = model.shape
    for (attention, ffn), layer in zip(blocks, model.architecture.layers, strict=True):
        match layer.attention.kind:
            case "identity" | "linear":
                assert attention == {"identity": "no_op", "linear": "linear"}[layer.attention.kind]
            case _:
                assert attention == (shape.num_heads, layer.attention.num_kv_heads, shape.head_dim)
        match layer.mlp.kind:
            case "identity" | "linear":
                assert ffn == {"identity": "no_op", "linear": "linear"}[layer.mlp.kind]
            case _:
                assert ffn == layer.mlp.intermediate_size
    idx = torch.randint(0, shape.vocab_size, (2, 20))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(Decoder.from_pretrained(folder)(idx), model(idx))
        assert (loaded(idx).logits - model(idx)).abs().max().item() <= 1e-4
