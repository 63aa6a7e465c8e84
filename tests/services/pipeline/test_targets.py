"""Budgets name their regime: the run's own prefill LUT, a time to first token at a context, a decode
step after a context at a batch; each regime is a LUT of its own and every budget goes into one search."""

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from services import stack
from services.pipeline.budgets import parse_budget
from services.pipeline.targets import Target, targets_and_budgets
from services.profiler.main import create_app as profiler_app
from shared.clients.profiler import ProfilerClient
from shared.schemas.lut import EstimateRequest
from shared.schemas.operators import Architecture
from shared.schemas.search import Budget
from tests.services.pipeline.test_compress import HANG_GUARD_S, ROOT, TINY, free_port
from tests.services.trainer.conftest import make_teacher


def test_each_budget_names_its_regime_and_the_targets_it_needs():
    targets, budgets = targets_and_budgets(
        length=128,
        latency=["0.5"],
        decode_latency=["50tok/s", "gpu:0.4"],
        ttft=["40ms"],
        memory=["0.6"],
        context=512,
        batch=4,
        devices=["gpu"],
    )
    assert targets == [  # the run's own first, then in the order the budgets need them
        Target("", "", "prefill", 1, 128),
        Target("", "ttft", "prefill", 4, 512),
        Target("", "decode", "decode", 4, 512),
        Target("gpu", "decode", "decode", 4, 512),
    ]
    assert [t.name for t in targets] == ["", "ttft", "decode", "gpu.decode"]
    assert Budget(cost="gpu.decode.latency_ms", fraction=0.4) in budgets
    assert Budget(cost="latency_ms", fraction=0.5) in budgets
    assert Budget(cost="decode.latency_ms", max=20.0) in budgets  # 50 tokens/s: 20 ms a token
    assert Budget(cost="ttft.latency_ms", max=40.0) in budgets
    assert Budget(cost="ttft.memory_bytes", fraction=0.6) in budgets  # memory at the context and batch
    assert targets_and_budgets(length=128, memory=["2GiB"])[1] == [Budget(cost="memory_bytes", max=2**31)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decode_latency": ["0.5"]}, "--decode-latency: give --context"),
        ({"ttft": ["40ms"]}, "--ttft: give --context"),
        ({"latency": ["0.5"], "context": 512}, "--context: no budget uses it"),
        ({"latency": ["0.5"], "batch": 4}, "--batch: no budget uses it"),
        ({"decode_latency": ["fast"], "context": 64}, "--decode-latency: 'fast'"),
        ({"latency": ["gpu:0.5"]}, "--latency: 'gpu' names no --target"),
        ({"latency": ["0.5"], "devices": ["gpu"]}, "--target: no budget names gpu"),
        ({}, "give at least one budget"),
    ],
)
def test_a_budget_that_cannot_be_read_names_its_option(options, message):
    with pytest.raises(ValueError, match=message):
        targets_and_budgets(length=128, **options)


def test_tokens_per_second_is_the_inverse_of_a_latency():
    assert parse_budget("latency_ms", "25tok/s") == Budget(cost="latency_ms", max=40.0)
    with pytest.raises(ValueError, match="unknown unit"):
        parse_budget("memory_bytes", "25tok/s")


@pytest.mark.parametrize(
    ("cost", "text"), [("memory_bytes", "1e999"), ("memory_bytes", "1e308GiB"), ("latency_ms", "1e-320tok/s")]
)
def test_a_budget_past_a_floats_range_is_refused_by_its_text(cost, text):
    with pytest.raises(ValueError, match=f"'{text}': out of range for {cost}"):
        parse_budget(cost, text)


