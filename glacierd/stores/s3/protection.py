"""S3 Object Lock and SSE-KMS: what an upload asks for, whether an object is locked, and a
deletion that removes the object's bytes for good.

- **Uploads** carry ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` (now +
  ``object_lock_days``) when ``store.s3.object_lock_mode`` is set, and
  ``ServerSideEncryption=aws:kms`` with ``SSEKMSKeyId`` when ``kms_key_id`` is. The doctor's
  probe is encrypted (it proves the key works) but never locked (it is deleted at once).
- **Locked?** HeadObject carries the lock (mode, date, legal hold) to callers allowed
  s3:GetObjectRetention and s3:GetObjectLegalHold: one request per archive.
- **Deleting.** Object Lock needs a versioned bucket, where a DeleteObject without a version
  id only adds a delete marker: the bytes stay, billed, for ever. So the version HeadObject
  named is deleted, which S3 refuses while the lock holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from glacierd.config import S3StoreConfig
from glacierd.stores.aws import error_code
from glacierd.stores.base import ArchiveLockedError, ArchiveNotFoundError
from glacierd.stores.protection import Retention
from glacierd.stores.s3.errors import NOT_FOUND_CODES, S3Errors


def upload_args(cfg: S3StoreConfig, kind: str, now: datetime | None = None) -> dict[str, Any]:
    """The extra PutObject / CreateMultipartUpload parameters for this archive."""
    args: dict[str, Any] = {}
    if cfg.kms_key_id:
        args["ServerSideEncryption"] = "aws:kms"
        args["SSEKMSKeyId"] = cfg.kms_key_id
    if cfg.object_lock_mode and cfg.object_lock_days and kind != "probe":
        args["ObjectLockMode"] = cfg.object_lock_mode
        args["ObjectLockRetainUntilDate"] = (now or datetime.now(UTC)) + timedelta(
            days=cfg.object_lock_days
        )
    return args


def retention_of(head: dict[str, Any], now: datetime | None = None) -> Retention | None:
    """The lock a HeadObject answer shows that holds at ``now``; None if none does."""
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return Retention("LEGAL_HOLD", None)
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if mode and isinstance(until, datetime) and until > (now or datetime.now(UTC)):
        return Retention(str(mode), until.astimezone(UTC))
    return None


async def bucket_may_lock(client: Any, bucket: str) -> bool:
    """Whether objects of the bucket can be locked at all: False only when S3 says the
    bucket has no Object Lock configuration (the store asks once per process)."""
    try:
        answer = await client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        # No permission, or another failure: assume it may, and ask about each object.
        return error_code(exc) != "ObjectLockConfigurationNotFoundError"
    except BotoCoreError:
        return True
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def version_args(head: dict[str, Any]) -> dict[str, str]:
    """DeleteObject's VersionId for the object HeadObject saw ("null": unversioned)."""
    version = head.get("VersionId")
    return {"VersionId": version} if version and version != "null" else {}


def locked(key: str, bucket: str, lock: Retention) -> ArchiveLockedError:
    """The refusal: the archive, the bucket, the lock and its date, and when to try again."""
    fix = "delete it after that date" if lock.until else "delete it once the hold is lifted"
    return ArchiveLockedError(
        f"archive {key} in S3 bucket {bucket} is {lock.describe()}, so it cannot be deleted", fix
    )


async def delete_for_good(
    client: Any,
    bucket: str,
    s3_key: str,
    key: str,
    head: Callable[[], Awaitable[dict[str, Any]]],
    errors: S3Errors,
) -> None:
    """Delete the object's version HeadObject names (an object already gone is no error);
    ArchiveLockedError, with the date, while a lock holds it."""
    try:
        seen = await head()
    except ArchiveNotFoundError:
        return
    if (lock := retention_of(seen)) is not None:
        raise locked(key, bucket, lock)
    doing = f"the deletion of archive {key}"
    try:
        await client.delete_object(Bucket=bucket, Key=s3_key, **version_args(seen))
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND_CODES:
            return
        # Locked since the HEAD (a retention extended, a legal hold placed)? S3 says only
        # "access denied": ask again, to say what it is.
        if (lock := retention_of(await head())) is not None:
            raise locked(key, bucket, lock) from exc
        raise errors.translate(exc, doing) from exc
    except BotoCoreError as exc:
        raise errors.translate(exc, doing) from exc
