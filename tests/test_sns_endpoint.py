"""The daemon's SNS endpoint confirms subscriptions for allowed topics, and only those.

moto confirms http subscriptions by itself, so the confirmation is signed here with a test
key; a local stand-in for the SNS host serves the certificate and records the confirmation
GET. The certificate and SubscribeURL host checks stay real (sns.<region>.amazonaws.com).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.daemon import free_port, http
from tests.test_sns_verify import TOPIC, confirmation, self_signed, sign


class FakeSnsHost:
    """Serves the signing certificate and answers ConfirmSubscription, in a thread."""

    def __init__(self, pem: bytes) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
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


@pytest.fixture
def sns_host():
    key, pem = self_signed(days=30)
    host = FakeSnsHost(pem)
    yield host, key
    host.server.shutdown()


def test_subscription_confirmed_only_for_allowed_topics(daemon_factory, make_settings, sns_host):
    host, key = sns_host
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
    url = f"http://127.0.0.1:{port}/sns"
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
