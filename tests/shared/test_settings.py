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
