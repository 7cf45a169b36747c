"""Glacier's failures in an operator's words: what failed on which vault (``detail``), and
the setting or permission to change (``fix``).

The vault API closed to new AWS customers on 2025-12-15: a new account gets
``NoLongerSupportedException`` on every call, which becomes one sentence pointing at the S3
store with a Glacier storage class.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from glacierd.config import VaultStoreConfig
from glacierd.stores.aws import (
    CREDENTIAL_ERRORS,
    access_denied_fix,
    credentials_fix,
    error_code,
    rejected_credentials_fix,
)
from glacierd.stores.base import ArchiveNotFoundError, StoreError

CLOSED_TO_NEW_CUSTOMERS = (
    "the Glacier vault API is closed to new AWS customers since 2025-12-15",
    'use the S3 store (store.type = "s3") with storage_class GLACIER',
)
# Operations whose only resource is the vault: a ResourceNotFoundException means the vault.
_VAULT_OPERATIONS = frozenset(
    {
        "describe_vault",
        "upload_archive",
        "initiate_multipart_upload",
        "list_multipart_uploads",
        "initiate_job",
    }
)
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
    }
)


class GoneError(ArchiveNotFoundError):
    """Glacier does not know the archive, job or upload (not the vault) in a request."""


class VaultErrors:
    """Turns botocore's exceptions about one vault into StoreErrors."""

    def __init__(self, cfg: VaultStoreConfig) -> None:
        self.cfg = cfg
        #: The region the client talks to, once it is open (the SDK may pick a default).
        self.region = cfg.region or "(default region)"

    def translate(self, exc: BaseException, operation: str) -> StoreError:
        """``operation`` is the client method that failed (``upload_archive``)."""
        vault = self.cfg.vault
        if isinstance(exc, ClientError):
            return self._client_error(exc, operation)
        if isinstance(exc, CREDENTIAL_ERRORS):
            return StoreError(
                f"no usable AWS credentials for Glacier vault {vault!r}",
                credentials_fix("store.vault.profile"),
            )
        assert isinstance(exc, BotoCoreError), exc
        return StoreError(
            f"Glacier {operation} on vault {vault!r} in {self.region} failed: {exc}",
            "check the network and store.vault.endpoint_url, then retry",
        )

    def _client_error(self, exc: ClientError, operation: str) -> StoreError:
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "") or "")
        vault = self.cfg.vault
        if code == "NoLongerSupportedException":
            closed, use_s3 = CLOSED_TO_NEW_CUSTOMERS
            return StoreError(f"Glacier vault {vault!r}: {closed}", use_s3)
        # AWS says ResourceNotFoundException "Vault not found for ARN: …"; moto says
        # VaultNotFound. The same code also covers unknown archives, jobs and upload ids.
        lowered = message.lower()
        if code == "VaultNotFound" or (
            code == "ResourceNotFoundException"
            and (
                "vault not found" in lowered
                or (operation in _VAULT_OPERATIONS and "archive" not in lowered)
            )
        ):
            return StoreError(
                f"vault {vault} does not exist in region {self.region}",
                "create it or fix store.vault.vault (and store.vault.region)",
            )
        if code == "ResourceNotFoundException":
            return GoneError(f"Glacier {operation} on vault {vault!r}: {message or code}.")
        if code in ("AccessDeniedException", "AccessDenied"):
            action = "".join(part.capitalize() for part in operation.split("_"))
            return StoreError(
                f"AWS denied glacier:{action} on vault {vault!r} ({message})",
                access_denied_fix("deploy/iam/vault-policy.json", "store.vault.profile"),
            )
        if code in _BAD_CREDENTIAL_CODES:
            return StoreError(
                f"AWS rejected the credentials for Glacier vault {vault!r} ({code})",
                rejected_credentials_fix("store.vault.profile"),
            )
        if code == "InsufficientCapacityException":
            return StoreError(
                f"Glacier has no Expedited capacity for vault {vault!r} right now",
                "retry later, use the Standard tier, or buy provisioned capacity",
            )
        if code == "PolicyEnforcedException":
            return StoreError(
                f"the data retrieval policy of the account refused a retrieval from vault "
                f"{vault!r} ({message})",
                "raise the policy's limit or retry later",
            )
        return StoreError(
            f"Glacier {operation} on vault {vault!r} in {self.region} failed: "
            f"{code or 'error'}: {message}."
        )
