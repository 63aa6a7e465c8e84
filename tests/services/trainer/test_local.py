"""`unast-trainer run` from a spec file: the same runner as the queued job, alone and under torchrun."""

import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from shared.schemas.trainer import DistillResult
from tests.services.trainer.test_distill_job import distill_spec


@pytest.mark.slow
def test_torchrun_distils_on_two_ranks(tmp_path, trained_teacher):
    spec = distill_spec(trained_teacher / "teacher", steps=12, checkpoint_every=5, eval_batches=2)
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | {"OMP_NUM_THREADS": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "services.trainer.cli", "run"]
    command += ["--spec", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = DistillResult.model_validate_json((tmp_path / "out" / "result.json").read_text())
    assert result.world_size == 2
    assert 0 < result.heldout_nmse["block1.mlp"]["mlp_i48"] < 1
    weights = load_file(tmp_path / "out" / "candidates.safetensors")
    assert "block0.attn/attn_h2_kv1_d8/q_proj.weight" in weights
    log = (tmp_path / "out" / "log.txt").read_text()
    assert log.count("distilling") == 1 and "on 2 x cpu" in log  # rank 0 alone logs
