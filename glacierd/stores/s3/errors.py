"""S3's failures in an operator's words: what failed on which bucket (``detail``), and the
setting or permission to change (``fix``).

A person must fix these (no bucket, access denied, no or rejected credentials, the wrong
region, an endpoint that does not answer); anything else says what S3 answered and to retry.
"""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError

from glacierd.config import S3StoreConfig
from glacierd.stores.aws import (
    CREDENTIAL_ERRORS,
    access_denied_fix,
    credentials_fix,
    error_code,
    error_message,
    rejected_credentials_fix,
)
from glacierd.stores.base import ArchiveNotFoundError, NotRetrievedError, StoreError

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
NO_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"})
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)
_WRONG_REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)


class S3Errors:
    """Turns botocore's exceptions about one bucket into StoreErrors."""

    def __init__(self, cfg: S3StoreConfig) -> None:
        self.cfg = cfg

    def no_bucket(self) -> StoreError:
        return StoreError(
            f"S3 bucket {self.cfg.bucket} does not exist", "create it or correct store.s3.bucket"
        )

    def translate(self, exc: BaseException, doing: str, *, aborted: bool = False) -> StoreError:
        """What failed, on which bucket, and the fix.

        ``doing`` is a noun phrase ("the upload of archive X"); ``aborted`` adds that an
        upload was rolled back.
        """
        bucket = self.cfg.bucket
        rolled_back = ", so the upload was aborted and nothing was stored" if aborted else ""
        if isinstance(exc, CREDENTIAL_ERRORS):
            return StoreError(
                f"no usable AWS credentials for S3 bucket {bucket} during {doing} "
                f"({exc}){rolled_back}",
                credentials_fix("store.s3.profile"),
            )
        if isinstance(exc, EndpointConnectionError):
            where = self.cfg.endpoint_url or "the AWS S3 endpoint"
            return StoreError(
                f"the connection to {where} failed or broke off during {doing} in S3 bucket "
                f"{bucket}{rolled_back}",
                "check the network, proxy settings, store.s3.region and store.s3.endpoint_url",
            )
        if not isinstance(exc, ClientError):
            return StoreError(
                f"{doing} in S3 bucket {bucket} failed ({str(exc).rstrip('.')}){rolled_back}",
                "retry later, and if it persists check the network and store.s3.endpoint_url",
            )
        code = error_code(exc)
        if code == "NoSuchBucket":
            return StoreError(
                f"S3 bucket {bucket} does not exist (found during {doing}){rolled_back}",
                "create it or correct store.s3.bucket",
            )
        if code in _DENIED_CODES:
            return StoreError(
                f"S3 denied access to bucket {bucket} during {doing}{rolled_back}",
                access_denied_fix("deploy/iam/s3-policy.json", "store.s3.profile"),
            )
        if code in _BAD_CREDENTIAL_CODES:
            return StoreError(
                f"S3 rejected the AWS credentials for bucket {bucket} ({code}) during "
                f"{doing}{rolled_back}",
                rejected_credentials_fix("store.s3.profile"),
            )
        if code in _WRONG_REGION_CODES:
            return StoreError(
                f"S3 bucket {bucket} is not in the configured region "
                f"({self.cfg.region or 'the SDK default'}) and answered {code} during "
                f"{doing}{rolled_back}",
                "set store.s3.region to the bucket's region",
            )
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = error_message(exc).replace(". ", "; ") or "no message"
        return StoreError(
            f"{doing} in S3 bucket {bucket} failed with {code or status} ({said}){rolled_back}",
            "retry later, and if it persists check the bucket's settings",
        )

    def about_archive(self, exc: ClientError, key: str, doing: str) -> StoreError:
        """Errors about one archive: not restored, missing, changed; else ``translate``."""
        code = error_code(exc)
        bucket = self.cfg.bucket
        if code == "InvalidObjectState":
            return NotRetrievedError(
                f"archive {key} in S3 bucket {bucket} is in an archival storage class and has "
                "no restored copy",
                "request a retrieval and wait until it is ready",
            )
        if code in NOT_FOUND_CODES:
            return ArchiveNotFoundError(
                f"archive {key} is not in S3 bucket {bucket} under prefix {self.cfg.prefix!r}; "
                "it was deleted, or store.s3.prefix changed."
            )
        if code in ("PreconditionFailed", "412"):
            return StoreError(
                f"archive {key} in S3 bucket {bucket} changed during the download",
                "retry the fetch",
            )
        return self.translate(exc, f"{doing} of archive {key}")
