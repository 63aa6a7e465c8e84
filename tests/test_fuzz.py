"""Schema fuzzing: every operation of every service, from its own OpenAPI (schemathesis: examples,
coverage and fuzzing phases, valid and invalid data), on SQLite and PostgreSQL for the services with a
database. A 5xx, a status the operation does not document, a content type or a response body that
breaks its documented schema fails the test.

Bounded for CI: a fixed seed and FUZZ_EXAMPLES generated cases per operation (the coverage phase adds
its boundary cases). No worker runs, so submitted jobs only queue. `python -m benchmarks.fuzz` is the
longer run: with FUZZ_RECORD set, every case is recorded (one JSON line each) instead of the first
failure failing the test; its stateful phase (benchmarks/fuzz_stateful.py) follows OpenAPI links over
a live stack with workers and real jobs, and the last test here checks that phase's plumbing on a toy.
"""

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.profiler.main import create_app as profiler_app
from services.search.main import create_app as search_app
from services.trainer.main import create_app as trainer_app
from shared.settings import Settings
from tests.conftest import _fresh_postgres_database

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))  # generated cases per operation
FUZZ_RECORD = os.environ.get("FUZZ_RECORD")  # a file to append each case's outcome to
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
APPS = {"profiler": profiler_app, "search": search_app, "trainer": trainer_app}


def fuzz_settings(root: Path, database_url: str) -> Settings:
    (root / "inputs").mkdir(parents=True, exist_ok=True)
    return Settings(
        database_url=database_url,
        api_token=TOKEN,
        artifacts_root=root / "artifacts",
        input_roots=[root / "inputs"],
        # small search limits keep a fuzzed search short; the limits are fuzzed too
        search_max_slots=16,
        search_max_candidates=8,
        search_max_k=5,
        search_max_time_limit_s=2.0,
        search_max_sweep_points=4,
    )


def load_schema(service: str) -> schemathesis.BaseSchema:
    """The service's OpenAPI, read from an app on a throwaway store (each test sends to its own app)."""
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-schema-{service}-"))
    app = APPS[service](fuzz_settings(root, f"sqlite:///{root}/schema.db"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.seed = SEED
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=FUZZ_EXAMPLES,
        deterministic=True,
    )
    return schema


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """One database per backend for the whole module: state builds up across operations."""
    root = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        yield root, f"sqlite:///{root}/unast.db"
    else:
        admin = request.getfixturevalue("postgres_admin")
        yield from ((root, url) for url in _fresh_postgres_database(admin))


@pytest.fixture(scope="module")
def apps(store) -> dict:
    root, url = store
    return {service: APPS[service](fuzz_settings(root, url)) for service in ("profiler", "trainer")}


@pytest.fixture(scope="module")
def stateless_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-search")
    return search_app(fuzz_settings(root, f"sqlite:///{root}/unused.db"))


def call_and_check(case, app, service: str, store: str) -> None:
    if not FUZZ_RECORD:
        case.call_and_validate(app=app, headers=AUTH, checks=CHECKS)
        return
    try:
        response = case.call(app=app, headers=AUTH)
    except Exception as exc:  # an app whose errors escape it (the test client re-raises them)
        status, failures = 500, [f"Server error (raised {type(exc).__name__})"]
    else:
        status, failures = response.status_code, []
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # one Failure, or a FailureGroup
            failures = sorted({f.title for f in getattr(exc, "exceptions", [exc])})
    outcome = {
        "service": service,
        "store": store,
        "operation": f"{case.operation.method.upper()} {case.operation.path}",
        "status": status,
        "failures": failures,
    }
    with open(FUZZ_RECORD, "a") as out:
        out.write(json.dumps(outcome) + "\n")


HYPOTHESIS = settings(suppress_health_check=list(HealthCheck), deadline=None, database=None)

profiler = load_schema("profiler")
trainer = load_schema("trainer")
search = load_schema("search")


@profiler.parametrize()
@HYPOTHESIS
def test_profiler(case, apps, store):
    call_and_check(case, apps["profiler"], "profiler", store[1].partition("+")[0].partition(":")[0])


@trainer.parametrize()
@HYPOTHESIS
def test_trainer(case, apps, store):
    call_and_check(case, apps["trainer"], "trainer", store[1].partition("+")[0].partition(":")[0])


@search.parametrize()
@HYPOTHESIS
def test_search(case, stateless_app):
    call_and_check(case, stateless_app, "search", "none")


def test_the_stateful_phase_follows_links_and_records_every_failure_without_stopping():
    """benchmarks/fuzz_stateful.py's plumbing, on a toy service whose existing items raise: only a link
    from POST /items reaches one, each 500 is recorded with what reproduces it, and the scenarios go on
    to the number asked for."""
    import threading

    import uvicorn
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    from benchmarks import fuzz_stateful

    class Item(BaseModel):
        id: int
        name: str

    toy, items = FastAPI(), {}

    @toy.post("/items", status_code=201)
    def create(item: Item) -> Item:
        items[item.id] = item
        return item

    @toy.get("/items/{item_id}", responses={404: {}})
    def read(item_id: int) -> Item:
        if item_id in items:
            raise RuntimeError("a bug only an existing item reaches")
        raise HTTPException(404)

    server = uvicorn.Server(uvicorn.Config(toy, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        link = {"ReadIt": {"operationRef": "#/paths/~1items~1{item_id}/get"}}
        link["ReadIt"]["parameters"] = {"path.item_id": "$response.body#/id"}
        tally = fuzz_stateful.fuzz_service(
            f"http://127.0.0.1:{port}", {("/items", "post", "201"): link}, seed=1, scenarios=8, steps=4
        )
    finally:
        server.should_exit = True
        thread.join(10)
    assert tally.error is None
    assert tally.scenarios >= 8  # a failure ended no scenario early
    assert tally.links["POST /items -> [201] ReadIt -> GET /items/{item_id}"] > 0 and tally.applied > 0
    assert tally.failures["Server error"]["GET /items/{item_id} -> 500"] > 0
    assert tally.failing() > 0  # the phase fails
    assert (
        tally.server_errors[0]["curl"].startswith("curl -X GET")
        and "/items/" in tally.server_errors[0]["curl"]
    )
