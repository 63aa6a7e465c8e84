"""`unast-trainer run` from a spec file: the same runner as the queued job, alone and under torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
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
def test_torchrun_distils_on_two_ranks(tmp_path, trained_teacher):
    spec = distill_spec(trained_teacher / "teacher", steps=12, checkpoint_every=5, eval_batches=2)
    run_spec(spec, tmp_path / "out", processes=2)
    result = DistillResult.model_validate_json((tmp_path / "out" / "result.json").read_text())
    assert result.world_size == 2
    assert 0 < result.heldout_nmse["block1.mlp"]["mlp_i48"] < 1
    weights = load_file(tmp_path / "out" / "candidates.safetensors")
    assert "block0.attn/attn_h2_kv1_d8/q_proj.weight" in weights
    log = (tmp_path / "out" / "log.txt").read_text()
    assert log.count("distilling") == 1 and "on 2 x cpu" in log  # rank 0 alone logs


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
    assert shared == alone and len([c for s in alone.slots for c in s.candidates if not c.reference]) > 8
    log = (tmp_path / "shared" / "log.txt").read_text()
    pairs = sum(1 for s in alone.slots for c in s.candidates if not c.reference)
    (shares,) = [line.split("per process: ")[1] for line in log.splitlines() if "per process" in line]
    counts = [int(n) for n in shares.split(", ")]
    assert len(counts) == 2 and sum(counts) == pairs and min(counts) >= pairs // 4  # both ranks scored
    saved = load_file(tmp_path / "shared" / "batch_losses.safetensors")["sums"]
    assert saved.shape == (5, 1 + sum(1 for s in alone.slots for c in s.candidates if not c.reference))
    assert bool((saved != 0).all())  # every pair's column was filled, by one rank or the other
