"""Reusable AWS test fixtures: a moto server on loopback, fresh buckets, a fault proxy.

Use from a test module with ``from tests.aws_fixtures import moto_server, s3_bucket`` (pytest
finds imported fixtures) or from a conftest with ``pytest_plugins = ["tests.aws_fixtures"]``.

- ``moto_server`` (session): one ``ThreadedMotoServer`` on 127.0.0.1 and a free port; yields
  its endpoint URL. Fake credentials and region are set in ``os.environ`` (setdefault), so
  real clients sign requests without touching a real account.
- ``s3_bucket`` (function): a new, empty bucket with a unique name; yields the name.
- ``fault_proxy`` (function): a ``FaultProxy`` in front of moto; point a client's
  ``endpoint_url`` at ``fault_proxy.url`` and call ``inject(...)`` to make chosen requests fail
  with a 500, a 503 SlowDown, a connection dropped while the request body is sent, a
  response cut off half-way, or a slow answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aioboto3
import aiohttp
import boto3
import pytest
import pytest_asyncio
from aiohttp import web
from botocore.config import Config
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


#: The environment a glacierd process needs to reach moto with fake credentials.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def aws_client(service: str, endpoint_url: str) -> Any:
    """A plain boto3 client on moto (blocking: for fixtures and daemon-driving tests)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )


def sns_settings(port: int, topic_arn: str, moto: str) -> dict[str, Any]:
    """glacierd's [sns] section for a daemon that receives moto's signed deliveries."""
    return {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "path": "/sns",
        "topic_arns": [topic_arn],
        "cert_url_override": moto,  # certificates from moto; the host check stays real
    }


def subscribe(moto: str, topic_arn: str, port: int) -> None:
    """Subscribe a daemon's SNS endpoint (moto confirms http subscriptions by itself)."""
    aws_client("sns", moto).subscribe(
        TopicArn=topic_arn, Protocol="http", Endpoint=f"http://127.0.0.1:{port}/sns"
    )


def notify_restores(moto: str, bucket: str, topic_arn: str) -> None:
    """Make the bucket publish its ObjectRestore events to the topic, as in production."""
    aws_client("s3", moto).put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic_arn, "Events": ["s3:ObjectRestore:*"]}]
        },
    )


def _fake_aws_env() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


@contextmanager
def running_moto() -> Iterator[str]:
    """A moto server on a free loopback port, with fake credentials; yields its URL."""
    _fake_aws_env()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on loopback for the whole test session; yields its endpoint URL."""
    with running_moto() as url:
        yield url


def sync_s3_client(endpoint_url: str) -> Any:
    """A plain boto3 client on the moto server (for fixtures; blocking, so not in async tests)."""
    _fake_aws_env()
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
    )


@asynccontextmanager
async def s3_client(endpoint_url: str) -> AsyncIterator[Any]:
    """An aioboto3 S3 client on ``endpoint_url``, for inspecting a bucket from async tests."""
    _fake_aws_env()
    session = aioboto3.Session(region_name=REGION)
    async with session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(s3={"addressing_style": "path"}),
    ) as client:
        yield client


@pytest.fixture
def s3_bucket(moto_server: str) -> str:
    """A fresh, empty bucket on the moto server; yields its (DNS-valid) name."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    sync_s3_client(moto_server).create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------- fault proxy


#: Faults the proxy can inject.
#: "500": answer 500 InternalError without forwarding.
#: "slowdown": answer 503 SlowDown without forwarding.
#: "drop": read part of the request body, then drop the connection (nothing forwarded).
#: "cut": forward, then send the headers and half the response body, and drop the connection.
#: "slow": forward, then wait ``delay`` seconds (or until the proxy stops) before answering.
#: "denied": answer 403 AccessDenied without forwarding.
FAULT_ACTIONS = ("500", "slowdown", "drop", "cut", "slow", "denied")


@dataclass
class Fault:
    action: str
    method: str | None = None
    query: str | None = None  # a query parameter that must be present (e.g. "partNumber")
    query_value: tuple[str, str] | None = None  # a parameter with a given value
    path: str | None = None  # a substring of the (unquoted) request path
    times: int = 1  # how many matching requests to hit; -1 means every one
    delay: float = 0.0
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.times != -1 and self.hits >= self.times:
            return False
        if self.method and request.method != self.method:
            return False
        if self.query and self.query not in request.query:
            return False
        if self.path and self.path not in request.path:
            return False
        if self.query_value:
            name, value = self.query_value
            if request.query.get(name) != value:
                return False
        return True


_HOP_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "expect",
        "content-encoding",
        "date",
        "server",
    }
)


@dataclass
class FaultProxy:
    """A reverse proxy in front of ``upstream`` that fails chosen requests on purpose."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path?query, what)
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def inject(
        self,
        action: str,
        *,
        method: str | None = None,
        query: str | None = None,
        query_value: tuple[str, str] | None = None,
        path: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> Fault:
        assert action in FAULT_ACTIONS, action
        fault = Fault(action, method, query, query_value, path, times, delay)
        self.faults.append(fault)
        return fault

    def injected(self, action: str | None = None) -> int:
        """How many requests got a fault (of ``action``, or of any kind)."""
        return sum(
            1
            for _, _, what in self.log
            if what != "forwarded" and (action is None or what == action)
        )

    def count(self, predicate: Callable[[str, str, str], bool]) -> int:
        return sum(1 for entry in self.log if predicate(*entry))

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()  # answers held back by "slow" go out now
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _pick(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.matches(request):
                fault.hits += 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._pick(request)
        what = fault.action if fault else "forwarded"
        self.log.append((request.method, request.path_qs, what))
        if fault and fault.action in ("500", "slowdown", "denied"):
            await request.read()
            code, status, message = {
                "500": (
                    "InternalError",
                    500,
                    "We encountered an internal error. Please try again.",
                ),
                "slowdown": ("SlowDown", 503, "Please reduce your request rate."),
                "denied": ("AccessDenied", 403, "Access Denied"),
            }[fault.action]
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                "<RequestId>FAULT</RequestId></Error>"
            )
            return web.Response(status=status, text=body, content_type="application/xml")
        if fault and fault.action == "drop":
            # Take some of the body, then hang up mid-request.
            with_body = request.content_length or 0
            await request.content.read(min(with_body, 64 * 1024) or 1)
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to send on a dead connection
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        data = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=io.BytesIO(data) if data else None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
            }
            status = upstream.status
            length = upstream.headers.get("Content-Length")
        if fault and fault.action == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.delay)
        response = web.StreamResponse(status=status, headers=out_headers)
        if request.method == "HEAD":
            if length is not None:
                response.content_length = int(length)
            await response.prepare(request)
            return response
        response.content_length = len(payload)
        await response.prepare(request)
        if fault and fault.action == "cut" and len(payload) > 1:
            await response.write(payload[: len(payload) // 2])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        await response.write(payload)
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def fault_proxy(moto_server: str) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the moto server (no faults until ``inject`` is called)."""
    proxy = FaultProxy(moto_server)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
