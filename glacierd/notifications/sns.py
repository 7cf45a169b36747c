"""Parse and verify the messages Amazon SNS posts to glacierd's HTTP endpoint.

Python has no well-kept SNS verifier, so this module does what AWS's SDK verifiers do:

1. ``parse_message`` checks the JSON envelope: every field the message type needs is present
   and a string, and the ``x-amz-sns-message-type`` header agrees with ``Type``.
2. ``SnsVerifier.verify`` checks, cheapest first and before any outbound request: the topic is
   one we expect, the signature version is known, the message is fresh (no replays), the
   signing certificate URL is HTTPS on an ``sns.<region>.amazonaws.com`` host; then it fetches
   the certificate (bounded time and size, cached by URL) and checks the RSA PKCS#1 v1.5
   signature over the documented string-to-sign.
3. ``SnsVerifier.confirm_subscription`` verifies a ``SubscriptionConfirmation`` and only then
   GETs its ``SubscribeURL`` (which must also be an SNS host).

Every rejection is an ``SnsError`` whose ``status`` is the HTTP status to answer. SNS treats
4xx answers as final and retries 5xx, so a bad or forged message gets 400/403 (a certificate
URL the SNS host answers 4xx for is a forgery: 403) and only a failure on our side of the wire
(the certificate host did not answer, or answered 5xx) gets 502.

A forger can name any number of certificate URLs on a real SNS host, each a fetch from here.
So failed fetches are cached too (a repeated URL costs nothing), and at most
``max_cert_fetches`` fetches start per ``cert_fetch_interval``; past that a message whose
certificate is not cached gets 503 (SNS retries it later) without any outbound request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from glacierd import jsonsafe

log = structlog.get_logger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_SIGNATURE_FIELDS = ("Signature", "SignatureVersion", "SigningCertURL")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)

#: Required string fields per message type.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: _NOTIFICATION_FIELDS + _SIGNATURE_FIELDS,
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS + _SIGNATURE_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS + _SIGNATURE_FIELDS,
}

#: Optional string fields per message type (checked for type when present).
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Subject", "UnsubscribeURL"),
    SUBSCRIPTION_CONFIRMATION: (),
    UNSUBSCRIBE_CONFIRMATION: (),
}

#: SignatureVersion -> hash of the RSA PKCS#1 v1.5 signature.
SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SHA1withRSA: still what SNS uses unless the topic asks for v2
    "2": hashes.SHA256,
}

# sns.us-east-1.amazonaws.com, sns.us-gov-west-1.amazonaws.com, sns.cn-north-1.amazonaws.com.cn
_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?$")

DEFAULT_MAX_AGE = timedelta(hours=1)
#: How far in the future a Timestamp may be (clock skew between AWS and this host).
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
DEFAULT_FETCH_TIMEOUT = 10.0
#: SNS signing certificates are about 2 KB of PEM (a chain is a few KB); 64 KiB is generous.
DEFAULT_MAX_CERT_BYTES = 64 * 1024
DEFAULT_CERT_CACHE_SIZE = 32
#: Certificate fetches allowed per interval (SNS uses one certificate per region, replaced
#: every few years: a handful of URLs, each fetched once and cached).
DEFAULT_MAX_CERT_FETCHES = 10
DEFAULT_CERT_FETCH_INTERVAL = 60.0
#: How long a failed certificate fetch is remembered: a refusal (4xx, not a certificate)
#: longer than an outage (no answer, 5xx), after which AWS may well answer again.
FORGED_CERT_TTL = 300.0
UNREACHABLE_CERT_TTL = 30.0
FAILED_CERT_CACHE_SIZE = 256
#: Bytes of a ConfirmSubscription answer read (to find the SubscriptionArn).
_MAX_CONFIRM_RESPONSE_BYTES = 64 * 1024


class SnsError(Exception):
    """An SNS message was rejected; ``status`` is the HTTP status to answer.

    400: malformed message; 403: not authentic or not for us; 502: we could not reach the
    certificate or confirmation host (SNS will retry); 503: too many certificate fetches
    lately (SNS will retry); 408/413: the body came too slowly or is too large.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


# --------------------------------------------------------------------------- parsing


