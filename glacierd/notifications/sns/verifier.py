"""``SnsVerifier``: checks that SNS messages are authentic, fresh and from an expected
topic — cheapest first and before any outbound request — and confirms subscriptions."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding

from glacierd.notifications.sns.certificates import SigningCertificates, read_capped
from glacierd.notifications.sns.message import (
    SIGNATURE_HASHES,
    SnsError,
    check_sns_url,
    parse_timestamp,
    require_confirmation,
    string_to_sign,
)

log = structlog.get_logger("glacierd.notifications.sns")

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
#: Bytes of a ConfirmSubscription answer read (to find the SubscriptionArn).
_MAX_CONFIRM_RESPONSE_BYTES = 64 * 1024

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
        self.cert_url_override = cert_url_override.rstrip("/") if cert_url_override else None
        self.subscribe_url_override = (
            subscribe_url_override.rstrip("/") if subscribe_url_override else None
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self.certificates = SigningCertificates(
            session=self._get_session,
            target=lambda url: self._redirect(url, self.cert_url_override),
            timeout=self._timeout,
            max_cert_bytes=max_cert_bytes,
            cache_size=cert_cache_size,
            max_fetches=max_cert_fetches,
            fetch_interval=cert_fetch_interval,
            monotonic=monotonic,
            clock=self._clock,
        )

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
        key = await self.certificates.public_key(cert_url)
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
        require_confirmation(msg)
        await self.verify(msg)
        return await self.confirm_verified(msg)

    async def confirm_verified(self, msg: Mapping[str, Any]) -> str | None:
        """GET the ``SubscribeURL`` of a ``SubscriptionConfirmation`` that ``verify`` accepted
        (for a caller that verified the message already: the signature is checked once)."""
        require_confirmation(msg)
        url = msg["SubscribeURL"]
        check_sns_url(url, "SubscribeURL")
        target, headers = self._redirect(url, self.subscribe_url_override)
        session = await self._get_session()
        try:
            async with session.get(
                target, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                body = await read_capped(resp, _MAX_CONFIRM_RESPONSE_BYTES)
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
        self.certificates.close()
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
