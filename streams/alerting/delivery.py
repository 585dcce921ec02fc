"""One HTTP delivery attempt of a notification to one receiver destination, and the backoff.

``Sender.send`` makes exactly one attempt and says what happened: ``sent``, ``retry`` (5xx,
429, timeouts, connection errors, Slack's ``ratelimited``) or ``failed`` (other 4xx, a missing
secret: sending again cannot help). Retrying is the router's job: it keeps a durable outbox
and calls ``send`` again after ``backoff_delay``, so a crash between attempts loses nothing.

Webhook URLs, Slack tokens and PagerDuty routing keys are secrets: reasons and log lines name
the receiver type and where the secret is read from (``SecretRef.where()``), never the value.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit
from typing import Any, Literal, Optional

import aiohttp
import orjson

from spendwarden.exceptions import ConfigError
from spendwarden.logs import get_logger, register_secret
from spendwarden.streams.alerting import payloads
from spendwarden.streams.alerting.model import Notification
from spendwarden.streams.alerting.receiver_config import (
    AlertmanagerReceiver, PagerDutyReceiver, ReceiverSpec, SecretRef, SlackReceiver, WebhookReceiver,
)

Outcome = Literal["sent", "retry", "failed"]
RETRY_AFTER_MAX_S = 3600.0  # a receiver asking for more than an hour gets an hour
_PREVIEW = 200  # characters of a refusal's body kept in the reason
_READ_LIMIT = 65536
log = get_logger(__name__)


@dataclass
class DeliveryResult:
    """What one attempt did; ``retry_after_s`` is the wait the receiver asked for, if any."""

    outcome: Outcome
    status: Optional[int]
    reason: str
    retry_after_s: Optional[float] = None


class _SecretMissing(Exception):
    pass


@dataclass
class _Request:
    what: str  # printable: the receiver type and where its secrets come from
    url: str
    body: bytes
    headers: dict[str, str]
    slack_api: bool = False


class Sender:
    """Owns one ``aiohttp.ClientSession``; ``async with Sender(...)`` or ``start()`` / ``close()``."""

    def __init__(self, *, timeout_s: float = 10.0, external_url: str,
                 alertmanager_hold_s: float = 4 * 3600 + 300) -> None:
        self.timeout_s = timeout_s
        self.external_url = external_url.rstrip("/")
        self.alertmanager_hold_s = alertmanager_hold_s
        self._session: Optional[aiohttp.ClientSession] = None
        self._secrets: set[str] = set()  # every value resolved so far, masked in any reason

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  headers={"User-Agent": "spendwarden"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "Sender":
        await self.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def send(self, n: Notification, spec: ReceiverSpec) -> DeliveryResult:
        """One attempt to deliver ``n`` to the destination ``spec``; never raises for the receiver's faults."""
        try:
            request = self._request(n, spec)
        except _SecretMissing as exc:
            result = DeliveryResult("failed", None, str(exc))
            log.error("alert_delivery_failed", receiver=n.receiver, destination=spec.type, reason=result.reason,
                      idempotency_key=n.idempotency_key)
            return result
        except Exception as exc:  # noqa: BLE001 - a payload that cannot be built never will be: refuse it
            result = DeliveryResult("failed", None, f"{spec.type}: the notification could not be built "
                                    f"({type(exc).__name__})")
            log.error("alert_delivery_failed", receiver=n.receiver, destination=spec.type, reason=result.reason,
                      idempotency_key=n.idempotency_key)
            return result
        result = await self._post(request)
        event = {"sent": "alert_delivered", "retry": "alert_delivery_retry", "failed": "alert_delivery_failed"}
        level = log.info if result.outcome == "sent" else log.warning
        level(event[result.outcome], receiver=n.receiver, destination=request.what, status=result.status,
              reason=result.reason, retry_after_s=result.retry_after_s, idempotency_key=n.idempotency_key,
              alerts=len(n.alerts))
        return result

    def _request(self, n: Notification, spec: ReceiverSpec) -> _Request:
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.idempotency_key}
        if isinstance(spec, WebhookReceiver):
            url = self._resolve(spec.url, "webhook url")
            body = orjson.dumps(payloads.webhook_body(n, self.external_url, spec.max_alerts))
            if spec.hmac_key is not None:
                key = self._resolve(spec.hmac_key, "webhook hmac_key")
                headers.update(payloads.signature_headers(key.encode(), body, time.time()))
            return _Request(f"webhook (url from {spec.url.where()})", url, body, headers)
        if isinstance(spec, SlackReceiver):
            if spec.webhook_url is not None:
                url = self._resolve(spec.webhook_url, "slack webhook_url")
                body = orjson.dumps(payloads.slack_message(n, self.external_url, spec.channel))
                return _Request(f"slack webhook (url from {spec.webhook_url.where()})", url, body, headers)
            assert spec.bot_token is not None
            token = self._resolve(spec.bot_token, "slack bot_token")
            headers.update({"Content-Type": "application/json; charset=utf-8", "Authorization": f"Bearer {token}"})
            body = orjson.dumps(payloads.slack_message(n, self.external_url, spec.channel))
            return _Request(f"slack bot (token from {spec.bot_token.where()})", spec.api_url, body, headers,
                            slack_api=True)
        if isinstance(spec, PagerDutyReceiver):
            routing_key = self._resolve(spec.routing_key, "pagerduty routing_key")
            body = orjson.dumps(payloads.pagerduty_event(n, routing_key, self.external_url))
            return _Request(f"pagerduty (routing key from {spec.routing_key.where()})", spec.url, body, headers)
        if isinstance(spec, AlertmanagerReceiver):
            if spec.basic_auth_password is not None:
                password = self._resolve(spec.basic_auth_password, "alertmanager basic_auth_password")
                pair = f"{spec.basic_auth_user or ''}:{password}".encode()
                encoded = base64.b64encode(pair).decode("ascii")
                self._secrets.add(encoded)
                register_secret(encoded)
                headers["Authorization"] = "Basic " + encoded
            body = orjson.dumps(payloads.alertmanager_alerts(n, self.alertmanager_hold_s, time.time()))
            return _Request("alertmanager", spec.url.rstrip("/") + "/api/v2/alerts", body, headers)
        raise TypeError(f"unknown receiver spec {type(spec).__name__}")

    async def _post(self, req: _Request) -> DeliveryResult:
        await self.start()
        assert self._session is not None
        try:
            async with self._session.post(req.url, data=req.body, headers=req.headers,
                                          allow_redirects=False) as resp:
                raw = await resp.content.read(_READ_LIMIT)
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        except asyncio.TimeoutError:
            return DeliveryResult("retry", None, f"{req.what}: no answer within {self.timeout_s:g} s")
        except aiohttp.InvalidURL:
            return DeliveryResult("failed", None, f"{req.what}: the URL is not a valid http(s) URL")
        except (aiohttp.ClientError, OSError) as exc:
            # The exception text can carry the URL (a secret): only its class is kept.
            return DeliveryResult("retry", None, f"{req.what}: {type(exc).__name__}")
        except (ValueError, TypeError) as exc:  # e.g. a header value with a newline (a bad secret file)
            return DeliveryResult("failed", None, f"{req.what}: the request could not be made ({type(exc).__name__})")
        return _classify(req, status, raw, retry_after, self._secrets)

    def _resolve(self, ref: SecretRef, name: str) -> str:
        try:
            value = ref.resolve()
        except ConfigError:
            raise _SecretMissing(f"{name} missing: nothing to read from {ref.where()}") from None
        self._secrets.add(value)
        if "://" in value:
            # A refusing server may echo only the path ("Cannot POST /hooks/<token>"): mask that too.
            tail = urlsplit(value)._replace(scheme="", netloc="").geturl()
            if len(tail) >= 8:
                self._secrets.add(tail)
                register_secret(tail)
        return value


