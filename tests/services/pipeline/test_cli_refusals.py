"""`unast compress` refuses what it cannot run in one line and exit 2 before the stack starts: budgets,
options, --config files, --out and its run.json, and a teacher whose config.json or safetensors headers
say what from_pretrained would not load; and it learns the teacher from config.json and the headers,
never loading a weight.

Run in this process: a traceback is an exception escaping the command, and a command that would go on
meets a stack that raises StackStarted, so what is accepted is seen at once, without services.
"""

import json
from pathlib import Path

import pytest
import safetensors.torch

import shared.model
from services.cli import main as unast
from services.pipeline import compress as compress_module
from shared.model import Decoder
from shared.schemas.operators import Architecture
from shared.settings import Settings
from tests.hf_families import rewrite_header
from tests.services.trainer.conftest import TEST_TEACHER


class StackStarted(Exception):
    pass


def no_stack(*args, **kwargs):
    raise StackStarted


@pytest.fixture
def teacher(tmp_path) -> Path:
    """A small teacher, random weights: its config.json and header are what is checked."""
    Decoder(TEST_TEACHER).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


@pytest.fixture
def compress(monkeypatch, capsys, tmp_path, teacher):
    """`unast compress --model <teacher> --out <tmp>/run` and more arguments: (exit code, stderr lines)."""
    monkeypatch.setattr(compress_module, "services", no_stack)

    def run(*args: str) -> tuple[int, list[str]]:
        base = {"--model": str(teacher), "--out": str(tmp_path / "run")}
        given = {a.split("=")[0] for a in args if a.startswith("--")}
        defaults = [x for option, value in base.items() if option not in given for x in (option, value)]
        with pytest.raises(SystemExit) as done:
            unast(["compress", *defaults, *args])
        return done.value.code, capsys.readouterr().err.strip().splitlines()

    return run


def refused(result: tuple[int, list[str]], start: str) -> str:
    code, lines = result
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"unast compress: {start}"), lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "start", "says"),
    [
        (["--latency", "0"], "--latency", "above zero"),
        (["--latency=1e400ms"], "--latency", "'1e400ms': out of range for latency_ms"),
        (["--latency", "0.5", "--k", "0"], "--k", "greater than or equal to 1"),
    ],
)
def test_budgets_and_options_are_one_line(compress, args, start, says):
    assert says in refused(compress(*args), start)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"distill_steps": "many"}, "distill_steps: Input should be a valid integer"),
        ({"k": -5}, "k: Input should be greater than or equal to 1"),
        ({"distill_steps": 0}, "distill_steps: Input should be greater than or equal to 1"),
        ({"baselines": 1}, "baselines: Input should be a valid boolean"),
        ([1, 2], "not a JSON object"),
        ("not json {", "not readable JSON"),
    ],
)
def test_a_config_file_is_checked_when_read(compress, tmp_path, fields, says):
    file = tmp_path / "config.json"
    file.write_text(fields if isinstance(fields, str) else json.dumps(fields))
    assert says in refused(compress("--latency", "0.5", "--config", str(file)), "--config")


