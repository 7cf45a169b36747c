"""[health] and [hooks]: when glacierd calls itself unhealthy, and whom it tells about a
backup or restore that ended."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from glacierd.config.errors import invalid
from glacierd.config.fields import SECTION, PositiveInt, PositiveSeconds

PositiveHours = Annotated[StrictFloat, Field(gt=0)]


@dataclass(frozen=True, config=SECTION)
class HealthConfig:
    """The thresholds of ``/health`` and ``glacierd check``."""

    # Unhealthy when the last completed backup finished longer ago than this.
    max_backup_age_hours: PositiveHours = 26.0
    # A restore may take its slowest retrieval's maximum plus this long (for fetching and
    # restoring) before it counts as stuck.
    restore_grace_hours: PositiveHours = 6.0
    # Free space state_dir needs beyond the newest database dump (a fetch must fit).
    disk_headroom_mib: PositiveInt = 1024
    # How long one answer of the store (reachable or not) is reused.
    store_check_interval_seconds: PositiveSeconds = 300.0


def _command(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(arg, str) and arg for arg in value
    ):
        raise invalid(
            "{setting} must be a list of non-empty strings",
            'write the program and its arguments, such as ["/usr/local/bin/alert", "--to", "ops"]',
        )
    return list(value)


@dataclass(frozen=True, config=SECTION)
class HooksConfig:
    """A webhook and a command told about every failed (optionally every successful) backup
    and restore, each once per event."""

    on_success: StrictBool = False
    # The webhook's URL is read from this environment variable: such URLs usually hold a
    # secret (a Slack or Teams webhook), and secrets never go in the configuration file.
    webhook_url_env: StrictStr = "GLACIERD_WEBHOOK_URL"
    # A program and its arguments (no shell); the event arrives as JSON on its stdin.
    command: list[str] = Field(default_factory=list)
    timeout_seconds: PositiveSeconds = 30.0
    max_attempts: PositiveInt = 5
    # The first retry waits this long; each further one twice as long as the one before.
    retry_seconds: PositiveSeconds = 60.0
    # Read from webhook_url_env while loading; not a setting itself (and never shown).
    webhook_url: str | None = field(default=None, init=False, repr=False)

    @field_validator("command", mode="before")
    @classmethod
    def _command_is_a_list(cls, value: Any) -> list[str]:
        return _command(value)

    @model_validator(mode="after")
    def _webhook_url_from_the_environment(self, info: ValidationInfo) -> HooksConfig:
        context = info.context if isinstance(info.context, dict) else {}
        environ = context.get("environ") or {}
        url = environ.get(self.webhook_url_env) or None
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # The URL itself is not shown: it may hold a secret.
                raise invalid(
                    f"the environment variable {self.webhook_url_env} (named by "
                    "{setting}) does not hold an http:// or https:// URL",
                    f"set {self.webhook_url_env} to the webhook's full URL, or unset it",
                    key="webhook_url_env",
                )
        object.__setattr__(self, "webhook_url", url)  # frozen: set while validating
        return self

    @property
    def webhook_host(self) -> str | None:
        """The webhook's host, for log lines (the URL's path may hold a secret)."""
        return urlsplit(self.webhook_url).hostname if self.webhook_url else None

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks configured: "webhook", "command", both or none."""
        return (("webhook",) if self.webhook_url else ()) + (("command",) if self.command else ())
