"""The one way spendwarden builds Redis clients: sync or async, standalone or cluster, with TLS.

Why one module: every client of the process (the worker's writer, the start check, `up`) must
connect the same way. A client built elsewhere would skip the CA file or the client
certificate and fail, or worse, talk to a server nobody verified.

TLS comes from settings (``SPENDWARDEN_REDIS_SSL_*``) and applies to ``rediss://`` URLs only.
Verification is always on: the server certificate must chain to the CA file (or a system CA)
and name the host of the URL. The URL may not carry ``ssl_*`` query options, because
redis-py lets them override these settings, including turning verification off.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import parse_qs, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from spendwarden.exceptions import ConfigError
from spendwarden.settings import Settings

SyncClient = Union[redis.Redis, redis.RedisCluster]
AsyncClient = Union[aioredis.Redis, AsyncRedisCluster]


@dataclass(frozen=True)
class RedisTLS:
    """TLS files for a ``rediss://`` URL; all unset means system CAs and no client certificate."""

    cafile: Optional[Path] = None
    certfile: Optional[Path] = None
    keyfile: Optional[Path] = None

    def is_set(self) -> bool:
        return any((self.cafile, self.certfile, self.keyfile))


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to connect. The URL and password are secrets: kept out of repr, and
    messages name the server by :attr:`where` only."""

    url: str = field(repr=False)
    password: Optional[str] = field(default=None, repr=False)
    cluster: bool = False
    tls: RedisTLS = RedisTLS()

    @property
    def where(self) -> str:
        return where(self.url)

    @property
    def uses_tls(self) -> bool:
        return _scheme(self.url) == "rediss"


def redis_target(settings: Settings) -> RedisTarget:
    """The configured Redis: URL and password (from env, file or the URL), cluster or not, TLS files."""
    url, password = settings.redis_connection()
    tls = RedisTLS(settings.redis_ssl_cafile, settings.redis_ssl_certfile, settings.redis_ssl_keyfile)
    return RedisTarget(url, password, cluster=settings.redis_cluster, tls=tls)


def check_tls(target: RedisTarget) -> None:
    """ConfigError unless the TLS settings fit the URL and the files load (readable, PEM, key
    matching): a wrong setting is one line at start, not a connection error that looks like
    an outage. Every client factory below runs it."""
    query = _query_keys(target.url)
    options = sorted(key for key in query if key.startswith("ssl"))
    if options:
        raise ConfigError(f"SPENDWARDEN_REDIS_URL sets {', '.join(options)} in its query: Redis TLS is configured with "
                          "SPENDWARDEN_REDIS_SSL_CAFILE, _CERTFILE and _KEYFILE only (verification cannot be turned off)")
    tls = target.tls
    if not tls.is_set():
        return
    if not target.uses_tls:
        scheme = _scheme(target.url) or "<no scheme>"
        raise ConfigError(f"SPENDWARDEN_REDIS_SSL_* apply to rediss:// URLs only, but SPENDWARDEN_REDIS_URL is "
                          f"{scheme}://: use rediss:// or unset them")
    if tls.keyfile and not tls.certfile:
        raise ConfigError("SPENDWARDEN_REDIS_SSL_KEYFILE needs SPENDWARDEN_REDIS_SSL_CERTFILE (the client certificate)")
    for name, path in (("cafile", tls.cafile), ("certfile", tls.certfile), ("keyfile", tls.keyfile)):
        if path is not None:
            _readable(f"redis_ssl_{name}", path)
    try:  # the same loading the connection does later, so a bad file is reported here with its setting
        context = ssl.create_default_context(cafile=str(tls.cafile) if tls.cafile else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"redis_ssl_cafile {tls.cafile} holds no usable CA certificate ({ssl_message(exc)})") from None
    if tls.certfile:
        try:
            context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
        except ssl.SSLError as exc:
            raise ConfigError(f"redis_ssl_certfile {tls.certfile} and redis_ssl_keyfile {tls.keyfile or '(none)'} "
                              f"are not a certificate and its key ({ssl_message(exc)})") from None


def sync_client(target: RedisTarget, *, timeout_s: float, connect_timeout_s: Optional[float] = None,
                retry: Any = None) -> SyncClient:
    """A blocking client (start check, `up`); redis-py's default retry unless ``retry`` is given."""
    check_tls(target)
    factory: Any = redis.RedisCluster if target.cluster else redis.Redis
    return factory.from_url(target.url, **_options(target, timeout_s, connect_timeout_s, retry))


def async_client(target: RedisTarget, *, timeout_s: float, connect_timeout_s: Optional[float] = None,
                 retry: Any = None) -> AsyncClient:
    """An asyncio client (the worker's decision writer)."""
    check_tls(target)
    factory: Any = AsyncRedisCluster if target.cluster else aioredis.Redis
    return factory.from_url(target.url, **_options(target, timeout_s, connect_timeout_s, retry))


def _options(target: RedisTarget, timeout_s: float, connect_timeout_s: Optional[float], retry: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "password": target.password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s if connect_timeout_s is None else connect_timeout_s,
    }
    if retry is not None:
        options["retry"] = retry
    if target.uses_tls:
        # Spelled out: redis-py before 6.0 did not check the host name by default.
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True,
                       ssl_ca_certs=_path(target.tls.cafile), ssl_certfile=_path(target.tls.certfile),
                       ssl_keyfile=_path(target.tls.keyfile))
    return options


def where(url: str) -> str:
    """host:port/db without user or password (the URL may carry secrets)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix socket {parts.path}"
        return f"{parts.hostname}:{parts.port or 6379}/{parts.path.rsplit('/', 1)[-1] if parts.path else '0'}"
    except ValueError:
        return "<unparsable url>"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _query_keys(url: str) -> set[str]:
    try:
        return set(parse_qs(urlsplit(url).query))
    except ValueError:
        return set()  # redis-py reports the unparsable URL


def _readable(setting: str, path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc.strerror}") from None


def _path(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


def ssl_message(exc: BaseException) -> str:
    """An ssl error in one short line: what OpenSSL said, without the ``(_ssl.c:1006)`` suffix."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    text = str(exc.args[1]) if isinstance(exc, ssl.SSLError) and len(exc.args) > 1 else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)\.?$", "", text.splitlines()[0] if text else type(exc).__name__)