def parse_message(body: bytes, header_type: str | None) -> dict[str, Any]:
    """Decode and structurally check an SNS HTTP(S) message body.

    ``header_type`` is the ``x-amz-sns-message-type`` request header (None when absent); when
    present it must equal the body's ``Type``. A ``"Subject": null`` is treated as absent.
    Raises ``SnsError(400)`` on anything malformed. The signature is *not* checked here.
    """
    try:
        msg = jsonsafe.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SnsError(400, f"SNS message body is not UTF-8: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, JsonTooDeep
        raise SnsError(400, f"SNS message body is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise SnsError(400, "SNS message body is not a JSON object")

    msg_type = msg.get("Type")
    if not isinstance(msg_type, str) or msg_type not in REQUIRED_FIELDS:
        raise SnsError(400, f"SNS message has an unknown Type {msg_type!r}")
    if header_type is not None and header_type != msg_type:
        raise SnsError(
            400,
            f"x-amz-sns-message-type header {header_type!r} does not match Type {msg_type!r}",
        )

    if msg.get("Subject", "") is None:
        del msg["Subject"]
    missing = [f for f in REQUIRED_FIELDS[msg_type] if f not in msg or msg[f] is None]
    if missing:
        raise SnsError(400, f"SNS {msg_type} lacks required field(s): {', '.join(missing)}")
    not_str = [
        f
        for f in REQUIRED_FIELDS[msg_type] + OPTIONAL_FIELDS[msg_type]
        if f in msg and not isinstance(msg[f], str)
    ]
    if not_str:
        raise SnsError(400, f"SNS {msg_type} field(s) are not strings: {', '.join(not_str)}")
    return msg


def string_to_sign(msg: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs, as documented: ``"Key\\nValue\\n"`` for each signed key in order.

    Notification: Message, MessageId, Subject (only when present), Timestamp, TopicArn, Type.
    (Un)subscribe confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn,
    Type.
    """
    msg_type = msg.get("Type")
    if msg_type == NOTIFICATION:
        keys: tuple[str, ...] = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    elif msg_type in (SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION):
        keys = _CONFIRMATION_FIELDS
    else:
        raise SnsError(400, f"SNS message has an unknown Type {msg_type!r}")
    parts: list[str] = []
    for key in keys:
        value = msg.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise SnsError(400, f"SNS {msg_type} lacks required field {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def parse_timestamp(value: str) -> datetime:
    """Parse an SNS ``Timestamp`` (ISO 8601 UTC, e.g. ``2026-01-01T12:00:00.123Z``)."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise SnsError(400, f"SNS Timestamp {value!r} is not an ISO 8601 time") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts


def check_sns_url(url: str, what: str, *, path_suffix: str | None = None) -> None:
    """Raise ``SnsError(403)`` unless ``url`` is HTTPS on an ``sns.<region>.amazonaws.com`` host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SnsError(403, f"{what} {url!r} is not a valid URL") from None
    if parts.scheme != "https":
        raise SnsError(403, f"{what} {url!r} is not an https URL")
    if parts.username is not None or parts.password is not None:
        raise SnsError(403, f"{what} {url!r} carries credentials")
    if port not in (None, 443):
        raise SnsError(403, f"{what} {url!r} uses a non-standard port")
    host = parts.hostname or ""
    if not _SNS_HOST.match(host):
        raise SnsError(403, f"{what} host {host!r} is not sns.<region>.amazonaws.com")
    if path_suffix is not None and not parts.path.endswith(path_suffix):
        raise SnsError(403, f"{what} {url!r} does not end in {path_suffix}")


# --------------------------------------------------------------------------- verifying


SessionSource = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession] | None


class SnsVerifier:
    """Checks that SNS messages are authentic, fresh and from an expected topic.

    ``session`` is an ``aiohttp.ClientSession`` (not closed by the verifier), a factory called
    on first use, or None for a session of the verifier's own; sessions the verifier made are
    closed by ``close()``.

    ``cert_url_override`` / ``subscribe_url_override`` are for tests only: the certificate
    (or the confirmation GET) is fetched from that base URL plus the original URL's path (and
    query) instead of from AWS. The host check on the original URL still applies. With an
    override set, requests carry a fake SigV4 ``Authorization`` header scoped to SNS, which is
    how moto's server routes them.
    """

    def __init__(
        self,
        topic_arns: Iterable[str],
        session: SessionSource = None,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        max_cert_bytes: int = DEFAULT_MAX_CERT_BYTES,
        cert_cache_size: int = DEFAULT_CERT_CACHE_SIZE,
        max_cert_fetches: int = DEFAULT_MAX_CERT_FETCHES,
        cert_fetch_interval: float = DEFAULT_CERT_FETCH_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
        cert_url_override: str | None = None,
        subscribe_url_override: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.topic_arns = frozenset(topic_arns)
        if isinstance(session, aiohttp.ClientSession):
            self._session: aiohttp.ClientSession | None = session
            self._session_factory: Callable[[], aiohttp.ClientSession] | None = None
        else:
            self._session = None
            self._session_factory = session or aiohttp.ClientSession
        self._owns_session = False
        self.max_age = max_age
        self.max_future_skew = max_future_skew
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self.max_cert_bytes = max_cert_bytes
        self.cert_cache_size = max(1, cert_cache_size)
        self.cert_url_override = cert_url_override.rstrip("/") if cert_url_override else None
        self.subscribe_url_override = (
            subscribe_url_override.rstrip("/") if subscribe_url_override else None
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        # URL -> (public key, certificate not-valid-after); most recently used last.
        self._certs: OrderedDict[str, tuple[rsa.RSAPublicKey, datetime]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[rsa.RSAPublicKey, datetime]]] = {}
        # URL -> (the rejection, monotonic time until which it stands); oldest first.
        self._failed: OrderedDict[str, tuple[SnsError, float]] = OrderedDict()
        self.max_cert_fetches = max(1, max_cert_fetches)
        self.cert_fetch_interval = cert_fetch_interval
        self._fetch_starts: deque[float] = deque()
        self._monotonic = monotonic

    # -- public

    async def verify(self, msg: Mapping[str, Any]) -> None:
        """Raise ``SnsError`` unless ``msg`` (from ``parse_message``) is authentic and fresh.

        No outbound request is made for a message from a topic not in the allow-list, with an
        unknown signature version, a stale timestamp or a certificate URL off AWS.
        """
        topic = msg.get("TopicArn")
        if topic not in self.topic_arns:
            raise SnsError(403, f"SNS topic {topic!r} is not one glacierd subscribes to")

        version = msg.get("SignatureVersion")
        hash_factory = SIGNATURE_HASHES.get(version) if isinstance(version, str) else None
        if hash_factory is None:
            raise SnsError(400, f"SNS SignatureVersion {version!r} is not supported (1 or 2)")

        self._check_fresh(msg.get("Timestamp"))

        cert_url = msg.get("SigningCertURL")
        if not isinstance(cert_url, str):
            raise SnsError(400, "SNS message lacks SigningCertURL")
        check_sns_url(cert_url, "SigningCertURL", path_suffix=".pem")

        signature_b64 = msg.get("Signature")
        if not isinstance(signature_b64, str) or not signature_b64:
            raise SnsError(400, "SNS message is not signed (no Signature)")
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            raise SnsError(400, "SNS Signature is not base64") from None

        data = string_to_sign(msg)
        key = await self._public_key(cert_url)
        try:
            key.verify(signature, data, padding.PKCS1v15(), hash_factory())
        except InvalidSignature:
            raise SnsError(403, "SNS message signature does not verify") from None

    async def confirm_subscription(self, msg: Mapping[str, Any]) -> str | None:
        """Verify a ``SubscriptionConfirmation`` and GET its ``SubscribeURL``.

        Returns the confirmed SubscriptionArn when the answer names it. Raises ``SnsError``
        (nothing is fetched) when the message is not a verified confirmation for an expected
        topic or its SubscribeURL is not an SNS https URL; ``SnsError(502)`` when the
        confirmation request fails.
        """
        _require_confirmation(msg)
        await self.verify(msg)
        return await self.confirm_verified(msg)

    async def confirm_verified(self, msg: Mapping[str, Any]) -> str | None:
        """GET the ``SubscribeURL`` of a ``SubscriptionConfirmation`` that ``verify`` accepted
        (for a caller that verified the message already: the signature is checked once)."""
        _require_confirmation(msg)
        url = msg["SubscribeURL"]
        check_sns_url(url, "SubscribeURL")
        target, headers = self._redirect(url, self.subscribe_url_override)
        session = await self._get_session()
        try:
            async with session.get(
                target, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await _read_capped(resp, _MAX_CONFIRM_RESPONSE_BYTES)
                if resp.status != 200:
                    raise SnsError(
                        502,
                        f"confirming the SNS subscription to {msg['TopicArn']} "
                        f"answered HTTP {resp.status}",
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsError(
                502,
                f"confirming the SNS subscription to {msg['TopicArn']} failed: "
                f"{str(exc) or type(exc).__name__}",
            ) from None
        found = re.search(rb"<SubscriptionArn>([^<]{1,512})</SubscriptionArn>", body)
        arn = found.group(1).decode("utf-8", "replace") if found else None
        log.info("sns subscription confirmed", topic_arn=msg["TopicArn"], subscription_arn=arn)
        return arn

    async def close(self) -> None:
        """Close the HTTP session if the verifier created it."""
        for task in list(self._inflight.values()):
            task.cancel()
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> SnsVerifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals

    def _check_fresh(self, timestamp: Any) -> None:
        if not isinstance(timestamp, str):
            raise SnsError(400, "SNS message lacks Timestamp")
        sent = parse_timestamp(timestamp)
        now = self._clock()
        if now - sent > self.max_age:
            raise SnsError(
                403, f"SNS message of {timestamp} is older than {self.max_age} (replay?)"
            )
        if sent - now > self.max_future_skew:
            raise SnsError(403, f"SNS message of {timestamp} is dated in the future")

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is None:
                raise RuntimeError("the aiohttp.ClientSession given to SnsVerifier is closed")
            self._session = self._session_factory()
            self._owns_session = True
        return self._session

    def _redirect(self, url: str, override: str | None) -> tuple[str, dict[str, str]]:
        """The URL actually requested and its headers (test overrides applied)."""
        if override is None:
            return url, {}
        parts = urlsplit(url)
        target = override + parts.path + (f"?{parts.query}" if parts.query else "")
        # moto routes a request to a service only by its SigV4 credential scope.
        region = (parts.hostname or "").split(".")[1]
        day = self._clock().strftime("%Y%m%d")
        auth = (
            f"AWS4-HMAC-SHA256 Credential=testing/{day}/{region}/sns/aws4_request, "
            "SignedHeaders=host, Signature=x"
        )
        return target, {"Authorization": auth}

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._certs.get(url)
        if cached is not None:
            key, not_after = cached
            if not_after > self._clock():
                self._certs.move_to_end(url)
                return key
            del self._certs[url]  # expired: fetch again, AWS may have replaced it
        failed = self._failed.get(url)
        if failed is not None:
            error, until = failed
            if self._monotonic() < until:
                raise SnsError(error.status, f"{error.reason} (remembered; not fetched again)")
            del self._failed[url]
        task = self._inflight.get(url)
        if task is None:
            self._count_fetch(url)
            task = asyncio.create_task(self._fetch_certificate(url))
            self._inflight[url] = task
            task.add_done_callback(lambda t: self._fetch_done(url, t))
        # shield: one caller giving up must not cancel the fetch others wait for
        key, not_after = await asyncio.shield(task)
        self._certs[url] = (key, not_after)
        self._certs.move_to_end(url)
        while len(self._certs) > self.cert_cache_size:
            self._certs.popitem(last=False)
        return key

    def _count_fetch(self, url: str) -> None:
        """Raise SnsError(503) when ``max_cert_fetches`` fetches started in the last
        ``cert_fetch_interval`` seconds; otherwise count this one."""
        now = self._monotonic()
        while self._fetch_starts and self._fetch_starts[0] <= now - self.cert_fetch_interval:
            self._fetch_starts.popleft()
        if len(self._fetch_starts) >= self.max_cert_fetches:
            raise SnsError(
                503,
                f"not fetching SNS signing certificate {url}: {self.max_cert_fetches} "
                f"certificates were fetched in the last {self.cert_fetch_interval:g} s "
                "(likely forged messages); SNS retries a genuine message later",
            )
        self._fetch_starts.append(now)

    def _fetch_done(self, url: str, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(url, None)
        if task.cancelled():
            return
        # retrieved here too, in case every waiter gave up
        error = task.exception()
        if isinstance(error, SnsError):
            ttl = UNREACHABLE_CERT_TTL if error.status >= 500 else FORGED_CERT_TTL
            self._failed[url] = (error, self._monotonic() + ttl)
            self._failed.move_to_end(url)
            while len(self._failed) > FAILED_CERT_CACHE_SIZE:
                self._failed.popitem(last=False)

    async def _fetch_certificate(self, url: str) -> tuple[rsa.RSAPublicKey, datetime]:
        target, headers = self._redirect(url, self.cert_url_override)
        session = await self._get_session()
        try:
            async with session.get(
                target, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                if resp.status >= 500:  # AWS's trouble: SNS retries, we try again then
                    raise SnsError(
                        502, f"fetching SNS signing certificate {url} answered HTTP {resp.status}"
                    )
                if resp.status != 200:  # no such certificate on the SNS host: forged
                    raise SnsError(
                        403, f"fetching SNS signing certificate {url} answered HTTP {resp.status}"
                    )
                pem = await _read_capped(resp, self.max_cert_bytes + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__  # a timeout's message is empty
            raise SnsError(
                502, f"fetching SNS signing certificate {url} failed: {reason}"
            ) from None
        if len(pem) > self.max_cert_bytes:
            raise SnsError(
                403, f"SNS signing certificate {url} is larger than {self.max_cert_bytes} bytes"
            )
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsError(403, f"SNS signing certificate {url} is not a PEM certificate") from None
        now = self._clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsError(
                403,
                f"SNS signing certificate {url} is not valid now "
                f"({cert.not_valid_before_utc} to {cert.not_valid_after_utc})",
            )
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsError(403, f"SNS signing certificate {url} does not hold an RSA key")
        log.debug(
            "sns signing certificate fetched", url=url, not_after=str(cert.not_valid_after_utc)
        )
        return key, cert.not_valid_after_utc


def _require_confirmation(msg: Mapping[str, Any]) -> None:
    if msg.get("Type") != SUBSCRIPTION_CONFIRMATION:
        raise SnsError(
            400, f"SNS message of Type {msg.get('Type')!r} is not a SubscriptionConfirmation"
        )


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a response body (more is never buffered)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
