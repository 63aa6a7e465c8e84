"""The export stage fetches the files the trainer lists into <run>/model/ (issue 20, item 12). The names
come from a service, which may be a rogue one or a shared stack: a name that would land outside the
folder (`..`, absolute, not under export/, through a link already in it) is refused with one
ServiceError before anything is written. The trainer here is an httpx.MockTransport that serves any
path asked of it."""

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.pipeline import compress
from services.pipeline.record import RunRecord
from shared.clients.base import ServiceError
from shared.clients.trainer import TrainerClient
from shared.schemas.operators import Architecture
from tests.services.trainer.conftest import TEST_TEACHER


def rogue_trainer() -> TrainerClient:
    """A trainer that answers every file it is asked for, whatever the name."""

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"from the trainer: " + request.url.path.encode())

    return TrainerClient(httpx.Client(transport=httpx.MockTransport(serve), base_url="http://trainer"))


def export(tmp_path: Path, monkeypatch, files: list[str]) -> Path:
    """compress.export_model with the export job's result listing `files`; the run's directory."""
    out = tmp_path / "runs" / "name"
    run = SimpleNamespace(
        services=SimpleNamespace(trainer=rogue_trainer()),
        record=RunRecord(out),
        out=out,
        config=SimpleNamespace(onnx=False),
        format="unast",
    )
    estimated = SimpleNamespace(latency_ms=1.0, memory_bytes=1.0, params=1.0)
    monkeypatch.setattr(compress, "estimate", lambda *args: estimated)
    monkeypatch.setattr(compress, "trainer_job", lambda *args: ("job1", SimpleNamespace(files=files)))
    method = SimpleNamespace(architecture=Architecture.teacher(TEST_TEACHER), finetune_job="finetune1")
    compress.export_model(run, method, SimpleNamespace(device_id=1, id=2))
    return out


def test_the_listed_files_land_in_the_model_folder(tmp_path, monkeypatch):
    out = export(tmp_path, monkeypatch, ["export/config.json", "export/sub/weights.bin"])
    assert (out / "model" / "config.json").read_bytes().endswith(b"/files/export/config.json")
    assert (out / "model" / "sub" / "weights.bin").is_file()


@pytest.mark.parametrize(
    "name", ["export/../../x", "export/../../../../outside", "/tmp/x", "other/x", "export"]
)
def test_a_name_leaving_the_model_folder_is_refused_before_writing(tmp_path, monkeypatch, name):
    name = name.replace("/tmp", str(tmp_path))
    files = ["export/config.json", name]  # a good file first: nothing of it is written either
    with pytest.raises(ServiceError, match="refused the file name") as refused:
        export(tmp_path, monkeypatch, files)
    assert refused.value.status == 502 and repr(name) in str(refused.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("run.json", ".run.lock")]
    assert written == []


def test_a_link_out_of_the_model_folder_is_not_followed(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs" / "name" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "name" / "model" / "sub").symlink_to(elsewhere)
    with pytest.raises(ServiceError, match="refused the file name 'export/sub/x'"):
        export(tmp_path, monkeypatch, ["export/sub/x"])
    assert list(elsewhere.iterdir()) == []
