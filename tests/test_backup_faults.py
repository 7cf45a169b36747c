"""S3 failing under a whole backup: the real daemon, a fault proxy in front of moto.

The daemon is a separate process, so the proxy must keep answering while the test blocks
on HTTP calls to the daemon: ``ThreadedFaultProxy`` runs ``tests.aws_fixtures.FaultProxy``
on its own event loop in a background thread (the ``fault_proxy`` fixture runs on the
test's loop, which does not turn while a synchronous test waits).

A 12 MiB attached file with its size as the hint is cut into 8 MiB parts (``plan_parts``),
so it goes up as a two-part multipart upload; the database dump of the sample database is
small and goes up as one PutObject, which the faults below (UploadPart only) never touch.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from glacierd.stores.s3 import DEFAULT_PART_SIZE, plan_parts
from tests.aws_fixtures import AWS_ENV, REGION, FaultProxy, aws_client

T = TypeVar("T")

PREFIX = "prod/"
BIG = "big/upload-12mib.bin"
BIG_SIZE = 12 * 1024 * 1024 + 4321
SMALL = {"ab/cd/abcd1234", "ab/ef/abef5678", "cache_free_name.txt"}  # from files_root


class ThreadedFaultProxy:
    """A FaultProxy serving from its own loop in a daemon thread; calls hop onto that loop."""

    def __init__(self, upstream: str) -> None:
        self.proxy = FaultProxy(upstream)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy")

    def start(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def url(self) -> str:
        return self.proxy.url

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the proxy's loop (its fault list is only touched from there)."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(10)

    def inject(self, action: str, **where: Any) -> None:
        self.call(self.proxy.inject, action, **where)

    def clear(self) -> None:
        self.call(self.proxy.faults.clear)

    def injected(self, action: str | None = None) -> int:
        return self.call(self.proxy.injected, action)

    def count(self, predicate: Callable[[str, str, str], bool]) -> int:
        return self.call(self.proxy.count, predicate)


@pytest.fixture
def proxy(moto_server: str) -> Iterator[ThreadedFaultProxy]:
    threaded = ThreadedFaultProxy(moto_server)
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def s3(moto_server: str) -> Any:
    return aws_client("s3", moto_server)


@pytest.fixture
def big_file(files_root: Path) -> bytes:
    data = os.urandom(BIG_SIZE)
    path = files_root / BIG
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    plan = plan_parts(BIG_SIZE, DEFAULT_PART_SIZE)
    assert plan.size_of(1) < BIG_SIZE <= plan.size_of(1) + plan.size_of(2)  # two parts
    return data


@pytest.fixture
def daemon(
    daemon_factory: Callable, make_settings: Callable, s3_bucket: str, proxy: ThreadedFaultProxy
) -> Any:
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {
                "bucket": s3_bucket,
                "prefix": PREFIX,
                "region": REGION,
                "endpoint_url": proxy.url,
                # Readable at once, so the test can compare the stored bytes directly.
                "storage_class": "GLACIER_IR",
            },
        }
    )
    return daemon_factory(settings, env=AWS_ENV)


def run_backup(d: Any) -> dict[str, Any]:
    r = d.request("POST", "/backups")
    assert r.status == 202, r.body
    return d.wait_backup(r.json()["id"], timeout=90)


def left_paths(left: set[str]) -> set[str]:
    """The file paths behind the failed backup's kept keys (prefix and suffix removed)."""
    return {k.removeprefix(f"{PREFIX}files/").rsplit("@backup", 1)[0] for k in left}


def part_puts(method: str, path: str, _: str) -> bool:
    return method == "PUT" and "partNumber=" in path


def keys(moto_server: str, bucket: str) -> set[str]:
    listing = s3(moto_server).list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def assert_stored_intact(moto_server: str, bucket: str, data: bytes, backup_id: int) -> None:
    obj = s3(moto_server).get_object(Bucket=bucket, Key=f"{PREFIX}files/{BIG}@backup{backup_id}")
    assert obj["ETag"].strip('"').endswith("-2")  # it really went up in two parts
    assert obj["Body"].read() == data


def test_transient_part_failures_are_retried(
    daemon: Any,
    proxy: ThreadedFaultProxy,
    moto_server: str,
    s3_bucket: str,
    big_file: bytes,
) -> None:
    proxy.inject("500", method="PUT", query="partNumber", times=1)
    proxy.inject("slowdown", method="PUT", query="partNumber", times=1)

    detail = run_backup(daemon)

    assert detail["status"] == "completed", detail
    assert detail["new_files"] == 4 and detail["error"] is None
    assert proxy.injected("500") == 1 and proxy.injected("slowdown") == 1
    # Two parts and two faults: whichever parts they hit, two part PUTs were sent again.
    assert proxy.count(part_puts) == 4
    assert_stored_intact(moto_server, s3_bucket, big_file, detail["id"])
    assert not s3(moto_server).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_persistent_part_failure_fails_the_backup_cleanly(
    daemon: Any,
    proxy: ThreadedFaultProxy,
    moto_server: str,
    s3_bucket: str,
    big_file: bytes,
) -> None:
    proxy.inject("500", method="PUT", query="partNumber", times=-1)

    detail = run_backup(daemon)

    assert detail["status"] == "failed", detail
    reason = detail["error"]
    assert f"files/{BIG}" in reason and f"S3 bucket {s3_bucket}" in reason, reason
    assert "InternalError" in reason and "aborted" in reason, reason
    # botocore retried the part before giving up, and the store aborted the upload.
    assert proxy.injected("500") >= 5
    assert proxy.count(lambda m, p, _: m == "DELETE" and "uploadId=" in p) == 1
    assert not s3(moto_server).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    # Nothing of the failed backup is left but whole small files, kept for the next backup
    # to adopt: no dump, no piece of the big file.
    left = keys(moto_server, s3_bucket)
    assert left <= {f"{PREFIX}files/{p}@backup{detail['id']}" for p in SMALL}, left
    listed = daemon.request("GET", "/backups").json()["backups"]
    assert [b["status"] for b in listed] == ["failed"]

    # S3 recovers: the next backup completes and uploads only what is not stored yet.
    proxy.clear()
    second = run_backup(daemon)
    assert second["status"] == "completed", second
    assert second["file_count"] == 4
    assert second["new_files"] == 1 + len(SMALL) - len(left)
    assert_stored_intact(moto_server, s3_bucket, big_file, second["id"])
    stored = keys(moto_server, s3_bucket)
    # Small files stored by the failed backup are adopted, the rest is this backup's.
    assert {f"{PREFIX}files/{p}@backup{detail['id']}" for p in left_paths(left)} | {
        f"{PREFIX}files/{p}@backup{second['id']}" for p in {*SMALL, BIG} - left_paths(left)
    } <= stored
    assert len([k for k in stored if k.startswith(f"{PREFIX}database/")]) == 1
    assert not s3(moto_server).list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