@pytest.mark.slow
def test_a_prefill_and_a_decode_budget_build_two_luts_and_one_architecture_meets_both(
    tmp_path, sqlite_settings, trained_teacher
):
    teacher = make_teacher(sqlite_settings, trained_teacher)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY | {"k": 2, "baselines": False, "onnx": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | sqlite_settings.to_env()
    env |= {f"UNAST_{name}_PORT": str(free_port()) for name in ("PROFILER", "SEARCH", "TRAINER")}
    env |= {"UNAST_TRAINER_POLL_S": "0.2", "UNAST_PROFILER_POLL_S": "0.2"}
    command = [sys.executable, "-m", "services.cli", "compress", "--model", str(teacher), "--config"]
    command += [str(tmp_path / "tiny.json"), "--latency", "0.8", "--decode-latency", "0.8"]
    command += ["--context", "48", "--batch", "2", "--dtype", "bfloat16", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    stages = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
    own, decode = stages["profile"]["lut_id"], stages["profile-decode"]["lut_id"]
    assert own != decode
    report = (tmp_path / "run" / "report.md").read_text()
    assert "decode LUT ms" in report and "decode measured ms" in report
    model = Architecture.model_validate(
        json.loads((tmp_path / "run" / "model" / "config.json").read_text())["unast_architecture"]
    )
    with TestClient(profiler_app(sqlite_settings)) as http:
        profiler = ProfilerClient(http)
        luts = {lut_id: profiler.lut(lut_id) for lut_id in (own, decode)}
        assert (luts[decode].regime, luts[decode].batch, luts[decode].length) == ("decode", 2, 48)
        assert luts[own].dtype == luts[decode].dtype == "bfloat16"  # both timed in the dtype asked for
        for lut in luts.values():
            model_ms, teacher_ms = (
                profiler.estimate(lut.device_id, EstimateRequest(lut_id=lut.id, architecture=a)).latency_ms
                for a in (model, Architecture.teacher(lut.shape))
            )
            assert model_ms <= 0.8 * teacher_ms * (1 + 1e-9), lut.regime


@pytest.mark.slow
def test_two_devices_get_one_architecture_within_both_budgets(tmp_path, sqlite_settings, trained_teacher):
    """A second profiler on this machine that measures differently (2 torch threads, its own database)
    is a second device: `--target two=URL --latency 0.8 --latency two:0.7` gives one architecture
    within both, by each device's own LUT."""
    teacher = make_teacher(sqlite_settings, trained_teacher)
    port = free_port()
    two = sqlite_settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path}/two.db",
            "profiler_port": port,
            "torch_threads": 2,
            "artifacts_root": tmp_path / "two-artifacts",
        }
    )
    children = stack.start(two, processes=stack.STACK[:2], timeout_s=120.0)  # its API and its worker
    try:
        (tmp_path / "tiny.json").write_text(json.dumps(TINY | {"k": 2, "baselines": False, "onnx": False}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | sqlite_settings.to_env()
        env |= {f"UNAST_{name}_PORT": str(free_port()) for name in ("PROFILER", "SEARCH", "TRAINER")}
        env |= {"UNAST_TRAINER_POLL_S": "0.2", "UNAST_PROFILER_POLL_S": "0.2"}
        command = [sys.executable, "-m", "services.cli", "compress", "--model", str(teacher), "--config"]
        command += [str(tmp_path / "tiny.json"), "--target", f"two=http://127.0.0.1:{port}"]
        command += ["--latency", "0.8", "--latency", "two:0.7", "--out", str(tmp_path / "run")]
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
        stages = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
        model = Architecture.model_validate(
            json.loads((tmp_path / "run" / "model" / "config.json").read_text())["unast_architecture"]
        )
        with TestClient(profiler_app(sqlite_settings)) as own, ProfilerClient.from_settings(two) as other:
            for client, stage, fraction in (
                (ProfilerClient(own), "profile", 0.8),
                (other, "profile-two", 0.7),
            ):
                lut = client.lut(stages[stage]["lut_id"])
                model_ms, teacher_ms = (
                    client.estimate(lut.device_id, EstimateRequest(lut_id=lut.id, architecture=a)).latency_ms
                    for a in (model, Architecture.teacher(lut.shape))
                )
                assert model_ms <= fraction * teacher_ms * (1 + 1e-9), stage
            assert stages["profile"]["device"] and stages["profile-two"]["device_id"] is not None
    finally:
        stack.stop(children)
