"""Refuse to start with Redis credentials Redis refuses, in one line.

Why only credentials: the worker keeps consuming through a Redis outage (decisions are
republished when it returns), so an unreachable Redis at start is a warning. A wrong
password or a user without the documented permissions (docs/security.md) never heals by
itself, so it stops the command with an actionable message instead of a silent backlog.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

import redis
from redis.exceptions import (
    AuthenticationError, ConnectionError, InvalidResponse, NoPermissionError, RedisClusterException, ResponseError,
    TimeoutError,
)

from spendwarden.exceptions import ConfigError
from spendwarden.logs import get_logger
from spendwarden.streams.publisher import FENCED_WRITE_SCRIPT, is_acl_refusal, probe_write

log = get_logger(__name__)

_AUTH_WORDS = ("WRONGPASS", "NOAUTH", "invalid username-password", "invalid password")


def check_redis_credentials(url: str, password: Optional[str], timeout_s: float = 2.0, cluster: bool = False) -> None:
    """PING, load and run the fenced-write script on a probe key as the configured user;
    ConfigError when refused."""
    where = _where(url)
    client = None
    try:
        factory = redis.RedisCluster if cluster else redis.Redis
        client = factory.from_url(url, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client.ping()
        client.script_load(FENCED_WRITE_SCRIPT)
        probe_write(client)
    except ValueError as exc:
        raise ConfigError(f"SPENDWARDEN_REDIS_URL is not a Redis URL ({type(exc).__name__}); expected "
                          "redis://[user[:password]@]host:port/db, rediss://... or unix:///path") from None
    except (ConnectionError, TimeoutError, InvalidResponse, ResponseError, RedisClusterException) as exc:
        # The cluster client wraps what a node answered at start-up: judge the answer itself.
        cause = (exc.__cause__ or exc.__context__ or exc) if isinstance(exc, RedisClusterException) else exc
        refusal = _refusal(cause, where) or _refusal(exc, where)
        if refusal is not None:
            raise refusal from None
        log.warning("redis unreachable at start; decisions are written once it answers",
                    redis=where, error=_first_line(exc))
    finally:
        if client is not None:
            client.close()


def _refusal(exc: BaseException, where: str) -> ConfigError | None:
    """The one-line error for credentials or permissions Redis refused; None for an outage."""
    if isinstance(exc, NoPermissionError) or (isinstance(exc, ResponseError) and is_acl_refusal(exc)):
        return ConfigError(f"Redis at {where}: the user lacks a permission spendwarden needs ({_first_line(exc)}); "
                           "grant what docs/security.md lists")
    if isinstance(exc, AuthenticationError) or any(word in str(exc) for word in _AUTH_WORDS):
        return ConfigError(f"Redis at {where} refused the credentials ({_first_line(exc)}); check the user and "
                           "password in SPENDWARDEN_REDIS_URL, SPENDWARDEN_REDIS_PASSWORD or _FILE")
    if "Cluster mode is not enabled" in str(exc):
        return ConfigError(f"Redis at {where} is not a cluster node (SPENDWARDEN_REDIS_CLUSTER=true), or the user "
                           "lacks +cluster|slots (docs/security.md)")
    if isinstance(exc, ResponseError):
        return ConfigError(f"Redis at {where} refused a command: {_first_line(exc)}")
    return None


def _where(url: str) -> str:
    """host:port/db without user or password (the URL may carry secrets)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix socket {parts.path}"
        return f"{parts.hostname}:{parts.port or 6379}/{parts.path.rsplit('/', 1)[-1] if parts.path else '0'}"
    except ValueError:
        return "<unparsable url>"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
