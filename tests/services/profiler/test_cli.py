"""`unast-profiler` without the HTTP layer: build, list, read, export, estimate, validate."""

import json

import pytest

from services.profiler.cli import main
from shared.schemas.operators import Architecture, IdentityOp
from shared.schemas.shape import PRESETS
from shared.settings import get_settings

from .conftest import OPERATORS, QUICK


@pytest.fixture
def run(sqlite_settings, monkeypatch, capsys):
    for key, value in sqlite_settings.to_env().items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()

    def run(*argv: str):
        main(list(argv))
        return json.loads(capsys.readouterr().out)

    yield run
    get_settings.cache_clear()


def test_build_then_read_export_estimate_and_validate(run, tmp_path):
    operators = tmp_path / "operators.json"
    operators.write_text(json.dumps([op.model_dump() for op in OPERATORS]))
    quick = ["--time-cap-s", str(QUICK["time_cap_s"]), "--min-runs", "8", "--warmup-runs", "1"]
    lut = run("build", "--shape", "tiny", "--length", "16", "--operators", str(operators), *quick)
    assert lut["operator_count"] == 6 and lut["length"] == 16

    assert [d["id"] for d in run("devices")] == [lut["device_id"]]
    assert [x["id"] for x in run("luts", "--shape", "tiny")] == [lut["id"]]
    assert run("luts", "--regime", "decode") == []
    assert run("lut", str(lut["id"]))["entries"] == lut["entries"]
    assert len(run("export", str(lut["id"]))["slots"]) == 4

    arch = Architecture.teacher(PRESETS["tiny"]).replace("block0.mlp", IdentityOp())
    (tmp_path / "arch.json").write_text(arch.model_dump_json())
    device = str(lut["device_id"])
    key = ["--shape", "tiny", "--length", "16"]
    estimate = run("estimate", "--device-id", device, *key, "--architecture", str(tmp_path / "arch.json"))
    assert [s["name"] for s in estimate["slots"]][:2] == ["attn_h4_kv2_d16", "identity"]

    validation = run("validate", str(lut["id"]), "--count", "2", *quick)
    assert validation["count"] == 2 and validation["lut_id"] == lut["id"]


def test_errors_exit_with_a_message(run):
    with pytest.raises(SystemExit, match="LUT 42 not found"):
        run("export", "42")
    with pytest.raises(SystemExit, match="length"):
        run("build", "--shape", "tiny", "--length", "100000")
