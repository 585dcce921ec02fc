"""Redis TLS settings become the same verified options for every client, or one-line errors.

The handshake itself (right CA, wrong CA, mutual TLS) is exercised against a TLS redis-server in
tests/integration/test_redis_tls.py; this file checks the settings and the refusals that need
no server.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from spendwarden.exceptions import ConfigError
from spendwarden.redis_auth import _tls_refusal
from spendwarden.redis_client import RedisTarget, async_client, redis_target, sync_client
from spendwarden.settings import load_settings

TEST_CA = Path(__file__).with_name("data") / "test-ca.pem"  # a self-signed certificate, no key
URL = "rediss://worker:s3cret@redis.internal:6380/2"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPENDWARDEN_"):
            monkeypatch.delenv(name)


def connection_kwargs(client: Any) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


def test_rediss_url_verifies_with_the_configured_ca() -> None:
    target = redis_target(load_settings(redis_url=URL, redis_ssl_cafile=TEST_CA))
    client = sync_client(target, timeout_s=2)
    assert isinstance(client, redis.Redis)
    kwargs = connection_kwargs(client)
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == (
        str(TEST_CA), "required", True)
    assert (kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (None, None)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("redis.internal", 6380, 2, "s3cret")
    client.close()


def test_rediss_url_without_settings_verifies_with_system_cas() -> None:
    kwargs = connection_kwargs(sync_client(redis_target(load_settings(redis_url=URL)), timeout_s=2))
    assert kwargs["ssl_ca_certs"] is None
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("required", True)


def test_async_clients_get_the_same_tls_and_the_worker_timeouts() -> None:
    async def build(cluster: bool) -> Any:
        url = URL.replace("/2", "/0") if cluster else URL  # a cluster has db 0 only
        target = redis_target(load_settings(redis_url=url, redis_ssl_cafile=TEST_CA, redis_cluster=cluster))
        return async_client(target, timeout_s=2.0, connect_timeout_s=1.0)

    standalone = asyncio.run(build(False))
    assert isinstance(standalone, aioredis.Redis)
    kwargs = connection_kwargs(standalone)
    assert standalone.connection_pool.connection_class is aioredis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == (
        str(TEST_CA), "required", True)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.0, 1.0)
    cluster = asyncio.run(build(True))  # the async cluster client connects lazily
    assert isinstance(cluster, AsyncRedisCluster)
    [node] = cluster.nodes_manager.startup_nodes.values()
    assert node.connection_class is aioredis.SSLConnection
    assert (node.connection_kwargs["ssl_ca_certs"], node.connection_kwargs["ssl_cert_reqs"],
            node.connection_kwargs["ssl_check_hostname"]) == (str(TEST_CA), "required", True)


def test_plain_url_gets_no_tls_options() -> None:
    kwargs = connection_kwargs(sync_client(RedisTarget("redis://127.0.0.1:6379/0"), timeout_s=0.5))
    assert not any(key.startswith("ssl") for key in kwargs)


@pytest.mark.parametrize("setting", ["redis_ssl_cafile", "redis_ssl_certfile"])
def test_tls_settings_with_a_plain_url_are_refused_in_one_line(setting: str) -> None:
    target = redis_target(load_settings(redis_url="redis://:pw@10.0.0.5:6379/0", **{setting: TEST_CA}))
    with pytest.raises(ConfigError) as raised:
        sync_client(target, timeout_s=2)
    message = str(raised.value)
    assert message == ("SPENDWARDEN_REDIS_SSL_* apply to rediss:// URLs only, but SPENDWARDEN_REDIS_URL is "
                       "redis://: use rediss:// or unset them")
    with pytest.raises(ConfigError):
        async_client(target, timeout_s=2)


def test_missing_ca_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = redis_target(load_settings(redis_url=URL, redis_ssl_cafile=tmp_path / "nope.pem"))
    with pytest.raises(ConfigError) as raised:
        sync_client(target, timeout_s=2)
    assert str(raised.value) == f"cannot read redis_ssl_cafile {tmp_path / 'nope.pem'}: No such file or directory"


def test_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^redis_ssl_cafile .*junk.pem holds no usable CA certificate"):
        sync_client(redis_target(load_settings(redis_url=URL, redis_ssl_cafile=junk)), timeout_s=2)


def test_client_certificate_without_its_key_is_refused() -> None:
    target = redis_target(load_settings(redis_url=URL, redis_ssl_certfile=TEST_CA))  # a certificate, no key
    with pytest.raises(ConfigError, match=r"^redis_ssl_certfile .* are not a certificate and its key"):
        sync_client(target, timeout_s=2)


def test_key_without_a_certificate_is_refused() -> None:
    target = redis_target(load_settings(redis_url=URL, redis_ssl_keyfile=TEST_CA))
    with pytest.raises(ConfigError, match="SPENDWARDEN_REDIS_SSL_KEYFILE needs SPENDWARDEN_REDIS_SSL_CERTFILE"):
        sync_client(target, timeout_s=2)


@pytest.mark.parametrize("query", ["ssl_cert_reqs=none", "ssl_check_hostname=false", "ssl_ca_certs=/tmp/x.pem"])
def test_url_cannot_override_tls_in_its_query(query: str) -> None:
    """redis-py lets URL query options win over keyword arguments: verification could be turned off there."""
    target = redis_target(load_settings(redis_url=f"{URL}?{query}"))
    with pytest.raises(ConfigError) as raised:
        sync_client(target, timeout_s=2)
    assert str(raised.value).startswith(f"SPENDWARDEN_REDIS_URL sets {query.split('=')[0]} in its query")
    assert "s3cret" not in str(raised.value)


def test_target_repr_hides_url_and_password() -> None:
    target = redis_target(load_settings(redis_url=URL, redis_password="other-secret", redis_ssl_cafile=TEST_CA))
    assert "s3cret" not in repr(target) and "other-secret" not in repr(target)
    assert target.where == "redis.internal:6380/2"


def _wrapped(inner: BaseException) -> redis.exceptions.ConnectionError:
    """What redis-py raises: its ConnectionError with the ssl error as context."""
    try:
        try:
            raise inner
        except OSError:
            raise redis.exceptions.ConnectionError("Error 1 connecting to redis.internal:6380.")
    except redis.exceptions.ConnectionError as exc:
        return exc


def test_certificate_verification_failure_is_a_config_error() -> None:
    failure = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    failure.verify_message = "unable to get local issuer certificate"
    refusal = _tls_refusal(_wrapped(failure), "redis.internal:6380/2")
    assert refusal is not None
    assert str(refusal).startswith("Redis at redis.internal:6380/2: TLS certificate verification failed "
                                   "(unable to get local issuer certificate); ")
    assert "\n" not in str(refusal)


def test_refused_handshake_is_a_config_error_and_a_refused_connection_is_not() -> None:
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)")
    refusal = _tls_refusal(_wrapped(alert), "redis.internal:6380/2")
    assert refusal is not None
    assert str(refusal).startswith("Redis at redis.internal:6380/2: the TLS connection failed ([SSL: "
                                   "TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required); ")
    assert "SPENDWARDEN_REDIS_SSL_CERTFILE" in str(refusal)
    assert _tls_refusal(_wrapped(ConnectionRefusedError(111, "Connection refused")), "x:1/0") is None
