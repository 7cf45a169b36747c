"""An SNS message as posted to glacierd: its envelope checked field by field, the bytes
SNS signs, its time, and the hosts an SNS URL may name. Every rejection is an ``SnsError``
whose ``status`` is the HTTP status to answer."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes

from glacierd import jsonsafe

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_SIGNATURE_FIELDS = ("Signature", "SignatureVersion", "SigningCertURL")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)

#: Required string fields per message type.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: _NOTIFICATION_FIELDS + _SIGNATURE_FIELDS,
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS + _SIGNATURE_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS + _SIGNATURE_FIELDS,
}

#: Optional string fields per message type (checked for type when present).
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Subject", "UnsubscribeURL"),
    SUBSCRIPTION_CONFIRMATION: (),
    UNSUBSCRIBE_CONFIRMATION: (),
}

#: SignatureVersion -> hash of the RSA PKCS#1 v1.5 signature.
SIGNATURE_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SHA1withRSA: still what SNS uses unless the topic asks for v2
    "2": hashes.SHA256,
}

# sns.us-east-1.amazonaws.com, sns.us-gov-west-1.amazonaws.com, sns.cn-north-1.amazonaws.com.cn
_SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?$")


class SnsError(Exception):
    """An SNS message was rejected; ``status`` is the HTTP status to answer.

    400: malformed message; 403: not authentic or not for us; 502: we could not reach the
    certificate or confirmation host (SNS will retry); 503: too many certificate fetches
    lately (SNS will retry); 408/413: the body came too slowly or is too large.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def parse_message(body: bytes, header_type: str | None) -> dict[str, Any]:
    """Decode and structurally check an SNS HTTP(S) message body.

    ``header_type`` is the ``x-amz-sns-message-type`` request header (None when absent); when
    present it must equal the body's ``Type``. A ``"Subject": null`` is treated as absent.
    Raises ``SnsError(400)`` on anything malformed. The signature is *not* checked here.
    """
    try:
        msg = jsonsafe.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SnsError(400, f"SNS message body is not UTF-8: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, JsonTooDeep
        raise SnsError(400, f"SNS message body is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise SnsError(400, "SNS message body is not a JSON object")

    msg_type = msg.get("Type")
    if not isinstance(msg_type, str) or msg_type not in REQUIRED_FIELDS:
        raise SnsError(400, f"SNS message has an unknown Type {msg_type!r}")
    if header_type is not None and header_type != msg_type:
        raise SnsError(
            400,
            f"x-amz-sns-message-type header {header_type!r} does not match Type {msg_type!r}",
        )

    if msg.get("Subject", "") is None:
        del msg["Subject"]
    missing = [f for f in REQUIRED_FIELDS[msg_type] if f not in msg or msg[f] is None]
    if missing:
        raise SnsError(400, f"SNS {msg_type} lacks required field(s): {', '.join(missing)}")
    not_str = [
        f
        for f in REQUIRED_FIELDS[msg_type] + OPTIONAL_FIELDS[msg_type]
        if f in msg and not isinstance(msg[f], str)
    ]
    if not_str:
        raise SnsError(400, f"SNS {msg_type} field(s) are not strings: {', '.join(not_str)}")
    return msg


def string_to_sign(msg: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs, as documented: ``"Key\\nValue\\n"`` for each signed key in order.

    Notification: Message, MessageId, Subject (only when present), Timestamp, TopicArn, Type.
    (Un)subscribe confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn,
    Type.
    """
    msg_type = msg.get("Type")
    if msg_type == NOTIFICATION:
        keys: tuple[str, ...] = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    elif msg_type in (SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION):
        keys = _CONFIRMATION_FIELDS
    else:
        raise SnsError(400, f"SNS message has an unknown Type {msg_type!r}")
    parts: list[str] = []
    for key in keys:
        value = msg.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise SnsError(400, f"SNS {msg_type} lacks required field {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode("utf-8")


def parse_timestamp(value: str) -> datetime:
    """Parse an SNS ``Timestamp`` (ISO 8601 UTC, e.g. ``2026-01-01T12:00:00.123Z``)."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise SnsError(400, f"SNS Timestamp {value!r} is not an ISO 8601 time") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts


def check_sns_url(url: str, what: str, *, path_suffix: str | None = None) -> None:
    """Raise ``SnsError(403)`` unless ``url`` is HTTPS on an ``sns.<region>.amazonaws.com`` host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SnsError(403, f"{what} {url!r} is not a valid URL") from None
    if parts.scheme != "https":
        raise SnsError(403, f"{what} {url!r} is not an https URL")
    if parts.username is not None or parts.password is not None:
        raise SnsError(403, f"{what} {url!r} carries credentials")
    if port not in (None, 443):
        raise SnsError(403, f"{what} {url!r} uses a non-standard port")
    host = parts.hostname or ""
    if not _SNS_HOST.match(host):
        raise SnsError(403, f"{what} host {host!r} is not sns.<region>.amazonaws.com")
    if path_suffix is not None and not parts.path.endswith(path_suffix):
        raise SnsError(403, f"{what} {url!r} does not end in {path_suffix}")


def require_confirmation(msg: Mapping[str, Any]) -> None:
    if msg.get("Type") != SUBSCRIPTION_CONFIRMATION:
        raise SnsError(
            400, f"SNS message of Type {msg.get('Type')!r} is not a SubscriptionConfirmation"
        )