def test_an_out_that_is_a_file_is_refused(compress, tmp_path):
    (tmp_path / "file").write_text("mine")
    line = refused(compress("--latency", "0.5", "--out", str(tmp_path / "file")), "--out")
    assert line.endswith("not a directory") and (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize(
    ("text", "says"), [("garbage{", "Invalid JSON"), ('{"stages": [1]}', "stages: Input should be")]
)
def test_a_run_json_this_command_did_not_write_is_refused_and_kept(compress, tmp_path, text, says):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(text)
    line = refused(compress("--latency", "0.5"), "--out")
    assert "run.json is not a record of unast compress" in line and says in line
    assert (tmp_path / "run" / "run.json").read_text() == text  # not overwritten


def double_rows(header: dict) -> None:  # the offsets no longer hold the shape: a lie safetensors sees
    header["lm_head.weight"]["shape"][0] *= 2


def transpose(header: dict) -> None:  # the same bytes, another shape: only the model's shapes tell
    header["lm_head.weight"]["shape"].reverse()


def rename(header: dict) -> None:
    header["model.norm.bias"] = header.pop("model.norm.weight")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (double_rows, "model.safetensors: Error while deserializing header"),
        (transpose, "the weights' lm_head.weight is [64, 384], config.json's [384, 64]"),
        (rename, "the weights lack norm.weight"),
    ],
)
def test_a_lying_safetensors_header_is_refused(compress, teacher, change, says):
    rewrite_header(teacher / "model.safetensors", change)
    assert says in refused(compress("--latency", "0.5"), "--model")


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("not json {", "config.json is not readable JSON"),
        ("[1, 2]", "config.json is not a JSON object"),
        ({"hidden_size": "big"}, "config.json: hidden_size: Input should be a valid integer"),
        ({"rope_parameters": [1]}, "config.json: rope_parameters: an object of RoPE settings, not list"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
            "config.json: rope_parameters: one set for every layer is supported, not one per layer type",
        ),
        ({"unast_architecture": {"choices": "two"}}, "config.json: choices: Input should be a valid dict"),
        (  # an architecture of one block on a shape of two: from_pretrained could not build it
            {"unast_architecture": {"choices": {"block0.attn": "attn_h4_kv2_d16", "block0.mlp": "mlp_i176"}}},
            "config.json: the model cannot be built: block1.attn: missing",
        ),
    ],
)
def test_an_invalid_config_json_is_refused(compress, teacher, config, says):
    if isinstance(config, dict):
        config = json.dumps(json.loads((teacher / "config.json").read_text()) | config)
    (teacher / "config.json").write_text(config)
    assert says in refused(compress("--latency", "0.5"), "--model")


def test_the_teacher_is_learnt_without_loading_a_weight(compress, monkeypatch):
    """Every check passes and the command reaches the stack, having opened no tensor."""

    def no_weights(*args, **kwargs):
        raise AssertionError("unast compress loaded weights to learn the teacher")

    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    monkeypatch.setattr(shared.model, "safe_open", no_weights)
    monkeypatch.setattr(shared.model, "read_safetensors_into", no_weights)
    with pytest.raises(StackStarted):
        compress("--latency", "0.5")


def test_plan_prints_every_trainer_stage_and_starts_nothing(monkeypatch, capsys, tmp_path, teacher):
    """--plan: each trainer stage's plan on the trainer's device, from the teacher's shape and the
    config; no stack, no --out folder."""
    monkeypatch.setattr(compress_module, "services", no_stack)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        unast(["compress", "--model", str(teacher), "--latency", "0.5", "--out", str(out), "--plan"])
    printed = capsys.readouterr()
    assert done.value.code == 0 and printed.err == "" and not out.exists()
    rows = [
        line.split(" | ") for line in printed.out.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert [row[0] for row in rows] == ["| stage", "| distill", "| score", "| rank", "| finetune"]
    assert all(row[3] == "yes" for row in rows[1:]), rows  # a small teacher fits this machine
    assert "plan on 1 process(es) of cpu" in printed.out


def test_plan_on_more_processes_than_the_teacher_has_slots_is_one_line(
    monkeypatch, capsys, tmp_path, teacher
):
    slots = len(list(Architecture.teacher(TEST_TEACHER).slots()))
    monkeypatch.setattr(compress_module, "services", no_stack)
    monkeypatch.setattr(compress_module, "get_settings", lambda: Settings(trainer_procs_per_job=slots + 1))
    with pytest.raises(SystemExit) as done:
        unast(["compress", "--model", str(teacher), "--latency", "0.5", "--out", str(tmp_path), "--plan"])
    printed = capsys.readouterr().err.splitlines()
    assert done.value.code == 2 and printed == [
        f"unast compress: UNAST_TRAINER_PROCS_PER_JOB: {slots + 1} processes for {slots} slots: "
        f"use at most {slots}"
    ]