def _classify(req: _Request, status: int, raw: bytes, retry_after: Optional[float],
              secrets: set[str]) -> DeliveryResult:
    """A response's outcome; the receiver's words are kept short, with every known secret masked
    (a refusing server may echo the URL or a header back)."""
    if 200 <= status < 300:
        if not req.slack_api:
            return DeliveryResult("sent", status, f"{req.what}: HTTP {status}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return DeliveryResult("retry", status, f"{req.what}: HTTP {status} with a body that is not JSON")
        if isinstance(answer, dict) and answer.get("ok") is True:
            return DeliveryResult("sent", status, f"{req.what}: ok")
        error = str(answer.get("error") if isinstance(answer, dict) else "unexpected answer")
        error = _scrub(error, secrets)[:_PREVIEW]
        if error in _SLACK_TRANSIENT:
            return DeliveryResult("retry", status, f"{req.what}: slack error {error}", retry_after)
        return DeliveryResult("failed", status, f"{req.what}: slack error {error}")
    text = f"{req.what}: HTTP {status}"
    preview = " ".join(_scrub(raw[:_PREVIEW * 4].decode("utf-8", "replace"), secrets).split())[:_PREVIEW]
    if preview:
        text += f": {preview}"
    if status in (408, 429) or status >= 500:
        return DeliveryResult("retry", status, text, retry_after)
    return DeliveryResult("failed", status, text)


# Slack Web API errors that mean "try again later", not "this request is wrong"
_SLACK_TRANSIENT = frozenset({"ratelimited", "internal_error", "service_unavailable", "fatal_error",
                              "request_timeout"})


def _scrub(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: a URL before a key inside it
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def backoff_delay(attempt: int, *, base_s: float = 1.0, cap_s: float = 300.0, retry_after_s: Optional[float] = None,
                  rng: Optional[random.Random] = None) -> float:
    """Seconds before attempt ``attempt + 1`` (``attempt`` = failed attempts so far, from 0).

    Full jitter, ``uniform(0, min(cap, base * 2**attempt))``, spreads the retries of many groups
    after an outage; a receiver's ``Retry-After`` is a floor (up to ``RETRY_AFTER_MAX_S``), since
    coming back sooner only earns another refusal.
    """
    if attempt < 0:
        raise ValueError("attempt counts failed attempts: 0 or more")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 64))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(max(retry_after_s, 0.0), RETRY_AFTER_MAX_S))
    return delay
