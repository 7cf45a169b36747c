"""Notifications through SQS against moto: the bucket's ObjectRestore events go to the SNS
topic, SNS delivers them to the queue (signed envelopes, or raw), and the real daemon
long-polls the queue, verifies, dispatches, downloads — and deletes each message only once
it was applied. Bad messages are logged as poison after max_receives and deleted; stopping
ends a long poll at once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from glacierd.config import config_from_dict
from glacierd.context import open_context
from glacierd.notifications.sqs import SqsConsumer, sqs_verifier
from tests.aws_fixtures import AWS_ENV, REGION, aws_client, notify_restores
from tests.daemon import Daemon
from tests.test_glacier_e2e import archive, backup_and_lose_a_file, check_fetched, statuses

REPO = Path(__file__).resolve().parent.parent
QUEUE_POLICY = REPO / "deploy" / "aws" / "sqs-queue-policy.json"


def make_queue(moto: str, topic_arn: str, *, raw: bool) -> str:
    """A queue as deploy/aws/sqs-setup.sh makes it: the documented policy (only the topic
    may send) and the topic's subscription; returns its URL."""
    sqs, sns = aws_client("sqs", moto), aws_client("sns", moto)
    url = sqs.create_queue(
        QueueName=f"glacierd-{uuid.uuid4().hex[:8]}",
        Attributes={"MessageRetentionPeriod": "1209600", "VisibilityTimeout": "60"},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = QUEUE_POLICY.read_text().replace("QUEUE_ARN", arn).replace("TOPIC_ARN", topic_arn)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def queued(moto: str, url: str) -> int:
    """Messages in the queue, visible or not."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = aws_client("sqs", moto).get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return sum(int(attributes["Attributes"][n]) for n in names)


def sqs_settings(moto: str, url: str, topic_arn: str, **more: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "queue_url": url,
        "endpoint_url": moto,
        "region": REGION,
        "topic_arns": [topic_arn],
        "cert_url_override": moto,  # signing certificates from moto; the host check stays
        **more,
    }


@pytest.fixture
def topic(moto_server: str) -> str:
    sns = aws_client("sns", moto_server)
    return sns.create_topic(Name=f"glacierd-{uuid.uuid4().hex[:8]}")["TopicArn"]


@pytest.mark.parametrize("raw", [False, True], ids=["envelope", "raw"])
def test_s3_restore_completed_through_the_queue(
    daemon_factory: Callable[..., Daemon],
    make_settings: Callable[..., dict],
    moto_server: str,
    s3_bucket: str,
    topic: str,
    files_root: Path,
    tmp_path: Path,
    raw: bool,
) -> None:
    notify_restores(moto_server, s3_bucket, topic)
    url = make_queue(moto_server, topic, raw=raw)
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {"bucket": s3_bucket, "endpoint_url": moto_server, "region": REGION},
        },
        sqs=sqs_settings(moto_server, url, topic, raw_delivery=raw, wait_time_seconds=2),
        schedule={"enabled": False, "poll_interval_seconds": 3600},  # no polling help
    )
    d = daemon_factory(settings, env=AWS_ENV)
    detail, _, original = backup_and_lose_a_file(d, files_root)
    r = d.request("POST", f"/backups/{detail['id']}/retrieve", {"tier": "Bulk"})
    assert r.status == 202 and r.json()["requested"] == 2, r.body
    db, lost = archive(detail, "database"), archive(detail, "file", "ab/ef/abef5678")

    s3 = aws_client("s3", moto_server)
    for a in (db, lost):  # moto finishes a restore when the object is next looked at
        s3.head_object(Bucket=s3_bucket, Key=a["key"])
    d.wait_for(
        lambda: set(statuses(d, detail["id"]).values()) == {"local", "exists"},
        timeout=60,
        what="archives to become local through the queue",
    )
    check_fetched(tmp_path, detail, "ab/ef/abef5678", original)
    moves = sorted(
        (e["archive_id"], e["old"], e["new"])
        for e in d.events()
        if e.get("event") == "archive.status_changed" and e["new"] == "ready"
    )
    assert moves == sorted((a["id"], "pending", "ready") for a in (db, lost)), moves
    applied = [e for e in d.events() if e.get("event") == "sqs.notification"]
    assert sum(e["changed"] for e in applied) == 2, applied
    # Applied messages are gone from the queue (the S3 test event too).
    d.wait_for(lambda: queued(moto_server, url) == 0, timeout=30, what="an empty queue")
    assert not [e for e in d.events() if e.get("event") in ("sqs.poison", "sqs.message_failed")]
    assert d.stop() == 0


def forged(moto: str, url: str, topic_arn: str) -> str:
    """A genuine envelope (SNS delivered it to the queue) whose message was then changed:
    the signature no longer verifies."""
    sqs = aws_client("sqs", moto)
    aws_client("sns", moto).publish(
        TopicArn=topic_arn, Message=json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})
    )
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    envelope = json.loads(message["Body"])
    assert envelope["Signature"]
    envelope["Message"] = json.dumps({"Event": "s3:TestEvent", "Bucket": "forged"})
    return json.dumps(envelope)


async def test_bad_messages_are_retried_then_logged_as_poison_and_deleted(
    make_settings: Callable[..., dict], moto_server: str, topic: str
) -> None:
    sqs = aws_client("sqs", moto_server)
    url = make_queue(moto_server, topic, raw=False)
    bodies = {
        "not json at all": "not an SNS envelope",
        forged(moto_server, url, topic): "signature does not verify",
    }
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    settings = make_settings(
        sqs=sqs_settings(
            moto_server,
            url,
            topic,
            wait_time_seconds=1,
            visibility_timeout_seconds=1,
            max_receives=2,
        )
    )
    config = config_from_dict(settings)
    with structlog.testing.capture_logs() as logs:
        async with (
            open_context(config) as ctx,
            sqs_verifier(config.sqs) as verifier,
            SqsConsumer(ctx, config.sqs, verifier, lambda _: None) as consumer,
        ):
            task = asyncio.create_task(consumer.run())
            for _ in range(300):  # bounded: until both were given up on
                if sum(e["event"] == "sqs.poison" for e in logs) == 2:
                    break
                await asyncio.sleep(0.1)
            consumer.stop()
            await asyncio.wait_for(task, 30)
    events = [(e["event"], e.get("receives")) for e in logs if e["event"].startswith("sqs.m")]
    assert events.count(("sqs.message_failed", 1)) == 2, logs
    poison = [e for e in logs if e["event"] == "sqs.poison"]
    assert sorted(e["body"] for e in poison) == sorted(bodies)
    for e in poison:
        assert bodies[e["body"]] in e["reason"], e
        assert e["receives"] == 2
    assert queued(moto_server, url) == 0


async def test_stop_ends_a_long_poll_at_once(
    make_settings: Callable[..., dict], moto_server: str, topic: str
) -> None:
    """The consumer is inside a 20 s long poll (we wait until the request was sent) when
    it is told to stop: run() returns without waiting for SQS to answer."""
    url = aws_client("sqs", moto_server).create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    config = config_from_dict(make_settings(sqs=sqs_settings(moto_server, url, topic)))
    assert config.sqs.wait_time_seconds == 20
    async with (
        open_context(config) as ctx,
        sqs_verifier(config.sqs) as verifier,
        SqsConsumer(ctx, config.sqs, verifier, lambda _: None) as consumer,
    ):
        sent = asyncio.Event()
        real = consumer._client.receive_message
        cancelled = []

        async def receive(**kwargs: Any) -> Any:
            sent.set()
            try:
                return await real(**kwargs)
            except asyncio.CancelledError:
                cancelled.append(kwargs["WaitTimeSeconds"])
                raise

        consumer._client.receive_message = receive
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(sent.wait(), 10)
        consumer.stop()
        await asyncio.wait_for(task, 5)  # well inside the 20 s poll
    assert cancelled == [20]
