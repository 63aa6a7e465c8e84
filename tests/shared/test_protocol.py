"""HTTP as a REST client expects it (issue 20, items 8 and 11): JSON nested too deep is a 422 however it is
written; a path with a trailing slash is a JSON 404, not an empty 307; a 405 names every method of its
path in Allow; the token is checked before a declared size over the limit."""

import socket

import pytest
from fastapi.testclient import TestClient

from services.profiler.main import create_app as profiler_app
from services.search.main import create_app as search_app
from services.trainer.main import create_app as trainer_app
from tests.shared.test_api import assert_error
from tests.shared.test_checked_bodies import make_app as bags_app
from tests.shared.test_checked_bodies import serving
from tests.shared.test_guard import ITEM, client, make_app, read_response


@pytest.mark.parametrize("depth", [900, 5_000, 200_000])  # the last over SMALL_BODY: in a checker
@pytest.mark.parametrize("leaf", [b"1", b'"\\u0041"'])
def test_deep_nesting_is_a_422_with_or_without_an_escape(depth, leaf):
    # a \u escape sends the body through json.loads (for NUL characters), whose recursion stops first
    content = b'{"items": ' + b"[" * depth + leaf + b"]" * depth + b"}"
    r = TestClient(bags_app()).post("/bags", content=content, headers={"Content-Type": "application/json"})
    err = assert_error(r, 422, "invalid_input")
    assert err["details"][0]["field"] == "body" and "recursion limit" in err["details"][0]["message"]


def test_nesting_within_the_limit_is_still_checked_for_nul():
    deep = {"a": [[[[["x\u0000"]]]]]}
    r = client().post("/items", json=ITEM | {"tags": deep})
    assert assert_error(r, 422, "invalid_input")["details"][0]["field"] == "body.tags.a.0.0.0.0.0"


APPS = {"profiler": profiler_app, "search": search_app, "trainer": trainer_app}


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [("trainer", "POST", "/v1/jobs/"), ("profiler", "GET", "/v1/jobs/"), ("search", "POST", "/v1/search/")],
)
def test_a_trailing_slash_is_a_404_naming_the_path(sqlite_settings, service, method, path):
    r = TestClient(APPS[service](sqlite_settings)).request(method, path, follow_redirects=False)
    err = assert_error(r, 404, "not_found")
    assert path in err["message"] and "without a slash" in err["message"]


@pytest.mark.parametrize(
    ("service", "method", "path", "allowed"),
    [
        ("trainer", "OPTIONS", "/v1/jobs", "GET, POST"),
        ("trainer", "DELETE", "/v1/jobs", "GET, POST"),
        ("trainer", "OPTIONS", "/v1/jobs/abc", "GET"),
        ("profiler", "PUT", "/v1/luts", "GET, POST"),
        ("search", "OPTIONS", "/v1/search", "POST"),
        ("search", "OPTIONS", "/healthz", "GET"),
    ],
)
def test_a_405_lists_every_method_of_its_path(sqlite_settings, service, method, path, allowed):
    r = TestClient(APPS[service](sqlite_settings)).request(method, path)
    err = assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allowed
    assert method in err["message"] and allowed in err["message"]


def test_the_token_is_checked_before_a_body_over_the_limit():
    c = client(api_token="tok")
    big = ITEM | {"name": "a" * 5000}  # over the test app's 2048 bytes, with its Content-Length
    assert_error(c.post("/items", json=big), 401, "unauthorized")
    r = c.post("/items", json=big, headers={"Authorization": "Bearer tok"})
    assert_error(r, 413, "payload_too_large")


def test_a_declared_size_over_the_limit_is_refused_unread_after_the_token():
    head = "POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Content-Length: 1000000000\r\n"
    with serving(make_app(api_token="tok")) as url:
        host, port = url.removeprefix("http://").split(":")
        for auth, status in (("", 401), ("Authorization: Bearer tok\r\n", 413)):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(f"{head}{auth}\r\n".encode())  # and not a byte of the body
                assert read_response(sock)[0] == status
