"""SNS message parsing and signature verification (glacierd.notifications.sns).

Messages are signed here with a test RSA key whose self-signed certificate a local aiohttp
server serves; the verifier fetches it through ``cert_url_override`` while the SigningCertURL
in the message stays an ``sns.<region>.amazonaws.com`` URL. The last tests use moto's real SNS
delivery (it signs with its own key) to an http subscription.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from glacierd.notifications.events import parse_events
from glacierd.notifications.sns import (
    SnsError,
    SnsVerifier,
    parse_message,
    string_to_sign,
)
from glacierd.stores.events import IgnoredEvent
from glacierd.stores.s3.events import S3RestoreEvent

TOPIC = "arn:aws:sns:us-east-1:123456789012:glacierd-retrievals"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"


# --------------------------------------------------------------------------- helpers


def canonical(msg: dict[str, Any]) -> bytes:
    """The documented string-to-sign, written out independently of the code under test."""
    if msg["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{k}\n{msg[k]}\n" for k in keys if k in msg).encode()


def sign(msg: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    msg = dict(msg, SignatureVersion=version)
    algo = hashes.SHA1() if version == "1" else hashes.SHA256()
    msg["Signature"] = base64.b64encode(key.sign(canonical(msg), padding.PKCS1v15(), algo)).decode()
    return msg


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(**fields: Any) -> dict[str, Any]:
    msg = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps({"Records": []}),
        "Timestamp": iso(datetime.now(UTC)),
        "SigningCertURL": CERT_URL,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }
    msg.update(fields)
    return msg


def confirmation(**fields: Any) -> dict[str, Any]:
    msg = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": (
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={TOPIC}&Token=2336412f37fb"
        ),
        "Timestamp": iso(datetime.now(UTC)),
        "SigningCertURL": CERT_URL,
    }
    msg.update(fields)
    return msg


def body(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode()


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- fixtures


@dataclass
class FakeSns:
    """A local stand-in for the SNS host: serves the certificate and records confirmations."""

    url: str
    key: rsa.RSAPrivateKey
    cert_hits: Counter[str] = field(default_factory=Counter)
    confirmations: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)


def self_signed(days: int = 365) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A signing key and its self-signed certificate (PEM), standing in for SNS's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def signing_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    return self_signed()


@pytest.fixture
async def fake_sns(signing_key: tuple[rsa.RSAPrivateKey, bytes]) -> AsyncIterator[FakeSns]:
    key, pem = signing_key
    state: dict[str, FakeSns] = {}

    async def cert(request: web.Request) -> web.Response:
        state["s"].cert_hits[request.path] += 1
        state["s"].auth_headers.append(request.headers.get("Authorization"))
        if request.path.endswith("huge.pem"):
            return web.Response(body=pem * 100)
        if request.path.endswith("garbage.pem"):
            return web.Response(text="not a certificate")
        if request.path.endswith("missing.pem") or "forged" in request.path:
            raise web.HTTPNotFound()
        if request.path.endswith("unavailable.pem"):
            raise web.HTTPServiceUnavailable()
        return web.Response(body=pem, content_type="application/x-pem-file")

    async def subscribe(request: web.Request) -> web.Response:
        state["s"].confirmations.append(dict(request.query))
        return web.Response(
            text=(
                '<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                "<ConfirmSubscriptionResult><SubscriptionArn>"
                f"{TOPIC}:0b4a1e2f-cafe-4a1b-9c1d-123456789abc"
                "</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
            ),
            content_type="text/xml",
        )

    app = web.Application()
    app.router.add_get("/", subscribe)
    app.router.add_get("/{name}", cert)
    async with serve(app) as url:
        state["s"] = FakeSns(url=url, key=key)
        yield state["s"]


@pytest.fixture
async def verifier(fake_sns: FakeSns) -> AsyncIterator[SnsVerifier]:
    async with aiohttp.ClientSession() as session:
        yield SnsVerifier(
            [TOPIC],
            session,
            cert_url_override=fake_sns.url,
            subscribe_url_override=fake_sns.url,
        )


async def rejects(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any], status: int, words: str
) -> SnsError:
    with pytest.raises(SnsError) as info:
        result = check()
        if asyncio.iscoroutine(result):
            await result
    assert info.value.status == status, str(info.value)
    assert words in info.value.reason, info.value.reason
    return info.value


# --------------------------------------------------------------------------- parse_message


def test_string_to_sign_matches_the_documented_layout() -> None:
    msg = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": TOPIC,
        "Subject": "hi",
        "Message": "line1\nline2",
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "Signature": "ignored",
        "UnsubscribeURL": "ignored",
    }
    assert string_to_sign(msg) == (
        b"Message\nline1\nline2\nMessageId\nm-1\nSubject\nhi\n"
        b"Timestamp\n2026-01-01T00:00:00.000Z\nTopicArn\n" + TOPIC.encode() + b"\n"
        b"Type\nNotification\n"
    )
    del msg["Subject"]
    assert b"Subject" not in string_to_sign(msg)
    conf = confirmation(Timestamp="2026-01-01T00:00:00.000Z")
    assert string_to_sign(conf) == canonical(conf)
    assert string_to_sign(conf).startswith(b"Message\n")
    assert b"\nSubscribeURL\n" in string_to_sign(conf)
    assert b"\nToken\n" in string_to_sign(conf)


async def test_parse_message_accepts_a_notification(signing_key: Any) -> None:
    msg = sign(notification(), signing_key[0])
    assert parse_message(body(msg), "Notification") == msg
    assert parse_message(body(msg), None) == msg


@pytest.mark.parametrize(
    ("raw", "header", "words"),
    [
        (b"{not json", None, "not JSON"),
        (b"\xff\xfe", None, "not UTF-8"),
        (b"[1, 2]", None, "not a JSON object"),
        (b'{"Type": "Gossip"}', None, "unknown Type"),
        (body(sign(notification(), rsa.generate_private_key(65537, 1024))), "Gossip", "header"),
        (
            body(notification(Signature="x", SignatureVersion="2", MessageId=None)),
            None,
            "MessageId",
        ),
        (body(notification(Signature="x", SignatureVersion="2", Message=7)), None, "not strings"),
        (
            body({k: v for k, v in confirmation(Signature="x").items() if k != "Token"}),
            None,
            "Token",
        ),
    ],
)
async def test_parse_message_rejects_malformed(raw: bytes, header: str | None, words: str) -> None:
    await rejects(lambda: parse_message(raw, header), 400, words)


async def test_header_type_must_match(signing_key: Any) -> None:
    msg = sign(notification(), signing_key[0])
    await rejects(lambda: parse_message(body(msg), "SubscriptionConfirmation"), 400, "header")


async def test_unsigned_message_is_rejected() -> None:
    msg = notification(SignatureVersion="2")  # no Signature at all
    await rejects(lambda: parse_message(body(msg), "Notification"), 400, "Signature")


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize("version", ["1", "2"])
async def test_valid_signatures_are_accepted(
    verifier: SnsVerifier, fake_sns: FakeSns, version: str
) -> None:
    msg = parse_message(body(sign(notification(), fake_sns.key, version)), "Notification")
    await verifier.verify(msg)
    # without a Subject the Subject line is not signed
    no_subject = notification()
    del no_subject["Subject"]
    await verifier.verify(parse_message(body(sign(no_subject, fake_sns.key, version)), None))


async def test_tampered_message_is_rejected(verifier: SnsVerifier, fake_sns: FakeSns) -> None:
    msg = sign(notification(), fake_sns.key)
    msg["Message"] = json.dumps({"Records": [{"eventName": "ObjectRestore:Completed"}]})
    await rejects(lambda: verifier.verify(msg), 403, "does not verify")
    msg = sign(notification(), fake_sns.key)
    msg["Subject"] = "changed"
    await rejects(lambda: verifier.verify(msg), 403, "does not verify")


async def test_signature_of_another_key_is_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejects(lambda: verifier.verify(sign(notification(), other)), 403, "does not verify")


async def test_signature_version_mismatch_is_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    # signed with SHA256 but claims version 1 (SHA1)
    msg = sign(notification(), fake_sns.key, "2")
    msg["SignatureVersion"] = "1"
    await rejects(lambda: verifier.verify(msg), 403, "does not verify")


@pytest.mark.parametrize("version", ["3", "0", ""])
async def test_unknown_signature_version_is_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns, version: str
) -> None:
    msg = sign(notification(), fake_sns.key, "2")
    msg["SignatureVersion"] = version
    await rejects(lambda: verifier.verify(msg), 400, "SignatureVersion")
    assert not fake_sns.cert_hits


async def test_garbled_signature_is_rejected(verifier: SnsVerifier, fake_sns: FakeSns) -> None:
    msg = sign(notification(), fake_sns.key)
    msg["Signature"] = "!!not base64!!"
    await rejects(lambda: verifier.verify(msg), 400, "base64")
    msg["Signature"] = ""
    await rejects(lambda: verifier.verify(msg), 400, "not signed")


@pytest.mark.parametrize(
    ("cert_url", "words"),
    [
        ("https://evil.example.com/SimpleNotificationService-1.pem", "not sns.<region>"),
        ("https://sns.us-east-1.amazonaws.com.evil.com/x.pem", "not sns.<region>"),
        ("https://sns.us-east-1.evil.com/x.pem", "not sns.<region>"),
        ("https://amazonaws.com/x.pem", "not sns.<region>"),
        ("https://s3.us-east-1.amazonaws.com/x.pem", "not sns.<region>"),
        ("https://sns.us-east-1.amazonaws.com@evil.com/x.pem", "credentials"),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem", "not an https"),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", "non-standard port"),
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt", "does not end"),
        ("https://sns.us-east-1.amazonaws.com/x.pem?y=1.txt", None),
    ],
)
async def test_cert_url_must_be_https_sns_pem(
    verifier: SnsVerifier, fake_sns: FakeSns, cert_url: str, words: str | None
) -> None:
    msg = sign(notification(SigningCertURL=cert_url), fake_sns.key)
    if words is None:  # a query string does not hide the .pem path: accepted
        await verifier.verify(msg)
        return
    await rejects(lambda: verifier.verify(msg), 403, words)
    assert not fake_sns.cert_hits  # nothing fetched for a rejected URL


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
    ],
)
async def test_cert_url_in_other_regions_is_accepted(
    verifier: SnsVerifier, fake_sns: FakeSns, cert_url: str
) -> None:
    await verifier.verify(sign(notification(SigningCertURL=cert_url), fake_sns.key))


async def test_topic_not_in_allow_list_is_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    other = "arn:aws:sns:us-east-1:999999999999:someone-else"
    await rejects(
        lambda: verifier.verify(sign(notification(TopicArn=other), fake_sns.key)),
        403,
        "not one glacierd subscribes to",
    )
    assert not fake_sns.cert_hits


async def test_stale_and_future_messages_are_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    old = iso(datetime.now(UTC) - timedelta(hours=1, minutes=1))
    await rejects(
        lambda: verifier.verify(sign(notification(Timestamp=old), fake_sns.key)), 403, "older than"
    )
    future = iso(datetime.now(UTC) + timedelta(minutes=30))
    await rejects(
        lambda: verifier.verify(sign(notification(Timestamp=future), fake_sns.key)), 403, "future"
    )
    await rejects(
        lambda: verifier.verify(sign(notification(Timestamp="yesterday"), fake_sns.key)),
        400,
        "ISO 8601",
    )
    assert not fake_sns.cert_hits


async def test_max_age_is_configurable(fake_sns: FakeSns) -> None:
    ts = iso(datetime.now(UTC) - timedelta(hours=5))
    msg = sign(notification(Timestamp=ts), fake_sns.key)
    async with SnsVerifier(
        [TOPIC], max_age=timedelta(hours=6), cert_url_override=fake_sns.url
    ) as own_session:
        await own_session.verify(msg)  # also: the verifier made (and closes) its own session


async def test_certificate_is_cached(verifier: SnsVerifier, fake_sns: FakeSns) -> None:
    await verifier.verify(sign(notification(MessageId="a"), fake_sns.key))
    await verifier.verify(sign(notification(MessageId="b"), fake_sns.key, "1"))
    path = "/SimpleNotificationService-0123456789abcdef.pem"
    assert fake_sns.cert_hits == {path: 1}
    # fetched from the override base + the original path, with the SNS-scoped fake SigV4 header
    assert fake_sns.auth_headers[0] is not None
    assert "/us-east-1/sns/aws4_request" in fake_sns.auth_headers[0]


async def test_concurrent_verifies_fetch_the_certificate_once(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    msgs = [sign(notification(MessageId=str(i)), fake_sns.key) for i in range(5)]
    await asyncio.gather(*(verifier.verify(m) for m in msgs))
    assert sum(fake_sns.cert_hits.values()) == 1


async def test_certificate_cache_is_bounded(fake_sns: FakeSns) -> None:
    async with aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=fake_sns.url, cert_cache_size=2)
        urls = [
            f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{i}.pem"
            for i in range(3)
        ]
        for url in [*urls, urls[0]]:  # urls[0] was evicted by urls[2]
            await v.verify(sign(notification(SigningCertURL=url), fake_sns.key))
        assert fake_sns.cert_hits["/SimpleNotificationService-0.pem"] == 2
        assert fake_sns.cert_hits["/SimpleNotificationService-2.pem"] == 1


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("huge.pem", 403, "larger than"),
        ("garbage.pem", 403, "not a PEM"),
        # No such certificate on the SNS host: a forgery (SNS does not retry 4xx answers).
        ("missing.pem", 403, "HTTP 404"),
        # AWS's own trouble: 502, and SNS retries.
        ("unavailable.pem", 502, "HTTP 503"),
    ],
)
async def test_bad_certificates_are_rejected(
    verifier: SnsVerifier, fake_sns: FakeSns, name: str, status: int, words: str
) -> None:
    msg = sign(
        notification(SigningCertURL=f"https://sns.us-east-1.amazonaws.com/{name}"), fake_sns.key
    )
    await rejects(lambda: verifier.verify(msg), status, words)


@pytest.mark.parametrize(("name", "status"), [("missing.pem", 403), ("unavailable.pem", 502)])
async def test_failed_certificate_fetches_are_remembered(
    fake_sns: FakeSns, name: str, status: int
) -> None:
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=fake_sns.url, monotonic=lambda: now[0])
        url = f"https://sns.us-east-1.amazonaws.com/{name}"
        for message_id in "abc":
            msg = sign(notification(SigningCertURL=url, MessageId=message_id), fake_sns.key)
            await rejects(lambda m=msg: v.verify(m), status, "HTTP")
        assert fake_sns.cert_hits == {f"/{name}": 1}
        now[0] += 301  # remembered for a while (an outage less long than a forgery)
        await rejects(lambda: v.verify(msg), status, "HTTP")
        assert fake_sns.cert_hits == {f"/{name}": 2}


async def test_certificate_fetches_are_limited_per_interval(fake_sns: FakeSns) -> None:
    """200 forged messages naming 200 certificate URLs on the SNS host: 10 fetches."""
    now = [1000.0]
    async with aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=fake_sns.url, monotonic=lambda: now[0])

        def forged(i: int) -> dict[str, Any]:
            url = f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-forged{i}.pem"
            return sign(notification(SigningCertURL=url), fake_sns.key)

        statuses = Counter()
        for i in range(200):
            with pytest.raises(SnsError) as info:
                await v.verify(forged(i))
            statuses[info.value.status] += 1
        assert sum(fake_sns.cert_hits.values()) == 10
        # the fetched ones are forgeries (403); the rest were not fetched: 503, SNS retries
        assert statuses == {403: 10, 503: 190}
        await rejects(lambda: v.verify(forged(200)), 503, "in the last 60 s")

        # A genuine certificate is still fetched once the interval has passed.
        now[0] += 61
        await v.verify(sign(notification(), fake_sns.key))
        assert sum(fake_sns.cert_hits.values()) == 11


async def test_deeply_nested_message_is_malformed() -> None:
    await rejects(lambda: parse_message(b"[" * 60_000, None), 400, "nested deeper than")
    inner = notification(Message="[" * 60_000)
    await rejects(lambda: parse_events(inner["Message"]), 400, "nested deeper than")


async def test_expired_certificate_is_rejected(fake_sns: FakeSns) -> None:
    later = datetime.now(UTC) + timedelta(days=400)  # past the test certificate's not_after
    msg = sign(notification(Timestamp=iso(later)), fake_sns.key)
    async with aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=fake_sns.url, clock=lambda: later)
        await rejects(lambda: v.verify(msg), 403, "not valid now")


async def test_unreachable_certificate_host_is_a_502(fake_sns: FakeSns) -> None:
    async with serve(web.Application()) as dead_url:
        pass  # the port is closed again
    async with aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=dead_url, fetch_timeout=2)
        await rejects(lambda: v.verify(sign(notification(), fake_sns.key)), 502, "failed")


async def test_a_certificate_host_that_never_answers_is_a_502_naming_the_timeout(
    fake_sns: FakeSns,
) -> None:
    """A timeout's message is empty: the reason names the exception instead of ending in
    "failed: " with nothing after it."""
    never = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await never.wait()  # never set: the verifier's own time limit ends the fetch
        return web.Response()

    app = web.Application()
    app.router.add_get("/{name}", silent)
    async with serve(app) as silent_url, aiohttp.ClientSession() as session:
        v = SnsVerifier([TOPIC], session, cert_url_override=silent_url, fetch_timeout=0.5)
        try:
            error = await rejects(
                lambda: v.verify(sign(notification(), fake_sns.key)), 502, "failed"
            )
        finally:
            never.set()  # lets the server close without waiting for the handler
    assert error.reason.endswith("failed: TimeoutError"), error.reason


# --------------------------------------------------------------------------- confirmation


async def test_verified_confirmation_gets_the_subscribe_url(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    msg = parse_message(body(sign(confirmation(), fake_sns.key, "1")), "SubscriptionConfirmation")
    arn = await verifier.confirm_subscription(msg)
    assert arn == f"{TOPIC}:0b4a1e2f-cafe-4a1b-9c1d-123456789abc"
    assert fake_sns.confirmations == [
        {"Action": "ConfirmSubscription", "TopicArn": TOPIC, "Token": "2336412f37fb"}
    ]


async def test_confirmation_for_an_unknown_topic_is_not_followed(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    other = "arn:aws:sns:us-east-1:999999999999:someone-else"
    msg = sign(confirmation(TopicArn=other), fake_sns.key)
    await rejects(lambda: verifier.confirm_subscription(msg), 403, "not one glacierd")
    assert fake_sns.confirmations == []
    assert not fake_sns.cert_hits


async def test_forged_confirmation_is_not_followed(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    msg = sign(confirmation(), fake_sns.key)
    msg["Token"] = "forged"
    await rejects(lambda: verifier.confirm_subscription(msg), 403, "does not verify")
    assert fake_sns.confirmations == []


async def test_confirmation_subscribe_url_must_be_sns(
    verifier: SnsVerifier, fake_sns: FakeSns
) -> None:
    for url, words in [
        ("http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription", "not an https"),
        ("https://attacker.example/?Action=ConfirmSubscription", "not sns.<region>"),
    ]:
        msg = sign(confirmation(SubscribeURL=url), fake_sns.key)  # validly signed, bad URL
        await rejects(lambda m=msg: verifier.confirm_subscription(m), 403, words)
    assert fake_sns.confirmations == []


async def test_only_confirmations_are_confirmed(verifier: SnsVerifier, fake_sns: FakeSns) -> None:
    msg = sign(notification(), fake_sns.key)
    await rejects(lambda: verifier.confirm_subscription(msg), 400, "not a SubscriptionConfirm")


async def test_unsubscribe_confirmation_verifies(verifier: SnsVerifier, fake_sns: FakeSns) -> None:
    msg = sign(confirmation(Type="UnsubscribeConfirmation"), fake_sns.key)
    await verifier.verify(parse_message(body(msg), "UnsubscribeConfirmation"))


# --------------------------------------------------------------------------- moto's real SNS


@pytest.fixture(scope="session")
def sns_moto(moto_server: str) -> str:
    """moto's server (SNS, S3) shared with the other AWS tests."""
    return moto_server


