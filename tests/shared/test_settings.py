import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings

README = Path(__file__).parents[2] / "README.md"


def test_defaults_need_no_server():
    s = Settings()
    assert s.database_url.startswith("sqlite:///")
    assert s.api_token is None
    assert s.service_url("search") == "http://127.0.0.1:8002"


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("UNAST_SEARCH_PORT", "9100")
    monkeypatch.setenv("UNAST_API_TOKEN", "s3cret")
    s = Settings()
    assert s.search_port == 9100
    assert s.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_invalid_value_fails_fast(monkeypatch):
    monkeypatch.setenv("UNAST_PROFILER_PORT", "70000")
    with pytest.raises(ValidationError, match="profiler_port"):
        Settings()


def test_misspelt_variable_fails_fast(monkeypatch):
    monkeypatch.setenv("UNAST_DATABSE_URL", "postgresql+psycopg://x@y/z")
    with pytest.raises(ValidationError, match="UNAST_DATABSE_URL"):
        Settings()


def test_readme_documents_every_setting():
    documented = set(re.findall(r"^\| `(UNAST_[A-Z_]+)` \|", README.read_text(), flags=re.M))
    assert documented == {f"UNAST_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.parametrize("service", ["profiler", "trainer"])
def test_a_stale_limit_leaves_a_live_worker_two_heartbeats(service):
    heartbeat, stale = f"{service}_heartbeat_s", f"{service}_stale_s"
    with pytest.raises(ValidationError, match=f"at least twice {heartbeat}"):
        Settings(**{heartbeat: 10.0, stale: 15.0})
    assert getattr(Settings(**{heartbeat: 10.0, stale: 20.0}), stale) == 20.0
