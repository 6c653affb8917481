"""Hostile input: never a 5xx, never a secret in an error or a log, a 4xx that names the field.

The fast tests drive the app in-process (TestClient) with a stand-in engine that fails the test
if a request reaches it, so validation and error rendering are checked without an index. One
real `lsr serve` (started once for the module) then takes every case of `eval.hostile_requests`
byte for byte over a socket, and its log is searched for tracebacks and the API key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from lsr.eval.hostile_requests import NON_FINITE, hostile_requests, problems, send
from lsr.eval.server_process import ServerProcess, free_port
from lsr.service.app import create_app
from lsr.service.settings import Settings

KEY = "hostile-test-key-5f3a9c"
JSON = {"content-type": "application/json", "x-api-key": KEY}


class RefusingEngine:
    """Stands in for `SearchEngine` where every request must be refused before the engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __getattr__(self, name):
        raise AssertionError(f"the request reached the engine (engine.{name})")


def _app_client(tmp_path, **settings) -> TestClient:
    """An app whose lifespan never runs (no index is opened): the stand-in engine answers."""
    app = create_app(Settings(index_dir=tmp_path, api_keys=KEY, warm_up=False, **settings))
    app.state.engine = RefusingEngine(app.state.settings)
    return TestClient(app)


@pytest.fixture
def client(tmp_path):
    return _app_client(tmp_path)


def _strict_json(text: str):
    """Parse as a strict JSON client would: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _refused(response, *loc) -> dict:
    """The 422's error whose loc ends with ``loc``; the body is strict JSON and echoes no input."""
    assert response.status_code == 422, response.text
    response.content.decode("utf-8")  # encodable: no lone surrogate
    errors = _strict_json(response.text)["detail"]
    assert all("input" not in error for error in errors)
    matching = [error for error in errors if tuple(error["loc"][-len(loc):]) == loc]
    assert matching, f"no error at {loc}: {errors}"
    return matching[0]


@pytest.mark.parametrize("field", ["alpha", "beta", "fusion_weight", "rrf_k", "k"])
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_numbers_are_422s_naming_the_field(client, field, value):
    body = f'{{"query": "cancer", "{field}": {value}}}'
    single = _refused(client.post("/search", content=body, headers=JSON), "body", field)
    if field not in ("rrf_k", "k"):  # integers say "valid integer"
        assert single["msg"] == "must be a finite number, not NaN or Infinity"
    batch = client.post("/search/batch", content=f'{{"searches": [{{"query": "x"}}, {body}]}}', headers=JSON)
    _refused(batch, "body", "searches", 1, field)


@pytest.mark.parametrize("path, body, field", [
    ("/search", r'{"query": "\ud800"}', "query"),
    ("/search", r'{"query": "stem \udfff cells"}', "query"),
    ("/search", r'{"query": "x", "mode": "\ud800"}', "mode"),
    ("/search/batch", r'{"searches": [{"query": "\udc00\ud800"}]}', "query"),
    ("/documents", r'{"id": "\ud800", "text": "x"}', "id"),
    ("/documents", r'{"id": "a", "title": "\ud800", "text": "x"}', "title"),
    ("/documents", r'{"id": "a", "text": "\ud800"}', "text"),
])
def test_lone_surrogates_are_422s_naming_the_field(client, path, body, field):
    error = _refused(client.post(path, content=body, headers=JSON), field)
    assert "surrogate" in error["msg"] or error["type"] == "literal_error"


def test_raw_surrogate_bytes_and_surrogate_keys_are_refused(client):
    raw = client.post("/search", content=b'{"query": "\xed\xa0\x80"}', headers=JSON)  # json.loads: surrogatepass
    _refused(raw, "body", "query")
    keyed = client.post("/search", content=r'{"query": "x", "\ud800": 1}', headers=JSON)
    _refused(keyed, "body")


def test_explain_parameters_name_the_field(client):
    _refused(client.get("/explain", params={"id": "x"}), "query", "query")
    _refused(client.get("/explain", params={"query": "x"}), "query", "id")
    _refused(client.get("/explain", params={"query": "a" * 4097, "id": "x"}), "query", "query")


@pytest.mark.parametrize("field, value, fragment", [
    ("k", "0", "greater than or equal to 1"), ("k", "1e308", "less than or equal to 1000"),
    ("k", "-1", "greater than or equal to 1"), ("k", "true", "valid integer"), ("k", '"10"', "valid integer"),
    ("k", "10.5", "valid integer"), ("k", "1e400", "valid integer"), ("k", "1" + "0" * 4000, "less than or equal"),
    ("alpha", "0", "greater than 0"), ("alpha", "2", "less than or equal to 1"), ("alpha", "1e-400", "greater than 0"),
    ("beta", "0", "greater than 0"), ("rrf_k", "1e20", "less than or equal to 10000"),
    ("rrf_k", "-1", "greater than or equal to 0"), ("fusion_weight", "1.5", "less than or equal to 1"),
    ("fusion_weight", "1" + "0" * 400, "valid number"), ("highlight", "1", "valid boolean"),
])
def test_numbers_out_of_range_or_of_the_wrong_type_name_the_field(client, field, value, fragment):
    error = _refused(client.post("/search", content=f'{{"query": "x", "{field}": {value}}}', headers=JSON), field)
    assert fragment in error["msg"]


