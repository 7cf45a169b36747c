"""What the two AWS stores (an S3 bucket, a Glacier vault) share: opening a client, the
sentences about profiles, credentials and permissions, and aborts that outlive a
cancellation.

Credentials come from the SDK's standard chain (environment, shared files, SSO, instance
role); ``profile`` picks a shared-file profile. Every failure here is a ``StoreError`` whose
``fix`` names the setting to change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from glacierd.stores.base import StoreError

#: The SDK's ways of saying "no usable credentials" (none found, half of a pair, a failing
#: credential_process or SSO login).
CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
#: How long ``close()`` waits for aborts still running before the client goes away.
ABORT_GRACE_SECONDS = 30.0


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "") or "").rstrip(".")


# ------------------------------------------------------------------- shared sentences


def credentials_fix(setting: str) -> str:
    return (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile from "
        f"~/.aws/credentials in {setting}, or attach an IAM role"
    )


def rejected_credentials_fix(setting: str) -> str:
    return (
        f"check the access key and secret (or {setting}), refresh the session token, and "
        "make sure the clock is right"
    )


def access_denied_fix(policy: str, setting: str) -> str:
    return f"grant these credentials the policy in {policy} or pick another profile with {setting}"


def profile_not_found(profile: str | None, setting: str) -> StoreError:
    return StoreError(
        f"AWS profile {profile!r} ({setting}) is not defined in ~/.aws/credentials or "
        "~/.aws/config",
        "add it there or correct the setting",
    )


# ---------------------------------------------------------------------------- clients


def client_config(
    *,
    max_attempts: int,
    connect_timeout: float,
    read_timeout: float,
    pool: int | None = None,
    compatible_endpoint: bool = False,
) -> AioConfig:
    """The client's retries, timeouts and connection pool.

    "standard" retries throttling (503 SlowDown), 5xx and dropped connections with jittered
    exponential backoff; bodies are bytes, so a retry resends them. ``compatible_endpoint``
    (an S3-compatible store or a test server at ``endpoint_url``): no virtual-host DNS, and
    none of the recent SDKs' default CRC checksums, which some reject (R2, B2, some MinIO
    versions); glacierd's explicit SHA-256 checksums are still sent.
    """
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": max_attempts},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
    }
    if pool is not None:
        options["max_pool_connections"] = pool
    if compatible_endpoint:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return AioConfig(**options)


async def open_client(
    service: str,
    *,
    profile: str | None,
    region: str | None,
    endpoint_url: str | None,
    config: AioConfig,
    setting: str,
) -> tuple[AsyncExitStack, Any]:
    """An aiobotocore client and the stack that closes it.

    An unknown profile becomes a StoreError naming ``setting``; any other failure (no region,
    a credential source that fails) is raised as it is, for the store to put in its words.
    """
    stack = AsyncExitStack()
    try:
        # Reads the shared config and credentials files: keep that off the event loop.
        session = await asyncio.to_thread(aioboto3.Session, profile_name=profile)
        client = await stack.enter_async_context(
            session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
        )
    except ProfileNotFound:
        await stack.aclose()
        raise profile_not_found(profile, setting) from None
    except BaseException:
        await stack.aclose()
        raise
    return stack, client


async def check_credentials(profile: str | None, setting: str, store: str) -> str:
    """Where the SDK finds credentials for ``profile`` (``glacierd doctor``): 'AWS
    credentials from env for <store>'; a StoreError if it finds none."""
    try:
        session = await asyncio.to_thread(aioboto3.Session, profile_name=profile)
        credentials = await session.get_credentials()
    except ProfileNotFound:
        raise profile_not_found(profile, setting) from None
    except BotoCoreError as exc:
        raise StoreError(
            f"the AWS credentials could not be loaded ({exc})",
            f"fix the credential source (SSO login, credential_process, {setting})",
        ) from None
    if credentials is None:
        raise StoreError(
            "no AWS credentials found in the environment, the shared credentials files or an "
            "instance role",
            f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile in {setting}, or "
            "attach an IAM role",
        )
    source = getattr(credentials, "method", None) or "the SDK's default chain"
    named = f" (profile {profile})" if profile else ""
    return f"AWS credentials from {source}{named} for {store}"


# ----------------------------------------------------------------------------- aborts


class ShieldedAborts:
    """Aborts of failed uploads that must run even when the upload is being cancelled.

    Each abort runs in its own task: a second cancellation stops the wait, not the abort,
    and ``wait`` lets stragglers finish before the client is closed. (Parts of an upload
    left behind are billed until a lifecycle rule removes them.)
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, abort: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(abort)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        await asyncio.shield(task)

    async def wait(self) -> None:
        """Wait (at most ABORT_GRACE_SECONDS) for the aborts still running."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=ABORT_GRACE_SECONDS)