@dataclass
class Receiver:
    url: str
    posts: list[tuple[dict[str, str], bytes]]

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.posts) < count:
                await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    posts: list[tuple[dict[str, str], bytes]] = []

    async def record(request: web.Request) -> web.Response:
        posts.append((dict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/sns", record)
    async with serve(app) as url:
        yield Receiver(url=f"{url}/sns", posts=posts)


def aws_session() -> Any:
    import aioboto3

    return aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


async def test_moto_delivery_verifies(sns_moto: str, receiver: Receiver) -> None:
    async with aws_session().client("sns", endpoint_url=sns_moto) as sns:
        topic = (await sns.create_topic(Name="glacierd-moto-verify"))["TopicArn"]
        await sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
        await sns.publish(TopicArn=topic, Message='{"hello": "glacier"}')
    await receiver.wait_for(1)
    headers, raw = receiver.posts[-1]
    msg = parse_message(raw, headers.get("x-amz-sns-message-type"))
    assert msg["Type"] == "Notification"
    assert msg["SigningCertURL"].startswith("https://sns.us-east-1.amazonaws.com/")

    async with aiohttp.ClientSession() as session:
        good = SnsVerifier([topic], session, cert_url_override=sns_moto)
        await good.verify(msg)

        # The host check stays real with the override: a SigningCertURL that points at the
        # very server holding moto's certificate is refused before anything is fetched.
        path = msg["SigningCertURL"].removeprefix("https://sns.us-east-1.amazonaws.com")
        for forged, words in [
            (f"{sns_moto}{path}", "not an https"),
            (f"https://127.0.0.1{path}", "not sns.<region>"),
        ]:
            await rejects(lambda f=forged: good.verify(dict(msg, SigningCertURL=f)), 403, words)

        # Without the override the certificate would have to come from the real AWS host,
        # which does not have moto's certificate (or is unreachable here): rejected.
        real = SnsVerifier([topic], session, fetch_timeout=3)
        with pytest.raises(SnsError) as info:
            await real.verify(msg)
        assert info.value.status in (403, 502), info.value


async def test_moto_s3_restore_events_arrive_verified(sns_moto: str, receiver: Receiver) -> None:
    """S3 bucket notification -> SNS -> our endpoint: verify, then parse the restore events."""
    key = "files/a b+c.jpg"
    async with (
        aws_session().client("sns", endpoint_url=sns_moto) as sns,
        aws_session().client("s3", endpoint_url=sns_moto) as s3,
    ):
        topic = (await sns.create_topic(Name="glacierd-moto-s3"))["TopicArn"]
        await sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)
        await s3.create_bucket(Bucket="glacierd-moto-events")
        await s3.put_bucket_notification_configuration(
            Bucket="glacierd-moto-events",
            NotificationConfiguration={
                "TopicConfigurations": [
                    {"TopicArn": topic, "Events": ["s3:ObjectRestore:*"]},
                ]
            },
        )
        await s3.put_object(
            Bucket="glacierd-moto-events", Key=key, Body=b"x" * 10, StorageClass="GLACIER"
        )
        await s3.restore_object(Bucket="glacierd-moto-events", Key=key, RestoreRequest={"Days": 2})
        await s3.head_object(Bucket="glacierd-moto-events", Key=key)  # moto completes here

    await receiver.wait_for(3)  # test event, restore posted, restore completed
    events = []
    async with aiohttp.ClientSession() as session:
        verifier = SnsVerifier([topic], session, cert_url_override=sns_moto)
        for headers, raw in receiver.posts:
            msg = parse_message(raw, headers.get("x-amz-sns-message-type"))
            await verifier.verify(msg)
            events.extend(parse_events(msg["Message"]))
    assert isinstance(events[0], IgnoredEvent) and "test event" in events[0].reason
    restores = [e for e in events if isinstance(e, S3RestoreEvent)]
    assert [e.event for e in restores][:2] == ["posted", "completed"]
    assert {(e.bucket, e.key, e.size) for e in restores} == {("glacierd-moto-events", key, 10)}
