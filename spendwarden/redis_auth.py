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
    except AuthenticationError as exc:
        raise ConfigError(f"Redis at {where} refused the credentials ({_first_line(exc)}); check the user and "
                          "password in SPENDWARDEN_REDIS_URL, SPENDWARDEN_REDIS_PASSWORD or _FILE") from None
    except NoPermissionError as exc:
        raise ConfigError(f"Redis at {where}: the user lacks a permission spendwarden needs ({_first_line(exc)}); "
                          "grant what docs/security.md lists") from None
    except ResponseError as exc:
        if is_acl_refusal(exc):
            raise ConfigError(f"Redis at {where}: the user lacks a permission spendwarden needs "
                              f"({_first_line(exc)}); grant what docs/security.md lists") from None
        if any(word in str(exc) for word in _AUTH_WORDS):
            raise ConfigError(f"Redis at {where} refused the credentials ({_first_line(exc)}); check the user "
                              "and password in SPENDWARDEN_REDIS_URL, SPENDWARDEN_REDIS_PASSWORD or _FILE") from None
        raise ConfigError(f"Redis at {where} refused a command: {_first_line(exc)}") from None
    except (ConnectionError, TimeoutError, InvalidResponse, RedisClusterException) as exc:
        log.warning("redis unreachable at start; decisions are written once it answers",
                    redis=where, error=_first_line(exc))
    finally:
        if client is not None:
            client.close()


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
