"""Signing certificates: fetched from the SNS host a message names (bounded in time and
size), checked, and cached by URL.

A forger can name any number of certificate URLs on a real SNS host, each a fetch from here.
So failed fetches are cached too (a repeated URL costs nothing), and at most
``max_fetches`` fetches start per ``fetch_interval``; past that a message whose certificate
is not cached gets 503 (SNS retries it later) without any outbound request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from glacierd.notifications.sns.message import SnsError

log = structlog.get_logger("glacierd.notifications.sns")

#: How long a failed certificate fetch is remembered: a refusal (4xx, not a certificate)
#: longer than an outage (no answer, 5xx), after which AWS may well answer again.
FORGED_CERT_TTL = 300.0
UNREACHABLE_CERT_TTL = 30.0
FAILED_CERT_CACHE_SIZE = 256

# The URL actually requested for a certificate URL, and its headers (test overrides).
Target = Callable[[str], tuple[str, dict[str, str]]]


class SigningCertificates:
    """The public keys of SNS signing certificates, by URL: cached while valid, fetched at
    most once at a time per URL, failures remembered, fetches rate-limited."""

    def __init__(
        self,
        *,
        session: Callable[[], Awaitable[aiohttp.ClientSession]],
        target: Target,
        timeout: aiohttp.ClientTimeout,
        max_cert_bytes: int,
        cache_size: int,
        max_fetches: int,
        fetch_interval: float,
        monotonic: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self._session = session
        self._target = target
        self._timeout = timeout
        self.max_cert_bytes = max_cert_bytes
        self.cache_size = max(1, cache_size)
        self.max_fetches = max(1, max_fetches)
        self.fetch_interval = fetch_interval
        self._monotonic = monotonic
        self._clock = clock
        # URL -> (public key, certificate not-valid-after); most recently used last.
        self._certs: OrderedDict[str, tuple[rsa.RSAPublicKey, datetime]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[rsa.RSAPublicKey, datetime]]] = {}
        # URL -> (the rejection, monotonic time until which it stands); oldest first.
        self._failed: OrderedDict[str, tuple[SnsError, float]] = OrderedDict()
        self._fetch_starts: deque[float] = deque()

    def close(self) -> None:
        """Cancel the fetches under way."""
        for task in list(self._inflight.values()):
            task.cancel()

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
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
        while len(self._certs) > self.cache_size:
            self._certs.popitem(last=False)
        return key

    def _count_fetch(self, url: str) -> None:
        """Raise SnsError(503) when ``max_cert_fetches`` fetches started in the last
        ``cert_fetch_interval`` seconds; otherwise count this one."""
        now = self._monotonic()
        while self._fetch_starts and self._fetch_starts[0] <= now - self.fetch_interval:
            self._fetch_starts.popleft()
        if len(self._fetch_starts) >= self.max_fetches:
            raise SnsError(
                503,
                f"not fetching SNS signing certificate {url}: {self.max_fetches} "
                f"certificates were fetched in the last {self.fetch_interval:g} s "
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
        target, headers = self._target(url)
        session = await self._session()
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
                pem = await read_capped(resp, self.max_cert_bytes + 1)
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


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a response body (more is never buffered)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await resp.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
