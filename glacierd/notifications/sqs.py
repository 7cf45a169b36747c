"""The second transport for retrieval notifications: an SQS queue that the SNS topic delivers
to, long-polled with the AWS SDK. Nothing listens publicly; IAM says who may send.

Each message goes the way an SNS HTTP post goes, into the same ``dispatch``:

- an **SNS envelope** (raw message delivery off, the default): its signature, certificate
  host and topic are verified like the HTTP endpoint's (``SnsVerifier``), but with a
  maximum age of 14 days, since a queue keeps messages that long. The queue's policy lets
  only the topic send, so the signature is a second lock: a principal of the account that
  may send to the queue still cannot forge news about archives. A SubscriptionConfirmation
  (a topic of another account) is confirmed, an UnsubscribeConfirmation logged;
- a **bare message** (``[sqs] raw_delivery = true``, or S3 event notifications sent to
  the queue directly): accepted as it is — the queue's policy is its only authentication.

A message is deleted only once it was applied (dispatch is idempotent, so a message seen
twice does no harm). A message that fails stays in the queue and comes back after the
visibility timeout; after ``max_receives`` receives it is logged as ``sqs.poison`` (error,
with the reason and the start of the body) and deleted. A dead-letter queue with a
``maxReceiveCount`` below ``max_receives`` gets such messages before glacierd deletes them.
Polling still finds every finished retrieval, so a lost notification only costs time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from glacierd import jsonsafe
from glacierd.config import SqsConfig
from glacierd.context import Context
from glacierd.notifications.dispatch import dispatch
from glacierd.notifications.events import parse_events
from glacierd.notifications.sns import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    SnsError,
    SnsVerifier,
    parse_message,
)
from glacierd.operations.retrieval import OnReady
from glacierd.stores.aws import client_config, error_code, error_message, open_client

log = structlog.get_logger("glacierd.sqs")

#: SQS keeps a message at most 14 days; SNS envelopes that old are still genuine here.
MAX_MESSAGE_AGE = timedelta(days=14, hours=1)
#: Pause after a failed receive, doubled up to the maximum while it keeps failing.
RETRY_SECONDS, MAX_RETRY_SECONDS = 5.0, 300.0
BODY_EXCERPT = 1024


class Rejected(Exception):
    """A message that cannot be applied; the reason is for the log."""


def sqs_verifier(settings: SqsConfig) -> SnsVerifier:
    return SnsVerifier(
        settings.topic_arns,
        max_age=MAX_MESSAGE_AGE,
        cert_url_override=settings.cert_url_override,
        subscribe_url_override=settings.cert_url_override,
    )


async def start_consumer(
    ctx: Context, stack: AsyncExitStack, on_ready: OnReady
) -> SqsConsumer | None:
    """For ``serve``: when ``[sqs]`` is enabled, open the consumer (closed by ``stack``) and
    run it as tracked work; None otherwise."""
    settings = ctx.config.sqs
    if not settings.enabled:
        return None
    verifier = await stack.enter_async_context(sqs_verifier(settings))
    consumer = await stack.enter_async_context(SqsConsumer(ctx, settings, verifier, on_ready))
    ctx.spawn(consumer.run(), "sqs-consumer")
    return consumer


class SqsConsumer:
    """Long-polls ``[sqs] queue_url`` until ``stop()``; use as an async context manager (it
    opens and closes the SQS client)."""

    def __init__(
        self, ctx: Context, settings: SqsConfig, verifier: SnsVerifier, on_ready: OnReady
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.verifier = verifier
        self.on_ready = on_ready
        self._stop = asyncio.Event()
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> SqsConsumer:
        s = self.settings
        stack, self._client = await open_client(
            "sqs",
            profile=s.profile,
            region=s.queue_region,
            endpoint_url=s.endpoint_url,
            # A long poll holds the request open for wait_time_seconds.
            config=client_config(
                max_attempts=3, connect_timeout=10, read_timeout=s.wait_time_seconds + 20
            ),
            setting="sqs.profile",
        )
        self._stack.push_async_exit(stack)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    def stop(self) -> None:
        """Stop polling: a receive under way is abandoned (its messages come back after the
        visibility timeout); messages already received are still applied."""
        self._stop.set()

    async def run(self) -> None:
        pause = RETRY_SECONDS
        log.info("sqs.polling", queue=self.settings.queue_url)
        while not self._stop.is_set():
            try:
                messages = await self._receive()
            except (ClientError, BotoCoreError) as exc:
                log.error("sqs.receive_failed", queue=self.settings.queue_url, error=_say(exc))
                await self._pause(pause)
                pause = min(pause * 2, MAX_RETRY_SECONDS)
                continue
            pause = RETRY_SECONDS
            for message in messages or []:
                await self.handle(message)

    async def _receive(self) -> list[dict[str, Any]] | None:
        """One long poll, or None when ``stop()`` came first."""
        s = self.settings
        receive = asyncio.ensure_future(
            self._client.receive_message(
                QueueUrl=s.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=s.wait_time_seconds,
                VisibilityTimeout=s.visibility_timeout_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not receive.done():
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receive
        if receive.cancelled():
            return None
        answer: dict[str, Any] = receive.result()
        return list(answer.get("Messages", []))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def handle(self, message: Mapping[str, Any]) -> None:
        body = str(message.get("Body", ""))
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            changed = await self.apply(body)
        except Exception as exc:  # every failure leaves the message queued
            reason = exc.reason if isinstance(exc, SnsError) else str(exc) or type(exc).__name__
            if receives < self.settings.max_receives:
                log.warning(
                    "sqs.message_failed",
                    message_id=message.get("MessageId"),
                    receives=receives,
                    reason=reason,
                    outcome="left in the queue; it comes back after the visibility timeout",
                )
                return
            log.error(
                "sqs.poison",
                message_id=message.get("MessageId"),
                receives=receives,
                reason=reason,
                body=body[:BODY_EXCERPT],
                outcome="deleted (polling still finds finished retrievals)",
            )
        else:
            log.info("sqs.notification", message_id=message.get("MessageId"), changed=changed)
        await self._delete(message)

    async def apply(self, body: str) -> int:
        """Apply one message body; returns how many archives changed status."""
        if _looks_like_an_envelope(body):
            msg = parse_message(body.encode("utf-8"), None)
            await self.verifier.verify(msg)
            if msg["Type"] == SUBSCRIPTION_CONFIRMATION:
                await self.verifier.confirm_verified(msg)
                log.info("sqs.subscription_confirmed", topic=msg["TopicArn"])
                return 0
            if msg["Type"] != NOTIFICATION:
                log.warning("sqs.unsubscribed", topic=msg["TopicArn"])
                return 0
            message = msg["Message"]
        elif self.settings.raw_delivery:
            message = body
        else:
            raise Rejected(
                "the message is not an SNS envelope; if the subscription delivers raw "
                "messages, set sqs.raw_delivery = true"
            )
        changed = 0
        for event in parse_events(message):
            changed += await dispatch(self.ctx, event, self.on_ready)
        return changed

    async def _delete(self, message: Mapping[str, Any]) -> None:
        try:
            await self._client.delete_message(
                QueueUrl=self.settings.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        except (ClientError, BotoCoreError) as exc:
            # It comes back after the visibility timeout and is applied again: no harm.
            log.warning("sqs.delete_failed", message_id=message.get("MessageId"), error=_say(exc))


def _looks_like_an_envelope(body: str) -> bool:
    try:
        data = jsonsafe.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "TopicArn" in data and "Type" in data


def _say(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {error_message(exc)}"
    return str(exc) or type(exc).__name__
