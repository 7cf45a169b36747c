"""Parse and verify the messages Amazon SNS posts to glacierd's HTTP endpoint.

Python has no well-kept SNS verifier, so this module does what AWS's SDK verifiers do:

1. ``parse_message`` checks the JSON envelope: every field the message type needs is present
   and a string, and the ``x-amz-sns-message-type`` header agrees with ``Type``.
2. ``SnsVerifier.verify`` checks, cheapest first and before any outbound request: the topic is
   one we expect, the signature version is known, the message is fresh (no replays), the
   signing certificate URL is HTTPS on an ``sns.<region>.amazonaws.com`` host; then it fetches
   the certificate (bounded time and size, cached by URL) and checks the RSA PKCS#1 v1.5
   signature over the documented string-to-sign.
3. ``SnsVerifier.confirm_subscription`` verifies a ``SubscriptionConfirmation`` and only then
   GETs its ``SubscribeURL`` (which must also be an SNS host).

Every rejection is an ``SnsError`` whose ``status`` is the HTTP status to answer. SNS treats
4xx answers as final and retries 5xx, so a bad or forged message gets 400/403 (a certificate
URL the SNS host answers 4xx for is a forgery: 403) and only a failure on our side of the wire
(the certificate host did not answer, or answered 5xx) gets 502.

A forger can name any number of certificate URLs on a real SNS host, each a fetch from here.
So failed fetches are cached too (a repeated URL costs nothing), and at most
``max_cert_fetches`` fetches start per ``cert_fetch_interval``; past that a message whose
certificate is not cached gets 503 (SNS retries it later) without any outbound request.

The rooms: message.py (the envelope, the string to sign, SNS hosts, ``SnsError``),
certificates.py (fetching and caching signing certificates, bounded), verifier.py
(``SnsVerifier``).
"""

from glacierd.notifications.sns.message import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    SnsError,
    check_sns_url,
    parse_message,
    parse_timestamp,
    string_to_sign,
)
from glacierd.notifications.sns.verifier import SnsVerifier

__all__ = [
    "NOTIFICATION",
    "SUBSCRIPTION_CONFIRMATION",
    "UNSUBSCRIBE_CONFIRMATION",
    "SnsError",
    "SnsVerifier",
    "check_sns_url",
    "parse_message",
    "parse_timestamp",
    "string_to_sign",
]
