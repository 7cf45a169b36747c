"""Hostile input to both listeners gets a 4xx with a JSON error body, never a 500 (and never
the wrong backup): the real daemon over real sockets."""

from __future__ import annotations

import json
import socket

import pytest

from tests.daemon import free_port, http
from tests.test_listener_limits import sns_section

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEEP = "[" * 60_000  # 60 KB, under the 64 KiB body limit


def raw_exchange(port: int, request: bytes) -> tuple[int, dict]:
    """Send ``request`` as is; return the answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, body = answer.split(b"\r\n\r\n", 1)
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"application/json" in head.lower(), answer
    return int(head.split()[1]), json.loads(body)


def assert_json_error(response, status: int, words: str) -> None:
    assert response.status == status, (response.status, response.body[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and words in body["error"], body


@pytest.fixture
def api(daemon_factory, make_settings):
    """A daemon whose control API needs a token; yields it and its port, then checks that
    nothing a test sent caused an internal error."""
    d = daemon_factory(
        make_settings(api={"token_env": "TEST_HOSTILE_TOKEN"}),
        env={"TEST_HOSTILE_TOKEN": TOKEN},
    )
    yield d, int(d.base.rsplit(":", 1)[1])
    assert d.request("GET", "/health").status == 200
    d.stop()
    assert "Traceback" not in d.logs()
    assert not [e for e in d.events() if e.get("level") == "error"]


ARABIC_ONE = "%D9%A1"  # "١", which str.isdigit() accepts and int() reads as 1
SUPERSCRIPT_TWO = "%C2%B2"  # "²": isdigit() is true, int() raises
HUGE = "9" * 5000  # int() refuses more than 4300 digits


def test_ids_are_plain_ascii_numbers_in_range(api):
    d, _ = api
    first = d.request("POST", "/backups", headers=AUTH).json()["id"]
    assert first == 1
    d.wait_for(
        lambda: d.request("GET", "/backups/1", headers=AUTH).json()["status"] == "completed",
        what="backup 1 to complete",
    )
    for method, path in [
        ("GET", f"/backups/{ARABIC_ONE}"),
        ("DELETE", f"/backups/{ARABIC_ONE}"),
        ("GET", f"/backups/{SUPERSCRIPT_TWO}"),
        ("GET", f"/backups/{HUGE}"),
        ("GET", "/backups/9223372036854775808"),  # one past the largest bigint
        ("POST", f"/backups/{HUGE}/restore"),
        ("GET", f"/restores/{ARABIC_ONE}"),
    ]:
        assert_json_error(d.request(method, path, headers=AUTH), 400, "not a valid id")
    # backup 1 is still there: "DELETE /backups/١" did not delete it
    assert [b["id"] for b in d.request("GET", "/backups", headers=AUTH).json()["backups"]] == [1]


def test_limit_is_a_plain_ascii_number_in_range(api):
    d, _ = api
    for limit in (ARABIC_ONE, SUPERSCRIPT_TWO, HUGE, "0", "10001", "1e3"):
        r = d.request("GET", f"/backups?limit={limit}", headers=AUTH)
        assert_json_error(r, 400, "limit must be a whole number")
    assert d.request("GET", "/backups?limit=10000", headers=AUTH).status == 200


def test_a_non_ascii_byte_in_the_token_is_a_wrong_token(api):
    d, _ = api
    # urllib sends header values as latin-1: this is the byte 0xff
    for sent in ("Bearer \xff", f"Bearer {TOKEN}\xff", "\xff"):
        r = d.request("GET", "/backups", headers={"Authorization": sent})
        assert_json_error(r, 401, "bearer token")


def test_deeply_nested_json_is_a_bad_request(api):
    d, _ = api
    for path in ("/backups", "/backups/1/restore", "/backups/1/retrieve"):
        r = d.request("POST", path, raw=DEEP, headers={**AUTH, "Content-Type": "application/json"})
        assert_json_error(r, 400, "nested deeper than")
    assert d.request("GET", "/backups", headers=AUTH).json()["backups"] == []


def test_host_must_be_exactly_a_loopback_name(api):
    d, port = api
    for host in ("localhost:80@evil.example", "localhost.evil.example", "127.0.0.1@evil", "::1"):
        r = d.request("GET", "/backups", headers={**AUTH, "Host": host})
        assert_json_error(r, 403, "not a loopback name")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert d.request("GET", "/backups", headers={**AUTH, "Host": host}).status == 200, host


def test_absolute_form_request_targets_are_refused(api):
    _, port = api
    for target in ("http://evil.example/backups", f"http://127.0.0.1:{port}/backups"):
        status, body = raw_exchange(
            port,
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert (status, body["status"]) == (403, 403) and "absolute" in body["error"], body


def test_unparseable_http_gets_a_json_400_without_a_traceback(api):
    d, port = api
    for request in (
        b"GET /backups HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
        b"GET /backups HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n",
        b"GET /backups HTTP/9\r\n\r\n",
    ):
        status, body = raw_exchange(port, request)
        assert (status, body["status"]) == (400, 400), body
        assert "malformed HTTP" in body["error"], body
    # one log line for the lot, not one per request
    malformed = [e for e in d.events() if e.get("event") == "listener.malformed_requests"]
    assert len(malformed) == 1 and malformed[0]["listener"] == "api", malformed


def test_sns_endpoint_answers_hostile_requests_with_4xx(daemon_factory, make_settings):
    sns_port = free_port()
    d = daemon_factory(make_settings(sns=sns_section(sns_port)))
    url = f"http://127.0.0.1:{sns_port}/sns"

    r = d.request("GET", "/health")  # the control API is elsewhere and fine
    assert r.status == 200
    r = http("POST", url, DEEP, {"x-amz-sns-message-type": "Notification"})
    assert_json_error(r, 400, "nested deeper than")
    status, body = raw_exchange(sns_port, b"POST /sns HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n")
    assert (status, body["status"]) == (400, 400) and "malformed HTTP" in body["error"], body

    rejected = [e for e in d.events() if e.get("event") == "sns.rejected"]
    assert [e["status"] for e in rejected] == [400], rejected
    d.stop()
    assert "Traceback" not in d.logs()
    assert not [e for e in d.events() if e.get("level") == "error"]
