"""Receiver settings as they appear in the routing file, with secrets only by reference.

A webhook URL, a Slack token, a PagerDuty routing key or an HMAC key is never written in the
routing file: it names an environment variable (``env``) or a file (``file``, how Kubernetes
and Docker mount secrets). The value is read when a notification is sent and registered with
the log masker (spendwarden/logs.py), so no log line can print it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spendwarden.exceptions import ConfigError
from spendwarden.logs import register_secret


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret lives: exactly one of an environment variable or a file."""

    env: Optional[str] = None
    file: Optional[Path] = None

    @model_validator(mode="after")
    def _one_source(self) -> "SecretRef":
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self

    def where(self) -> str:
        """Where the secret is read from, safe to print."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"

    def resolve(self) -> str:
        """The secret's value (registered with the log masker); ConfigError when it is missing."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"secret not set: environment variable {self.env} is empty or missing")
        else:
            assert self.file is not None
            try:
                value = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from None
            if not value:
                raise ConfigError(f"secret file {self.file} is empty")
        register_secret(value)
        return value


class SlackReceiver(_Strict):
    """Slack incoming webhook (``webhook_url``) or a bot token posting to ``channel`` (chat.postMessage)."""

    type: Literal["slack"] = "slack"
    webhook_url: Optional[SecretRef] = None
    bot_token: Optional[SecretRef] = None
    channel: Optional[str] = None
    api_url: str = "https://slack.com/api/chat.postMessage"

    @model_validator(mode="after")
    def _one_way(self) -> "SlackReceiver":
        if (self.webhook_url is None) == (self.bot_token is None):
            raise ValueError("give exactly one of webhook_url or bot_token")
        if self.bot_token is not None and not self.channel:
            raise ValueError("a bot_token needs a channel")
        return self


class WebhookReceiver(_Strict):
    """Any HTTP endpoint taking Alertmanager's webhook JSON; signed with HMAC-SHA256 when ``hmac_key`` is set."""

    type: Literal["webhook"] = "webhook"
    url: SecretRef
    hmac_key: Optional[SecretRef] = None
    max_alerts: int = Field(0, ge=0, description="0: no limit; else only the first N alerts, truncatedAlerts says how many were left out")


class PagerDutyReceiver(_Strict):
    """PagerDuty Events API v2: trigger while firing, resolve when cleared, one dedup_key per group."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretRef
    url: str = "https://events.pagerduty.com/v2/enqueue"


class AlertmanagerReceiver(_Strict):
    """An existing Alertmanager's API v2: alerts are posted (and re-posted while firing); endsAt on resolve."""

    type: Literal["alertmanager"] = "alertmanager"
    url: str = Field(description="Alertmanager's base URL, e.g. http://alertmanager:9093")
    basic_auth_password: Optional[SecretRef] = None
    basic_auth_user: Optional[str] = None


ReceiverSpec = Union[SlackReceiver, WebhookReceiver, PagerDutyReceiver, AlertmanagerReceiver]


class Receiver(_Strict):
    """A named receiver: one or more destinations, each a typed spec."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    slack: list[SlackReceiver] = Field(default_factory=list)
    webhook: list[WebhookReceiver] = Field(default_factory=list)
    pagerduty: list[PagerDutyReceiver] = Field(default_factory=list)
    alertmanager: list[AlertmanagerReceiver] = Field(default_factory=list)

    def destinations(self) -> list[ReceiverSpec]:
        return [*self.slack, *self.webhook, *self.pagerduty, *self.alertmanager]


def destination_id(spec: ReceiverSpec) -> str:
    """A stable name for one destination: a hash of its settings (secret references, never values).

    Pending notifications remember this, not a position, so reordering a receiver's
    destinations in the routing file cannot send a backlog to the wrong one.
    """
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
