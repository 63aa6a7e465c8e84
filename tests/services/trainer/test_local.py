"""`unast-trainer run` from a spec file: the same runner as the queued job, alone and under torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import DistillResult, ScoreSpec
from tests.services.trainer.test_distill_job import distill_spec


def run_spec(spec, out, processes: int = 1) -> dict:
    """`unast-trainer run` on a spec, alone or as `processes` torchrun ranks: its result."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(spec.model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable]
    if processes > 1:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        command = [torchrun, "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "services.trainer.cli", "run", "--spec", str(out / "spec.json"), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_ranks_share_out_the_slots_and_learn_one_processs_candidates(tmp_path, trained_teacher):
    """Slot-sharded distillation: each rank holds and trains only its slots' candidates, on the same
    batches; a resume from the sharded checkpoint included, the candidates equal one process's."""
    spec = distill_spec(trained_teacher / "teacher", steps=12, checkpoint_every=5, eval_batches=2)
    alone = DistillResult.model_validate(run_spec(spec, tmp_path / "alone"))
    shared = DistillResult.model_validate(run_spec(spec, tmp_path / "shared", processes=2))
    assert shared.world_size == 2 and alone.parameters_per_process == [sum(shared.parameters_per_process)]
    one, two = (load_file(tmp_path / run / "candidates.safetensors") for run in ("alone", "shared"))
    assert one.keys() == two.keys() and "block0.attn/attn_h2_kv1_d8/q_proj.weight" in one
    for name, weight in one.items():
        assert torch.allclose(weight, two[name], rtol=1e-4, atol=1e-6), name
    for slot, by_id in alone.heldout_nmse.items():
        assert by_id == pytest.approx(shared.heldout_nmse[slot], rel=1e-4), slot
    # each rank held only its own slots' candidates: about half the parameters, and every one of them
    per_slot: dict[str, int] = {}
    for name, weight in one.items():
        per_slot[name.split("/")[0]] = per_slot.get(name.split("/")[0], 0) + weight.numel()
    held = shared.parameters_per_process
    assert min(held) > 0 and max(held) <= 0.6 * sum(held)
    assert sorted(held) != sorted([0, sum(held)])
    assert any(sum(sizes) == held[0] for sizes in subsets(list(per_slot.values())))  # whole slots only
    log = (tmp_path / "shared" / "log.txt").read_text()
    assert log.count("distilling") == 1 and "on 2 x cpu" in log  # rank 0 alone logs
    # the checkpoint at step 10 has one file per rank; either resumes on any number of processes
    pointer = json.loads((tmp_path / "shared" / "checkpoint" / "checkpoint.json").read_text())
    assert pointer["step"] == 10 and len(pointer["shards"]) == 2
    for out, processes in (("shared", 1), ("alone", 2)):
        again = DistillResult.model_validate(run_spec(spec, tmp_path / out, processes=processes))
        assert again.world_size == processes
        for slot, by_id in alone.heldout_nmse.items():
            assert by_id == pytest.approx(again.heldout_nmse[slot], rel=1e-4), (out, slot)
        log = (tmp_path / out / "log.txt").read_text()
        assert "resuming from the checkpoint at step 10" in log, out


def subsets(sizes: list[int]):
    for mask in range(1 << len(sizes)):
        yield [size for i, size in enumerate(sizes) if mask >> i & 1]


@pytest.mark.slow
def test_two_ranks_share_out_the_scores_and_give_one_processs_table(tmp_path, trained_teacher):
    """Each rank runs the teacher and only its (slot, candidate) pairs; the per-batch sums are added up
    across ranks, checkpoints included: the table equals one process's."""
    distill = distill_spec(trained_teacher / "teacher", steps=4, warmup=1, eval_batches=1)
    run_spec(distill, tmp_path / "distill")
    spec = ScoreSpec(
        distill_job=str(tmp_path / "distill"),
        dataset=distill.dataset,
        batch_size=4,
        seq_len=32,
        eval_batches=5,
        checkpoint_every=2,
    )
    alone = ScoreTable.model_validate(run_spec(spec, tmp_path / "alone"))
    shared = ScoreTable.model_validate(run_spec(spec, tmp_path / "shared", processes=2))
    assert len(shared.peak_memory_bytes) == 2 and len(alone.peak_memory_bytes) == 1  # measured, not scored
    unmeasured = {"peak_memory_bytes": []}
    assert shared.model_copy(update=unmeasured) == alone.model_copy(update=unmeasured)
    assert len([c for s in alone.slots for c in s.candidates if not c.reference]) > 8
    log = (tmp_path / "shared" / "log.txt").read_text()
    pairs = sum(1 for s in alone.slots for c in s.candidates if not c.reference)
    (shares,) = [line.split("per process: ")[1] for line in log.splitlines() if "per process" in line]
    counts = [int(n) for n in shares.split(", ")]
    assert len(counts) == 2 and sum(counts) == pairs and min(counts) >= pairs // 4  # both ranks scored
    saved = load_file(tmp_path / "shared" / "batch_losses.safetensors")["sums"]
    assert saved.shape == (5, 1 + sum(1 for s in alone.slots for c in s.candidates if not c.reference))
    assert bool((saved != 0).all())  # every pair's column was filled, by one rank or the other
