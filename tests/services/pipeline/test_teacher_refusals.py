"""`unast compress` refuses a teacher it would not compute exactly in one line and exit 2, before it
starts anything (no stack, no job, no LUT); a teacher's dtype becomes its LUT's unless --dtype says."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.pipeline.compress import read_teacher
from services.pipeline.record import lock
from services.pipeline.stages import slow_dtype
from shared.schemas.lut import ThisDevice
from tests.hf_families import hf_config, write_checkpoint

transformers = pytest.importorskip("transformers")

REFUSALS = {
    "qwen2-sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0}),
    "llama-gelu": ("llama", {"hidden_act": "gelu"}),
    "llama-attention-bias": ("llama", {"attention_bias": True}),
    "phi3": ("phi3", {}),
    "gemma": ("gemma", {}),
}


def compress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "compress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", list(REFUSALS))
def test_an_unsupported_teacher_exits_2_in_one_line_before_starting_anything(tmp_path, name):
    model_type, fields = REFUSALS[name]
    config = hf_config(model_type, num_attention_heads=4, num_key_value_heads=2, **fields)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config.to_dict()))
    done = compress("--model", str(tmp_path / "model"), "--latency", "0.5", "--out", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unast compress: --model"), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "stack.log").exists()  # the stack never started


def test_a_directory_without_a_config_exits_2(tmp_path):
    done = compress("--model", str(tmp_path), "--latency", "0.5", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "no config.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_lut_dtype_follows_the_teacher_unless_given(tmp_path):
    write_checkpoint(tmp_path / "bf16", "qwen3", num_attention_heads=4, num_key_value_heads=2)
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = "bfloat16"  # as a bf16 checkpoint says, in 5.x and 4.x
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(config))
    shape, dtype = read_teacher(tmp_path / "bf16", None)
    assert (shape.family, dtype) == ("qwen3", "bfloat16")
    assert read_teacher(tmp_path / "bf16", "float32")[1] == "float32"
    config["torch_dtype"] = config["dtype"] = "float8_e4m3fn"
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"^torch_dtype: 'float8_e4m3fn'"):
        read_teacher(tmp_path / "bf16", None)
    assert read_teacher(tmp_path / "bf16", "float16")[1] == "float16"


def test_a_device_without_fast_bfloat16_is_named_for_the_report():
    def device(bf16: float) -> ThisDevice:
        rates = {"float32": 100.0, "bfloat16": bf16}
        return ThisDevice(
            id=1, key="k", name="cpu0", kind="cpu", memory_bytes=1, fingerprint={}, gflops=rates
        )

    note = slow_dtype(device(12.0), "bfloat16")
    assert note is not None and "no fast bfloat16" in note and "12 GFLOP/s" in note
    assert slow_dtype(device(400.0), "bfloat16") is None
    assert slow_dtype(device(12.0), "float32") is None


def test_a_second_compress_on_the_same_out_refuses_in_one_line(tmp_path):
    """Two runs writing one run.json would corrupt it: the second refuses while the first holds --out."""
    held = lock(tmp_path / "run")  # as a running `unast compress` holds it
    assert held is not None and lock(tmp_path / "run") is None
    teacher = Path(__file__).parents[3] / "models" / "shakespeare-teacher"
    done = compress("--model", str(teacher), "--latency", "0.5", "--out", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"unast compress: --out {tmp_path / 'run'}: another unast compress is running there"
    ]
    assert not (tmp_path / "run" / "stack.log").exists() and not (tmp_path / "run" / "run.json").exists()
    held.close()  # the first run ends: the directory is free again
    assert lock(tmp_path / "run") is not None
