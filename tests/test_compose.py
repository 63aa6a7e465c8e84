"""docker-compose.yml checked against the code (no Docker engine here to run it)."""

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
APP_SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if "build" in svc}
PORT_SETTING = {
    "unast-profiler": "profiler_port",
    "unast-search": "search_port",
    "unast-trainer": "trainer_port",
}


def _environment(svc: dict) -> dict[str, str]:
    # ${VAR:-default} is what compose substitutes when VAR is unset
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in svc.get("environment", {}).items()}


def test_every_app_service_is_built_from_this_repo():
    assert set(APP_SERVICES) >= {"profiler", "profiler-worker", "search", "trainer", "trainer-worker"}
    assert (ROOT / "Dockerfile").exists()


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_command_is_a_real_entry_point(name):
    command = APP_SERVICES[name]["command"]
    assert command[0] in SCRIPTS, f"{name}: {command[0]} is not a console script"
    module = importlib.import_module(SCRIPTS[command[0]].split(":")[0])
    module.build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown subcommand


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_environment_is_real_settings(name, monkeypatch):
    env = _environment(APP_SERVICES[name])
    for key, value in env.items():
        assert key.startswith("UNAST_"), key
        monkeypatch.setenv(key, value)
    Settings()  # fails on an unknown UNAST_ variable or a bad value


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_ports_match_settings(name, monkeypatch):
    svc = APP_SERVICES[name]
    setting = PORT_SETTING.get(svc["command"][0])
    if "ports" not in svc:
        return
    for key, value in _environment(svc).items():
        monkeypatch.setenv(key, value)
    port = getattr(Settings(), setting)
    assert [p.split(":")[-1] for p in svc["ports"]] == [str(port)]
    assert f":{port}/" in " ".join(svc["healthcheck"]["test"])
    assert Settings().host == "0.0.0.0"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_database_users_wait_for_a_healthy_database(name):
    svc = APP_SERVICES[name]
    url = _environment(svc).get("UNAST_DATABASE_URL")
    if url is None:
        assert "depends_on" not in svc
        return
    db = COMPOSE["services"]["db"]
    assert svc["depends_on"]["db"]["condition"] == "service_healthy"
    assert "healthcheck" in db
    env = db["environment"]
    expected = (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@db:5432/{env['POSTGRES_DB']}"
    )
    assert url == expected


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_host_models_are_inside_the_input_roots_at_their_host_path(name):
    """`unast compress` on the host sends the teacher's resolved host path: every service that opens
    model folders sees the host's models/ at that same path, inside its input roots."""
    svc = APP_SERVICES[name]
    roots = _environment(svc).get("UNAST_INPUT_ROOTS")
    if roots is None:  # the search opens no files
        return
    mounts = [v.split(":") for v in svc["volumes"]]
    assert ["${PWD}/models", "${PWD}/models", "ro"] in mounts
    assert "${PWD}/models" in json.loads(roots)