def test_bodies_that_are_not_json_objects(client):
    for body in ('{"query":', "{'query': 'x'}", '{"query": "x",}', b'{"query": "\xff"}',
                 '{"query": "x", "k": 1' + "0" * 5000 + "}", "[" * 100_000 + "]" * 100_000,
                 '{"query": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        response = client.post("/search", content=body, headers=JSON)
        assert response.status_code == 400 and isinstance(response.json()["detail"], str), response.text
    assert "not valid JSON: Expecting value at character 9" in client.post(
        "/search", content='{"query":', headers=JSON).json()["detail"]
    for body in ("[]", "1", '"cancer"', "null", "true", "[" * 500 + "]" * 500):
        assert _refused(client.post("/search", content=body, headers=JSON), "body")["msg"] == \
            "the body must be a JSON object"
    assert _refused(client.post("/search", content=b"", headers=JSON), "body")["type"] == "missing"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=b", None])
@pytest.mark.parametrize("body", [b'{"query": "cancer"}', b"\xff\x00 not json", b"query=cancer"])
def test_bodies_not_sent_as_json_name_the_content_type(client, content_type, body):
    headers = {"x-api-key": KEY} | ({"content-type": content_type} if content_type else {})
    for path in ("/search", "/search/batch", "/documents"):
        error = _refused(client.post(path, content=body, headers=headers), "body")
        assert "Content-Type: application/json" in error["msg"]


def test_a_422_does_not_echo_the_input(client):
    text = "quokka " * 15_000  # over the 100,000-character limit
    response = client.post("/documents", json={"id": "a", "text": text}, headers={"x-api-key": KEY})
    assert _refused(response, "text")["ctx"] == {"max_length": 100_000}
    assert "quokka" not in response.text and len(response.content) < 500


def test_unknown_routes_and_methods(client):
    assert client.get("/nope").status_code == 404
    for method, path in [("PATCH", "/search"), ("FOO", "/search"), ("GET", "/search"), ("PUT", "/documents/x"),
                         ("POST", "/explain"), ("GET", "/documents")]:
        response = client.request(method, path)
        assert response.status_code == 405 and response.json()["detail"] == "Method Not Allowed"


def test_exhaustive_scorer_refuses_approximate_search_before_the_engine(tmp_path):
    client = _app_client(tmp_path, scorer="exhaustive")
    error = _refused(client.post("/search", json={"query": "x", "alpha": 0.5}), "body", "alpha")
    assert "exhaustive" in error["msg"]
    batch = client.post("/search/batch", json={"searches": [{"query": "x"}, {"query": "y", "beta": 0.9}]})
    _refused(batch, "body", "searches", 1, "beta")


@pytest.mark.parametrize("keys", ["secret-one,,secret-two", "secret-one,", ",secret-one", "secret-one, ,secret-two",
                                  "secret-one,\t"])
def test_an_empty_api_key_entry_fails_without_showing_any_key(tmp_path, monkeypatch, keys):
    with pytest.raises(ValidationError) as raised:
        Settings(index_dir=tmp_path, api_keys=keys)
    monkeypatch.setenv("LSR_INDEX_DIR", str(tmp_path))
    monkeypatch.setenv("LSR_API_KEYS", keys)
    with pytest.raises(ValidationError) as from_env:
        Settings()
    for error in (raised.value, from_env.value):  # what a traceback or a log line prints
        shown = str(error) + repr(error)
        assert "an API key entry is empty" in shown and "api_keys" in shown
        assert "secret" not in shown


def test_other_settings_errors_show_no_value(tmp_path):
    with pytest.raises(ValidationError) as raised:
        Settings(index_dir=tmp_path, api_keys="secret-one", max_body_bytes="secret-two")
    assert "max_body_bytes" in str(raised.value) and "secret" not in str(raised.value)


# against a real server

@pytest.fixture(scope="module")
def hostile_server(served_index_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    shutil.copytree(served_index_template, folder / "index")
    with ServerProcess(folder / "index", api_key=KEY, log_path=folder / "server.log") as server:
        yield server


def test_a_real_server_answers_every_hostile_request_without_a_server_error(hostile_server):
    cases = hostile_requests()
    failures, statuses = [], set()
    for case in cases:
        answer = send("127.0.0.1", hostile_server.port, case, api_key=KEY)
        statuses.add(answer.status)
        found = problems(case, answer) + (["the API key in the answer"] if KEY.encode() in answer.body else [])
        failures += [f"{case.name}: {problem} ({answer.body[:200]!r})" for problem in found]
    assert not failures, "\n".join(failures)
    assert {200, 400, 404, 405, 413, 422} <= statuses and max(statuses) < 500
    with urllib.request.urlopen(hostile_server.url + "/metrics", timeout=30) as metrics:
        text = metrics.read().decode()
    assert 'method="other"' in text and 'method="FOO"' not in text  # made-up methods add no labels
    log = hostile_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert KEY not in log


def test_the_exhaustive_scorer_with_a_real_engine_refuses_approximate_search(served_index):
    with TestClient(create_app(Settings(index_dir=served_index, scorer="exhaustive", warm_up=False))) as client:
        _refused(client.post("/search", json={"query": "stem cells", "alpha": 0.5}), "body", "alpha")
        assert client.post("/search", json={"query": "stem cells"}).status_code == 200


def test_serve_with_an_empty_api_key_entry_fails_without_showing_keys(served_index_template):
    env = {**os.environ, "LSR_API_KEYS": "topsecret-one,,topsecret-two"}
    command = [sys.executable, "-m", "lsr.cli", "serve", str(served_index_template), "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "an API key entry is empty" in output, output[-3000:]
    assert "topsecret" not in output
