"""Refuse to start with Redis credentials or TLS Redis refuses, in one line.

Why only credentials and TLS: the worker keeps consuming through a Redis outage (decisions are
republished when it returns), so an unreachable Redis at start is a warning. A wrong
password, a user without the documented permissions (docs/security.md), a server certificate
the configured CA did not sign or a client certificate the server wants and does not get
never heals by itself, so it stops the command with an actionable message instead of a
silent backlog.
"""

from __future__ import annotations

import ssl

from redis.exceptions import (
    AuthenticationError, ConnectionError, InvalidResponse, NoPermissionError, RedisClusterException, ResponseError,
    TimeoutError,
)

from spendwarden.exceptions import ConfigError
from spendwarden.logs import get_logger
from spendwarden.redis_client import RedisTarget, ssl_message, sync_client
from spendwarden.streams.publisher import FENCED_WRITE_SCRIPT, is_acl_refusal, probe_write

log = get_logger(__name__)

_AUTH_WORDS = ("WRONGPASS", "NOAUTH", "invalid username-password", "invalid password")


def check_redis_credentials(target: RedisTarget, timeout_s: float = 2.0) -> None:
    """PING, load and run the fenced-write script on a probe key as the configured user, over
    the configured TLS; ConfigError when refused."""
    where = target.where
    client = None
    try:
        client = sync_client(target, timeout_s=timeout_s)
        client.ping()
        client.script_load(FENCED_WRITE_SCRIPT)
        probe_write(client)
    except ValueError as exc:
        raise ConfigError(f"SPENDWARDEN_REDIS_URL is not a Redis URL ({type(exc).__name__}); expected "
                          "redis://[user[:password]@]host:port/db, rediss://... or unix:///path") from None
    except (ConnectionError, TimeoutError, InvalidResponse, ResponseError, RedisClusterException) as exc:
        # The cluster client wraps what a node answered at start-up: judge the answer itself.
        cause = (exc.__cause__ or exc.__context__ or exc) if isinstance(exc, RedisClusterException) else exc
        refusal = _tls_refusal(exc, where) or _refusal(cause, where) or _refusal(exc, where)
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


def _tls_refusal(exc: BaseException, where: str) -> ConfigError | None:
    """The one-line error when TLS failed (redis-py wraps the ssl error in a ConnectionError);
    None when no ssl error is involved. A server certificate the CA did not sign, a host it
    does not name, a client certificate missing or refused: none of these heals by itself."""
    failure = _ssl_error(exc)
    if isinstance(failure, ssl.SSLCertVerificationError):
        return ConfigError(f"Redis at {where}: TLS certificate verification failed ({ssl_message(failure)}); the "
                           "server certificate must be signed by the CA in SPENDWARDEN_REDIS_SSL_CAFILE (system CAs "
                           "when unset) and name the host of SPENDWARDEN_REDIS_URL")
    if failure is not None:
        return ConfigError(f"Redis at {where}: the TLS connection failed ({ssl_message(failure)}); check that the "
                           "port serves TLS and, if the server requires client certificates (tls-auth-clients), "
                           "set SPENDWARDEN_REDIS_SSL_CERTFILE and _KEYFILE to one its CA signed")
    return None


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The first ssl.SSLError among the exception, its causes and contexts."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
