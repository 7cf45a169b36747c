"""[sqs]: notifications through an SQS queue that the SNS topic delivers to.

For hosts that accept no connections from the internet: glacierd long-polls the queue with
the AWS SDK (messages wait there up to 14 days; IAM decides who may send and receive).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.dataclasses import dataclass

from glacierd.config.errors import invalid, must_be
from glacierd.config.fields import SECTION, PositiveInt, is_loopback

# https://sqs.eu-central-1.amazonaws.com/123456789012/glacierd-restores (or the legacy
# https://eu-central-1.queue.amazonaws.com/…); the region is read from it.
_AWS_QUEUE_URL = re.compile(
    r"^https://(?:sqs\.)?(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})\."
    r"(?:queue\.)?amazonaws\.com(?:\.cn)?/\d{12}/[A-Za-z0-9_-]{1,80}(?:\.fifo)?$"
)
_ANY_QUEUE_URL = re.compile(r"^https?://[^/\s]+/\d+/[A-Za-z0-9_-]{1,80}(?:\.fifo)?$")
_TOPIC_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:sns:")

WaitSeconds = Annotated[StrictInt, Field(ge=1, le=20)]
VisibilitySeconds = Annotated[StrictInt, Field(ge=1, le=43200)]


@dataclass(frozen=True, config=SECTION)
class SqsConfig:
    enabled: StrictBool = False
    queue_url: StrictStr = ""
    # Default: the region in an AWS queue URL.
    region: StrictStr | None = None
    endpoint_url: StrictStr | None = None
    profile: StrictStr | None = None
    # SNS envelopes from other topics are refused.
    topic_arns: tuple[str, ...] = ()
    # The subscription delivers the bare message (RawMessageDelivery=true): no envelope, no
    # SNS signature; the queue's policy alone says who may send.
    raw_delivery: StrictBool = False
    wait_time_seconds: WaitSeconds = 20
    visibility_timeout_seconds: VisibilitySeconds = 60
    max_receives: PositiveInt = 5
    # Tests fetch SNS signing certificates from a local server; refused unless the queue is
    # on a loopback endpoint.
    cert_url_override: StrictStr | None = None

    @field_validator("topic_arns", mode="before")
    @classmethod
    def _topic_arns(cls, arns: Any) -> Any:
        if not isinstance(arns, list | tuple):
            raise must_be("a list", arns)
        for arn in arns:
            if not isinstance(arn, str) or not _TOPIC_ARN.match(arn):
                raise invalid(
                    f"{{setting}} holds {arn!r}, which is not an SNS topic ARN",
                    "write 'arn:aws:sns:REGION:ACCOUNT:TOPIC'",
                )
        return tuple(arns)

    @model_validator(mode="after")
    def _consistent(self) -> SqsConfig:
        if not self.enabled:
            return self
        if not self.queue_url:
            raise invalid(
                "{section}.enabled is true but {section}.queue_url is missing",
                "set it to the queue's URL (aws sqs get-queue-url --queue-name NAME)",
                key="queue_url",
            )
        pattern = _ANY_QUEUE_URL if self.endpoint_url else _AWS_QUEUE_URL
        if not pattern.match(self.queue_url):
            raise invalid(
                f"{{section}}.queue_url {self.queue_url!r} is not an SQS queue URL",
                "write 'https://sqs.REGION.amazonaws.com/ACCOUNT/NAME'",
                key="queue_url",
            )
        if not self.raw_delivery and not self.topic_arns:
            raise invalid(
                "{section}.topic_arns is empty",
                "list the topic ARNs whose messages glacierd should accept (or set "
                "{section}.raw_delivery = true for a raw-delivery subscription)",
                key="topic_arns",
            )
        if self.cert_url_override and not (
            self.endpoint_url and is_loopback(_host(self.endpoint_url))
        ):
            raise invalid(
                "{section}.cert_url_override is for tests only and {section}.endpoint_url is "
                "not a loopback address",
                "remove {section}.cert_url_override",
                key="cert_url_override",
            )
        return self

    @property
    def queue_region(self) -> str | None:
        """The region to use: the setting, else the one in an AWS queue URL."""
        found = _AWS_QUEUE_URL.match(self.queue_url)
        return self.region or (found["region"] if found else None)


def _host(url: str) -> str:
    return re.sub(r"^[a-z]+://|[:/].*$", "", url)
