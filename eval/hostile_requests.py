"""Hostile requests for the search service, as data, and a raw-socket client to send them.

Each `HostileRequest` is sent byte for byte over a socket, because a client library would refuse
or rewrite many of them (``NaN`` in JSON, invalid UTF-8 or ``..`` in a path, made-up methods).
Each carries the statuses that are right for it on a server with default settings, one API key
and an index with a dense part, and for a 422 the field its ``loc`` must name. `problems` says
what is wrong with an answer: above all any 5xx, which client input must never cause.

    from lsr.eval.hostile_requests import hostile_requests, send, problems
    for case in hostile_requests():
        answer = send("127.0.0.1", port, case, api_key="...")
        assert not problems(case, answer), case.name
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_MAX_BODY_BYTES = 2_000_000  # service.schemas.DEFAULT_MAX_BODY_BYTES (eval does not import service)
NON_FINITE = ("NaN", "Infinity", "-Infinity")
SURROGATES = (r"\ud800", r"a\udfffb", r"\udc00\ud800")  # JSON escapes of lone (and reversed) surrogates
DEEP = 100_000  # nesting depth of the deep bodies, far under the body limit (200 kB)
LONG_ID = "a" * 10_000
OK, REFUSED, NOT_JSON = frozenset({200}), frozenset({422}), frozenset({400})
FOUND_OR_NOT = frozenset({200, 404})  # a well-formed id: the document may or may not exist


@dataclass(frozen=True)
class HostileRequest:
    """One request, sent as is.

    Args:
        name: what it tries, for reports (``search: alpha=NaN``).
        method: the request method, any token.
        target: the raw request target (path and query), bytes a client library may refuse.
        body: the raw body.
        content_type: the Content-Type header; None sends none.
        statuses: the right answers (with default settings).
        field: the name a 422's ``loc`` must hold (``alpha``, ``body``).
        api_key: send the server's API key in ``X-API-Key``.
        headers: further raw headers.
        declared_length: a Content-Length to declare instead of ``len(body)``.
        chunked: send the body with chunked transfer encoding (no Content-Length) and no final
            chunk, so a server that stops reading at its limit leaves nothing unread.
    """

    name: str
    method: str
    target: bytes
    body: bytes = b""
    content_type: str | None = "application/json"
    statuses: frozenset = REFUSED
    field: str | None = None
    api_key: bool = False
    headers: tuple = ()
    declared_length: int | None = None
    chunked: bool = False


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes


# building the list

def _batch(body: bytes) -> bytes:
    return b'{"searches": [' + body + b"]}"


def _search_pair(name: str, body: bytes, statuses=REFUSED, field: str | None = None) -> list[HostileRequest]:
    """The same search alone (POST /search) and inside a batch (POST /search/batch)."""
    return [HostileRequest(f"search: {name}", "POST", b"/search", body, statuses=statuses, field=field),
            HostileRequest(f"batch: {name}", "POST", b"/search/batch", _batch(body), statuses=statuses, field=field)]


def _search_field_cases() -> list[HostileRequest]:
    """Bad values of each search field: non-finite numbers, bounds, types, lone surrogates."""
    values = [(field, value) for field in ("alpha", "beta", "fusion_weight", "rrf_k", "k") for value in NON_FINITE]
    values += [("k", "0"), ("k", "-1"), ("k", "1001"), ("k", "1e308"), ("k", "1e400"), ("k", "10.5"), ("k", "true"),
               ("k", '"10"'), ("k", "null"), ("k", "[]"), ("k", "{}"), ("k", "1" + "0" * 4000),
               ("alpha", "0"), ("alpha", "2"), ("alpha", "-0.0"), ("alpha", '"1"'), ("alpha", "1e-400"),
               ("beta", "0"), ("beta", "1.5"), ("beta", "true"), ("rrf_k", "1e20"), ("rrf_k", "-1"), ("rrf_k", "0.5"),
               ("fusion_weight", "-0.1"), ("fusion_weight", "1.1"), ("fusion_weight", "1" + "0" * 400),
               ("mode", '"fuzzy"'), ("mode", "1"), ("mode", r'"\ud800"'), ("fusion", '"x"'),
               ("normalization", '"none"'), ("include_text", '"true"'), ("include_text", "1"), ("highlight", "null")]
    cases = []
    for field, value in values:
        cases += _search_pair(f"{field}={value[:20]}", f'{{"query": "cancer", "{field}": {value}}}'.encode(),
                              field=field)
    for text in SURROGATES:
        cases += _search_pair(f"query={text}", f'{{"query": "{text}"}}'.encode(), field="query")
    cases += _search_pair("query holds raw CESU-8 surrogate bytes", b'{"query": "\xed\xa0\x80"}', field="query")
    for name, body, field in [("query empty", b'{"query": ""}', "query"),
                              ("query over 4096 characters", b'{"query": "' + b"a" * 4097 + b'"}', "query"),
                              ("query null", b'{"query": null}', "query"), ("query a number", b'{"query": 1}', "query"),
                              ("query missing", b'{"k": 10}', "query"),
                              ("unknown field", b'{"query": "x", "colour": "red"}', "colour"),
                              ("unknown field holding NaN", b'{"query": "x", "score": NaN}', "score"),
                              ("unknown field named by a surrogate", b'{"query": "x", "\\ud800": 1}', "body")]:
        cases += _search_pair(name, body, field=field)
    return cases


def _valid_odd_searches() -> list[HostileRequest]:
    """Valid searches with odd text or extreme settings: 200 (or 409 without a dense part)."""
    queries = [" ", r"\u0000", "\\ud83d\\ude00 \\u2603", "[CLS] [SEP] [MASK] [PAD] [UNK]", "a\\u0301" * 50,
               "\\u05e9\\u05dc\\u05d5\\u05dd \\u202e abc", "\\u4e2d" * 4096, "protein " * 511]
    cases = []
    for n, query in enumerate(queries):
        cases += _search_pair(f"odd query {n}", json.dumps({"query": "Q"}).replace("Q", query).encode(), OK)
    cases += _search_pair("approximate BMP", b'{"query": "cancer", "alpha": 0.01, "beta": 0.01}', OK)
    cases += _search_pair("integral float k", b'{"query": "cancer", "k": 3.0}', OK)
    for fusion in (b'"rrf", "rrf_k": 0', b'"convex", "normalization": "zscore", "fusion_weight": 0'):
        body = b'{"query": "cancer", "k": 1000, "mode": "hybrid", "highlight": true, "include_text": true, ' \
               b'"fusion": ' + fusion + b"}"
        cases += _search_pair(f"hybrid k=1000 {fusion[:8].decode()}", body, frozenset({200, 409}))
    return cases


def _body_cases(method: str, target: bytes, api_key: bool, valid: bytes) -> list[HostileRequest]:
    """Bodies that are not JSON objects, not JSON, not sent as JSON, nested deep or too large."""
    deep = b"[" * DEEP + b"]" * DEEP
    cases = [("invalid JSON", b'{"query":', "application/json", NOT_JSON, None),
             ("single quotes", b"{'query': 'x'}", "application/json", NOT_JSON, None),
             ("trailing comma", valid[:-1] + b",}", "application/json", NOT_JSON, None),
             ("invalid UTF-8", b'{"query": "\xff\xfe"}', "application/json", NOT_JSON, None),
             ("integer of 5000 digits", b'{"query": "x", "k": 1' + b"0" * 5000 + b"}", "application/json",
              NOT_JSON, None),
             ("empty body", b"", "application/json", REFUSED, "body"),
             (f"list nested {DEEP} deep", deep, "application/json", NOT_JSON, None),
             (f"field nested {DEEP} deep", b'{"query": ' + deep + b"}", "application/json", NOT_JSON, None),
             ("objects nested 100000 deep", b'{"a": ' * DEEP + b"1" + b"}" * DEEP, "application/json", NOT_JSON,
              None),
             ("list nested 500 deep", b"[" * 500 + b"]" * 500, "application/json", frozenset({400, 422}), "body"),
             ("JSON text/plain", valid, "text/plain", REFUSED, "body"),
             ("garbage text/plain", b"\xff\x00 not json", "text/plain", REFUSED, "body"),
             ("form-urlencoded", b"query=cancer&k=3", "application/x-www-form-urlencoded", REFUSED, "body"),
             ("multipart", b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\ncancer\r\n--b--\r\n',
              "multipart/form-data; boundary=b", REFUSED, "body"),
             ("JSON without a content type", valid, None, REFUSED, "body"),
             ("garbage without a content type", b"\x00\x01\x02", None, REFUSED, "body"),
             ("a +json content type", valid, "application/vnd.lsr+json", OK, None),
             ("content type with a charset", valid, "application/json; charset=utf-8", OK, None),
             ("UTF-16 JSON", valid.decode().encode("utf-16"), "application/json", OK, None)]
    cases += [(f"JSON {name}", text, "application/json", REFUSED, "body")
              for name, text in [("list", b"[]"), ("list of objects", b"[" + valid + b"]"), ("number", b"1"),
                                 ("string", b'"cancer"'), ("null", b"null"), ("true", b"true")]]
    out = [HostileRequest(f"{target.decode()}: {name}", method, target, body, content_type, statuses, field, api_key)
           for name, body, content_type, statuses, field in cases]
    too_large = frozenset({413})
    out += [HostileRequest(f"{target.decode()}: declared over the body limit", method, target, b"", statuses=too_large,
                           api_key=api_key, declared_length=DEFAULT_MAX_BODY_BYTES + 1),
            HostileRequest(f"{target.decode()}: chunked over the body limit", method, target,
                           b'{"query": "' + b"a" * DEFAULT_MAX_BODY_BYTES + b'"}', statuses=too_large, api_key=api_key,
                           chunked=True)]
    return out


def _document_cases() -> list[HostileRequest]:
    """POST /documents with the key: bad ids, titles and texts; odd but valid ids are added."""
    bad = [("id", r'"\ud800"'), ("title", r'"\ud800"'), ("text", r'"a\udfffb"'), ("id", '""'), ("id", r'"a\nb"'),
           ("id", r'"\u0000"'), ("id", json.dumps("a" * 257)), ("id", json.dumps(LONG_ID)), ("id", "null"),
           ("id", "1"), ("title", json.dumps("t" * 10_001)), ("text", '""'), ("text", json.dumps("w " * 50_001)),
           ("text", "NaN"), ("title", "Infinity"), ("score", "NaN")]
    cases = []
    for field, value in bad:
        body = {"id": '"hostile"', "text": '"some text"', field: value}
        raw = "{" + ", ".join(f'"{key}": {val}' for key, val in body.items()) + "}"
        cases.append(HostileRequest(f"add: {field}={value[:20]}", "POST", b"/documents", raw.encode(), field=field,
                                    api_key=True))
    cases.append(HostileRequest("add: text missing", "POST", b"/documents", b'{"id": "x"}', field="text", api_key=True))
    for doc_id in ("../../etc/passwd", "a/b/c", "%2e%2e%2f", "..", "\u00fc \U0001f600", " "):
        cases.append(HostileRequest(f"add: id {doc_id!r}", "POST", b"/documents",
                                    json.dumps({"id": doc_id, "text": "hostile id"}).encode(), statuses=OK,
                                    api_key=True))
    cases.append(HostileRequest("add: bad body without a key", "POST", b"/documents", b'{"id": NaN}',
                                statuses=frozenset({401})))
    return cases


def _path_cases() -> list[HostileRequest]:
    """GET and DELETE /documents/{id} with hostile ids; the raw ones a client would rewrite."""
    ids = [b"%ED%A0%80", b"%FF", b"%C0%AF", b"%00", b"%", b"%zz", LONG_ID.encode(), b"../../etc/passwd", b"a/b/c",
           b"%2e%2e%2f", b"..%2F..%2Fetc%2Fpasswd", b"%2F", b"", b"x?id=%ED%A0%80", b"x#frag"]
    cases = []
    for doc_id in ids:
        cases += [HostileRequest(f"get: /documents/{doc_id[:30]!r}", "GET", b"/documents/" + doc_id,
                                 content_type=None, statuses=FOUND_OR_NOT),
                  HostileRequest(f"delete: /documents/{doc_id[:30]!r}", "DELETE", b"/documents/" + doc_id,
                                 content_type=None, statuses=FOUND_OR_NOT, api_key=True)]
    invalid_target = frozenset({400})  # refused by the HTTP parser: a target is visible ASCII
    for raw in (b"\xff", b"\xed\xa0\x80", b"\xc3\xbc", b"a b"):
        cases += [HostileRequest(f"{method}: raw bytes {raw!r} in the path", method, b"/documents/" + raw,
                                 content_type=None, statuses=invalid_target, api_key=True)
                  for method in ("GET", "DELETE")]
    cases.append(HostileRequest("delete: no key", "DELETE", b"/documents/x", content_type=None,
                                statuses=frozenset({401})))
    return cases


def _explain_cases() -> list[HostileRequest]:
    """GET /explain: bad or missing parameters (422) and odd ones for an unknown id (404)."""
    long_query = b"a" * 4097
    refused = [(b"query=&id=x", "query"), (b"id=x", "query"), (b"query=cancer", "id"), (b"query=cancer&id=", "id"),
               (b"query=" + long_query + b"&id=x", "query"), (b"", "query")]
    odd = [b"query=%ED%A0%80&id=x", b"query=%FF&id=x", b"query=%00&id=x", b"query=%&id=x", b"query=cancer&id=%ED%A0%80",
           b"query=cancer&id=" + LONG_ID.encode(), b"query=a&query=b&id=x&id=y", b"query=cancer&id=..%2F..%2Fetc",
           b"query=" + b"%E4%B8%AD" * 4096 + b"&id=x", b"query=cancer&id=x&unknown=1"]
    cases = [HostileRequest(f"explain: {query[:40]!r}", "GET", b"/explain?" + query, content_type=None, field=field)
             for query, field in refused]
    cases += [HostileRequest(f"explain: {query[:40]!r}", "GET", b"/explain?" + query, content_type=None,
                             statuses=FOUND_OR_NOT) for query in odd]
    return cases


def _route_and_protocol_cases() -> list[HostileRequest]:
    """Unknown routes and methods, odd targets and headers, malformed HTTP."""
    not_allowed = frozenset({405})
    cases = [HostileRequest("unknown route", "GET", b"/nope", content_type=None, statuses=frozenset({404})),
             HostileRequest("unknown route with a body", "POST", b"/nope", b"{}", statuses=frozenset({404})),
             HostileRequest("long unknown route", "GET", b"/" + b"x" * 8000, content_type=None,
                            statuses=frozenset({404})),
             HostileRequest("trailing slash", "POST", b"/search/", b'{"query": "x"}', statuses=frozenset({307, 404})),
             HostileRequest("asterisk target", "OPTIONS", b"*", content_type=None, statuses=frozenset({400, 404})),
             HostileRequest("absolute-form target", "GET", b"http://example.com/health", content_type=None,
                            statuses=frozenset({200, 400, 404})),
             HostileRequest("HEAD /health", "HEAD", b"/health", content_type=None, statuses=frozenset({200, 405})),
             HostileRequest("API key with non-ASCII bytes", "POST", b"/documents", b'{"id": "k", "text": "x"}',
                            headers=((b"X-API-Key", b"\xff\xfe\x80"),), statuses=frozenset({403})),
             HostileRequest("empty API key", "POST", b"/documents", b'{"id": "k", "text": "x"}',
                            headers=((b"X-API-Key", b""),), statuses=frozenset({401})),
             HostileRequest("API key of 8000 bytes", "DELETE", b"/documents/x", content_type=None,
                            headers=((b"X-API-Key", b"k" * 8000),), statuses=frozenset({403})),
             HostileRequest("Content-Length not a number", "POST", b"/search", b'{"query": "x"}',
                            headers=((b"Content-Length", b"abc"),), statuses=frozenset({400, 413})),
             HostileRequest("header of 20 kB", "GET", b"/health", content_type=None,
                            headers=((b"X-Filler", b"f" * 20_000),), statuses=frozenset({200, 400, 431})),
             HostileRequest("NUL in a header", "GET", b"/health", content_type=None,
                            headers=((b"X-Filler", b"a\x00b"),), statuses=frozenset({400}))]
    for method, target in [("PATCH", b"/search"), ("DELETE", b"/search"), ("GET", b"/search"), ("PUT", b"/documents/x"),
                           ("FOO", b"/search"), ("TRACE", b"/health"), ("OPTIONS", b"/search"), ("GET", b"/documents"),
                           ("POST", b"/explain"), ("POST", b"/health")]:
        cases.append(HostileRequest(f"{method} {target.decode()}", method, target, content_type=None,
                                    statuses=not_allowed))
    return cases


def hostile_requests() -> list[HostileRequest]:
    """Every case, in an order where writes (odd ids added) come before the reads of those ids."""
    valid = b'{"query": "cancer", "k": 3}'
    document = b'{"id": "body-case", "text": "x"}'
    return (_search_field_cases() + _valid_odd_searches()
            + _body_cases("POST", b"/search", False, valid) + _body_cases("POST", b"/search/batch", False, _batch(valid))
            + _body_cases("POST", b"/documents", True, document)
            + _document_cases() + _path_cases() + _explain_cases() + _route_and_protocol_cases())


# sending and checking

def _request_bytes(case: HostileRequest, host: str, api_key: str | None) -> bytes:
    lines = [case.method.encode() + b" " + case.target + b" HTTP/1.1", b"Host: " + host.encode(), b"Connection: close"]
    if case.content_type is not None:
        lines.append(b"Content-Type: " + case.content_type.encode())
    if case.api_key and api_key:
        lines.append(b"X-API-Key: " + api_key.encode())
    declared = any(name.lower() == b"content-length" for name, _ in case.headers)
    if case.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif not declared and (case.body or case.declared_length is not None or case.method in ("POST", "PUT")):
        lines.append(b"Content-Length: " + str(case.declared_length if case.declared_length is not None
                                               else len(case.body)).encode())
    lines += [name + b": " + value for name, value in case.headers]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if not case.chunked:
        return head + case.body
    step = 65_536  # no final chunk: see HostileRequest.chunked
    return head + b"".join(b"%x\r\n" % len(case.body[i:i + step]) + case.body[i:i + step] + b"\r\n"
                           for i in range(0, len(case.body), step))


def send(host: str, port: int, case: HostileRequest, api_key: str | None = None, timeout: float = 60.0) -> Answer:
    """Send one case on a new connection; the answer's status, content type and body."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        try:
            connection.sendall(_request_bytes(case, host, api_key))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything: read that answer
        response = http.client.HTTPResponse(connection, method=case.method)
        response.begin()
        body = response.read() if case.method != "HEAD" else b""
        return Answer(response.status, response.getheader("content-type") or "", body)


def problems(case: HostileRequest, answer: Answer) -> list[str]:
    """What is wrong with an answer: a 5xx, an unexpected status, a 422 that does not name the
    field, a JSON error without ``detail``."""
    found = []
    if answer.status >= 500:
        found.append(f"server error {answer.status}")
    if answer.status not in case.statuses:
        found.append(f"status {answer.status}, expected one of {sorted(case.statuses)}")
    if not answer.content_type.startswith("application/json") or case.method == "HEAD":
        return found + (["a 422 that is not JSON"] if answer.status == 422 else [])
    try:
        payload = json.loads(answer.body)
    except ValueError:
        return found + ["a JSON content type with a body that is not JSON"]
    if answer.status >= 400 and not (isinstance(payload, dict) and "detail" in payload):
        found.append("an error without detail")
    elif answer.status == 422:
        details = payload["detail"] if isinstance(payload["detail"], list) else []
        locs = [[str(part) for part in item.get("loc", [])] for item in details if isinstance(item, dict)]
        if not locs or (case.field is not None and not any(case.field in loc for loc in locs)):
            found.append(f"a 422 whose loc does not name {case.field!r}: {locs}")
    return found
