"""What every request passes before its route (shared/guard.py), and the connection after an error:
token first, NUL characters, content type, strict JSON types, slow bodies, a 500 that keeps the
connection. The socket tests run a real uvicorn server, since keep-alive is the server's business."""

import socket
from collections.abc import Iterator

import anyio
import pytest
from fastapi import APIRouter, FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from shared.api import TokenDep, service_app
from shared.settings import Settings
from tests.serving import serving
from tests.shared.test_api import assert_error


class Item(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)
    weight: float = 1.0
    fragile: bool = False
    tags: dict[str, list[str]] = {}


def make_app(**settings) -> FastAPI:
    """The routes on a router, included as the services include theirs; one route on the app itself."""
    app = service_app("test", Settings(max_body_bytes=2048, **settings), description="test app")
    router = APIRouter(prefix="/items")

    @router.post("", dependencies=[TokenDep])
    def create(item: Item) -> Item:
        return item

    @router.get("/{name}")
    def get(name: str, colour: str | None = Query(None, max_length=20)) -> dict:
        return {"name": name, "colour": colour}

    app.include_router(router)

    @app.post("/direct", dependencies=[TokenDep])
    def direct(item: Item) -> Item:
        return item

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app


def client(**settings) -> TestClient:
    return TestClient(make_app(**settings), raise_server_exceptions=False)


ITEM = {"name": "a", "size": 1}


@pytest.mark.parametrize("path", ["/items", "/direct"])
def test_the_token_is_checked_before_the_body(path):
    c = client(api_token="tok")
    for body in ({"name": "", "size": "x"}, ITEM):
        r = c.post(path, json=body)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    for content, content_type in ((b"{not json", "application/json"), (b"not json", "text/plain")):
        r = c.post(path, content=content, headers={"Content-Type": content_type})
        assert_error(r, 401, "unauthorized")
    wrong = c.post(path, json=ITEM, headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "unauthorized")
    assert c.post(path, json=ITEM, headers={"Authorization": "Bearer tok"}).status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_under_another_content_type_is_415(content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client().post("/items", content=b'{"name": "a", "size": 1}', headers=headers)
    err = assert_error(r, 415, "unsupported_media_type")
    assert "application/json" in err["message"]


def test_json_content_types_with_parameters_are_accepted():
    c = client()
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = c.post("/items", content=b'{"name": "a", "size": 1}', headers={"Content-Type": content_type})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": "10"}, "body.size"),
        ({"size": True}, "body.size"),
        ({"size": 1.0}, "body.size"),
        ({"weight": "1.5"}, "body.weight"),
        ({"weight": False}, "body.weight"),
        ({"fragile": 1}, "body.fragile"),
        ({"fragile": "true"}, "body.fragile"),
        ({"name": 5}, "body.name"),
    ],
)
def test_json_types_are_strict(change, field):
    err = assert_error(client().post("/items", json=ITEM | change), 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == [field]


def test_an_integer_is_a_number_where_a_float_is_expected():
    assert client().post("/items", json=ITEM | {"weight": 2}).json()["weight"] == 2.0


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/items/a%00b", None, "path.name"),
        ("GET", "/items/a?colour=%00", None, "query.colour"),
        ("POST", "/items", ITEM | {"name": "a\u0000b"}, "body.name"),
        ("POST", "/items", ITEM | {"tags": {"a": ["ok", "x\u0000"]}}, "body.tags.a.1"),
    ],
)
def test_nul_characters_are_422_naming_the_field(method, path, body, field):
    err = assert_error(client().request(method, path, json=body), 422, "invalid_input")
    assert err["details"][0]["field"] == field


def test_unpaired_surrogates_are_422():
    r = client().post(
        "/items", content=b'{"name": "a\\ud800", "size": 1}', headers={"Content-Type": "application/json"}
    )
    assert assert_error(r, 422, "invalid_input")["details"][0]["field"] == "body.name"


def test_escaped_backslashes_are_plain_text():
    r = client().post("/items", json=ITEM | {"name": "C:\\u0000dir"})
    assert r.status_code == 200 and r.json()["name"] == "C:\\u0000dir"


def test_an_unknown_query_parameter_is_ignored_nul_or_not():
    assert client().get("/items/a?other=%00").status_code == 200


def test_a_body_that_does_not_arrive_in_time_is_408():
    app = make_app(body_timeout_s=0.2)
    messages = []

    async def receive():
        await anyio.sleep_forever()  # headers came; the body never does

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def call():
        with anyio.fail_after(30):  # against a hang, not a measurement
            await app(scope, receive, send)

    anyio.run(call)
    start = messages[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]


# -- on a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with serving(make_app(body_timeout_s=1.0)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_a_500_keeps_the_connection_open(server):
    with socket.create_connection(server, timeout=30) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 500 and b'"internal_error"' in body and b"secret" not in body
        assert headers.get("connection") != "close"
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection, still served
        assert read_response(sock)[0] == 200


def test_a_slow_body_is_408_and_the_connection_closed(server):
    with socket.create_connection(server, timeout=30) as sock:
        sock.sendall(
            b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"name": '
        )
        status, headers, body = read_response(sock)  # the server's timeout answers, not ours
        assert status == 408 and b'"request_timeout"' in body
        assert headers.get("connection") == "close"
        assert sock.recv(1) == b""
