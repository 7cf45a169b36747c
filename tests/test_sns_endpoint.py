"""The daemon's SNS endpoint confirms subscriptions for allowed topics, and only those.

moto confirms http subscriptions by itself, so the confirmation is signed here with a test
key; a local stand-in for the SNS host serves the certificate and records the confirmation
GET. The certificate and SubscribeURL host checks stay real (sns.<region>.amazonaws.com).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from glacierd.api.sns import sns_app
from glacierd.notifications.sns import SnsVerifier
from glacierd.operations.retrieval import no_follow_up
from tests.daemon import Daemon, free_port, http
from tests.test_sns_verify import (
    TOPIC,
    confirmation,
    notification,
    self_signed,
    serve,
    sign,
)


class FakeSnsHost:
    """Serves the signing certificate and answers ConfirmSubscription, in a thread."""

    def __init__(self, pem: bytes) -> None:
        self.paths: list[str] = []
        self.confirm_status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                status = 200
                body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                if "forged" in self.path:  # a certificate AWS never published
                    status, body = 404, b"<Error><Code>NotFound</Code></Error>"
                elif not self.path.endswith(".pem"):
                    status = outer.confirm_status
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def confirmations(self) -> list[str]:
        return [p for p in self.paths if "Action=ConfirmSubscription" in p]

    def certificate_fetches(self) -> list[str]:
        return [p for p in self.paths if p.endswith(".pem")]


@pytest.fixture
def sns_host():
    key, pem = self_signed(days=30)
    host = FakeSnsHost(pem)
    yield host, key
    host.server.shutdown()


def sns_daemon(daemon_factory, make_settings, host: FakeSnsHost) -> tuple[Daemon, str]:
    port = free_port()
    d = daemon_factory(
        make_settings(
            sns={
                "enabled": True,
                "host": "127.0.0.1",
                "port": port,
                "path": "/sns",
                "topic_arns": [TOPIC],
                "cert_url_override": host.url,
            }
        )
    )
    return d, f"http://127.0.0.1:{port}/sns"


def rejections(d: Daemon) -> list[tuple[int, str]]:
    return [(e["status"], e["reason"]) for e in d.events() if e.get("event") == "sns.rejected"]


def test_subscription_confirmed_only_for_allowed_topics(daemon_factory, make_settings, sns_host):
    host, key = sns_host
    d, url = sns_daemon(daemon_factory, make_settings, host)
    port = int(url.split(":")[2].split("/")[0])
    headers = {"x-amz-sns-message-type": "SubscriptionConfirmation"}

    other = "arn:aws:sns:us-east-1:123456789012:someone-else"
    r = http("POST", url, json.dumps(sign(confirmation(TopicArn=other), key)), headers)
    assert r.status == 403 and host.confirmations() == []

    forged = sign(confirmation(), rsa.generate_private_key(public_exponent=65537, key_size=2048))
    r = http("POST", url, json.dumps(forged), headers)
    assert r.status == 403 and host.confirmations() == []

    r = http("POST", url, json.dumps(sign(confirmation(), key)), headers)
    assert r.status == 200, r.body
    assert r.json() == {"confirmed": True}
    assert len(host.confirmations()) == 1
    assert "Token=2336412f37fb" in host.confirmations()[0]
    assert any(e.get("event") == "sns.subscription_confirmed" for e in d.events())
    # Only the SNS path exists on this listener; the control API is elsewhere.
    assert http("GET", f"http://127.0.0.1:{port}/backups").status == 404
    d.stop()


def test_failed_confirmation_is_a_502_not_an_internal_error(
    daemon_factory, make_settings, sns_host
):
    host, key = sns_host
    host.confirm_status = 500  # SNS's ConfirmSubscription fails on AWS's side
    d, url = sns_daemon(daemon_factory, make_settings, host)
    headers = {"x-amz-sns-message-type": "SubscriptionConfirmation"}
    r = http("POST", url, json.dumps(sign(confirmation(), key)), headers)
    assert r.status == 502, r.body
    assert r.json()["status"] == 502 and "answered HTTP 500" in r.json()["error"]
    assert len(host.confirmations()) == 1
    assert [status for status, _ in rejections(d)] == [502]
    d.stop()
    assert "Traceback" not in d.logs()


def test_oversize_body_is_refused_and_logged(daemon_factory, make_settings, sns_host):
    host, _ = sns_host
    d, url = sns_daemon(daemon_factory, make_settings, host)
    r = http("POST", url, b"{" + b" " * (256 * 1024 + 10) + b"}")
    assert r.status == 413 and r.json()["status"] == 413, r.body
    assert "256 KiB" in r.json()["error"]
    [(status, reason)] = rejections(d)
    assert status == 413 and "256 KiB" in reason
    d.stop()


def test_forged_certificate_urls_are_403_and_fetched_a_few_times_only(
    daemon_factory, make_settings, sns_host
):
    """A forged message naming a certificate the SNS host does not have is a forgery (403,
    which SNS never retries), not an outage (502). 200 of them, each naming its own URL, cost
    10 outbound fetches; the rest are answered 503 without any."""
    host, key = sns_host
    d, url = sns_daemon(daemon_factory, make_settings, host)
    headers = {"x-amz-sns-message-type": "Notification"}
    statuses = Counter()
    for i in range(200):
        cert = f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-forged{i}.pem"
        r = http("POST", url, json.dumps(sign(notification(SigningCertURL=cert), key)), headers)
        assert r.json()["status"] == r.status
        statuses[r.status] += 1
    assert statuses == {403: 10, 503: 190}
    assert len(host.certificate_fetches()) == 10
    # the same forged URL again: remembered, not fetched again
    cert = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-forged0.pem"
    r = http("POST", url, json.dumps(sign(notification(SigningCertURL=cert), key)), headers)
    assert r.status == 403 and "not fetched again" in r.json()["error"]
    assert len(host.certificate_fetches()) == 10
    d.stop()


class CountingVerifier(SnsVerifier):
    verified = 0

    async def verify(self, msg: Mapping[str, Any]) -> None:
        self.verified += 1
        await super().verify(msg)


async def test_a_confirmation_is_verified_once(ctx, sns_host):
    host, key = sns_host
    verifier = CountingVerifier(
        [TOPIC], cert_url_override=host.url, subscribe_url_override=host.url
    )
    async with (
        verifier,
        serve(sns_app(ctx, verifier, "/sns", on_ready=no_follow_up)) as base,
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/sns",
            data=json.dumps(sign(confirmation(), key)),
            headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    assert verifier.verified == 1
    assert len(host.confirmations()) == 1
