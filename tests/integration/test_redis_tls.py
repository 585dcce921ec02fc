"""Redis over TLS against a TLS-only redis-server with a throwaway CA made here with `openssl`.

The server listens on a TLS port only (``--port 0``) and needs a password, so every write that
lands went through the handshake the settings configured. Checked: the worker's client and
its start check with the right CA (decisions written through the fenced script); a server
certificate from another CA, or not naming the host, stops the start check in one line; with
mutual TLS a missing or foreign client certificate is refused in one line and the right one
works, also for a real `spendwarden worker` process; a Redis Cluster client gets the same TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from harness import SPENDWARDEN, WorkerRun, encode, event, new_run, produce
from spendwarden.embedded import free_port
from spendwarden.exceptions import ConfigError
from spendwarden.redis_auth import check_redis_credentials
from spendwarden.redis_client import redis_target, sync_client
from spendwarden.settings import Settings, load_settings
from spendwarden.streams.effects import DecisionChanged
from spendwarden.streams.publisher import FENCED_WRITE_SCRIPT, DecisionPublisher, decisions_key
from spendwarden.streams.service import _redis_client
from test_worker import wait_for

PASSWORD = "tls-secret"
BLOCK = {"level": "block", "action": "block", "reason": "spend 120% of 100 USD", "rule": "uc-cap",
         "rules_version": "v1", "expires_at": "2031-01-01T00:00:00Z", "since": "2030-12-01T10:00:00Z"}


@dataclass(frozen=True)
class Pki:
    """A CA that signed the server and a client certificate, and an unrelated CA with its own client."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    foreign_client_cert: Path
    foreign_client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=spendwarden test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _make_leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, request, ext = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr",
                               folder / f"{name}.ext")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
             "-out", str(request), "-subj", f"/CN={name}")
    ext.write_text(f"{extensions}\nbasicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca, other = _make_ca(folder, "ca"), _make_ca(folder, "other-ca")
    server = _make_leaf(folder, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    client = _make_leaf(folder, "client", ca, "extendedKeyUsage=clientAuth")
    foreign = _make_leaf(folder, "foreign-client", other, "extendedKeyUsage=clientAuth")
    return Pki(ca[0], other[0], *server, *client, *foreign)


def _start_tls_redis(folder: Path, pki: Pki, auth_clients: bool,
                     *extra: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A redis-server with a TLS port only (no plaintext port) and a password."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    port = free_port()
    while port > 55535:  # a cluster node's bus port is port + 10000
        port = free_port()
    folder.mkdir()
    with open(folder / "redis.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--requirepass", PASSWORD,
             "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
             "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes" if auth_clients else "no", *extra],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, timeout_s=10, what="TLS redis-server")
        assert process.poll() is None, (folder / "redis.log").read_text()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return port, process


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """Port of a TLS-only redis-server whose certificate ``pki.ca`` signed; clients need no certificate."""
    port, process = _start_tls_redis(tmp_path / "redis-tls", pki, auth_clients=False)
    yield port
    process.kill()
    process.wait()


@pytest.fixture
def mtls_redis(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """Port of a TLS-only redis-server that also wants a client certificate signed by ``pki.ca``."""
    port, process = _start_tls_redis(tmp_path / "redis-mtls", pki, auth_clients=True)
    yield port
    process.kill()
    process.wait()


def tls_settings(port: int, cafile: Optional[Path], host: str = "127.0.0.1", **extra: Any) -> Settings:
    return load_settings(redis_url=f"rediss://:{PASSWORD}@{host}:{port}/0", redis_ssl_cafile=cafile, **extra)


def script_loaded(settings: Settings) -> bool:
    """Whether the fenced-write script is in the server's cache: the start check loaded it over TLS."""
    client = sync_client(redis_target(settings), timeout_s=2)
    try:
        return bool(client.script_exists(hashlib.sha1(FENCED_WRITE_SCRIPT.encode()).hexdigest())[0])
    finally:
        client.close()


def write_and_read_back(settings: Settings) -> dict[str, Any]:
    """Apply one decision through the worker's own client and publisher; return what Redis holds."""

    async def main() -> dict[str, Any]:
        client = _redis_client(settings)
        try:
            publisher = DecisionPublisher(client, generation=3, heartbeat_ttl_s=30)
            change = DecisionChanged(tenant_id="acme", field="chat:low", verdict=BLOCK, at="2030-12-01T10:00:00Z")
            assert await publisher.apply([change], position=7) == 1
            assert publisher.healthy and not publisher.write_failed
            fence = await client.hget(decisions_key("acme"), "_fence")
            assert fence == b"3:7"
            return await publisher.read("acme")
        finally:
            await client.aclose()

    return asyncio.run(main())


def one_line_refusal(settings: Settings) -> str:
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        check_redis_credentials(redis_target(settings))
    message = str(raised.value)
    assert time.monotonic() - started < 15
    assert "\n" not in message and PASSWORD not in message
    return message


def test_right_ca_connects_the_start_check_and_the_worker_client(tls_redis: int, pki: Pki) -> None:
    settings = tls_settings(tls_redis, pki.ca)
    check_redis_credentials(redis_target(settings))
    assert script_loaded(settings)  # not merely a warning: the check ran the script over TLS
    assert write_and_read_back(settings) == {"chat:low": BLOCK}


def test_server_certificate_from_another_ca_stops_the_start_check(tls_redis: int, pki: Pki) -> None:
    message = one_line_refusal(tls_settings(tls_redis, pki.other_ca))
    assert message.startswith(f"Redis at 127.0.0.1:{tls_redis}/0: TLS certificate verification failed (")
    assert "SPENDWARDEN_REDIS_SSL_CAFILE" in message
    system_cas = one_line_refusal(tls_settings(tls_redis, None))  # unset: the system's CAs, which do not know it
    assert system_cas.startswith(f"Redis at 127.0.0.1:{tls_redis}/0: TLS certificate verification failed (")


def test_server_certificate_must_name_the_host(tls_redis: int, pki: Pki) -> None:
    """The certificate names 127.0.0.1 only: reaching the same server as localhost is refused."""
    message = one_line_refusal(tls_settings(tls_redis, pki.ca, host="localhost"))
    assert message.startswith(f"Redis at localhost:{tls_redis}/0: TLS certificate verification failed (")
    assert "mismatch" in message


def test_worker_with_the_wrong_ca_exits_with_one_line(tls_redis: int, pki: Pki, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SPENDWARDEN_REDIS_URL": f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis}/0",
           "SPENDWARDEN_REDIS_SSL_CAFILE": str(pki.other_ca), "SPENDWARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1",
           "SPENDWARDEN_DATA_DIR": str(tmp_path / "data"), "SPENDWARDEN_LOG_JSON": "true"}
    done = subprocess.run([SPENDWARDEN, "worker"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"spendwarden: error: Redis at 127.0.0.1:{tls_redis}/0: TLS certificate "
                               "verification failed (")
    assert PASSWORD not in done.stderr + done.stdout


def test_missing_ca_file_stops_the_start_check(tls_redis: int, tmp_path: Path) -> None:
    message = one_line_refusal(tls_settings(tls_redis, tmp_path / "nowhere.pem"))
    assert message == f"cannot read redis_ssl_cafile {tmp_path / 'nowhere.pem'}: No such file or directory"


def test_mutual_tls_needs_the_client_certificate(mtls_redis: int, pki: Pki) -> None:
    without = one_line_refusal(tls_settings(mtls_redis, pki.ca))
    assert without.startswith(f"Redis at 127.0.0.1:{mtls_redis}/0: the TLS connection failed (")
    assert "SPENDWARDEN_REDIS_SSL_CERTFILE" in without
    foreign = one_line_refusal(tls_settings(mtls_redis, pki.ca, redis_ssl_certfile=pki.foreign_client_cert,
                                            redis_ssl_keyfile=pki.foreign_client_key))
    assert foreign.startswith(f"Redis at 127.0.0.1:{mtls_redis}/0: the TLS connection failed (")
    settings = tls_settings(mtls_redis, pki.ca, redis_ssl_certfile=pki.client_cert, redis_ssl_keyfile=pki.client_key)
    check_redis_credentials(redis_target(settings))
    assert script_loaded(settings)
    assert write_and_read_back(settings) == {"chat:low": BLOCK}


@pytest.fixture
def tls_cluster(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """Port of a one-node Redis Cluster over TLS (its bus too) holding every slot."""
    folder = tmp_path / "redis-cluster"
    port, process = _start_tls_redis(folder, pki, False, "--cluster-enabled", "yes", "--tls-cluster", "yes",
                                     "--cluster-config-file", str(folder / "nodes.conf"))
    try:
        node = sync_client(redis_target(tls_settings(port, pki.ca)), timeout_s=2)
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO"), timeout_s=10,
                 what="cluster state ok")
        node.close()
        yield port
    finally:
        process.kill()
        process.wait()


def test_cluster_clients_use_the_same_tls(tls_cluster: int, pki: Pki) -> None:
    settings = tls_settings(tls_cluster, pki.ca, redis_cluster=True)
    check_redis_credentials(redis_target(settings))
    assert write_and_read_back(settings) == {"chat:low": BLOCK}
    message = one_line_refusal(tls_settings(tls_cluster, pki.other_ca, redis_cluster=True))
    assert message.startswith(f"Redis at 127.0.0.1:{tls_cluster}/0: TLS certificate verification failed (")


@pytest.fixture
def mtls_run(broker: str, topic_names: Any, tmp_path: Path, mtls_redis: int, pki: Pki) -> Iterator[WorkerRun]:
    worker = new_run(broker, f"rediss://:{PASSWORD}@127.0.0.1:{mtls_redis}/0", topic_names, tmp_path)
    worker.extra_env.update(SPENDWARDEN_REDIS_SSL_CAFILE=str(pki.ca), SPENDWARDEN_REDIS_SSL_CERTFILE=str(pki.client_cert),
                            SPENDWARDEN_REDIS_SSL_KEYFILE=str(pki.client_key))
    yield worker
    worker.kill()


def test_worker_process_writes_decisions_over_mutual_tls(mtls_run: WorkerRun, mtls_redis: int, pki: Pki) -> None:
    mtls_run.start()
    mtls_run.wait_ready()
    produce(mtls_run.bootstrap, mtls_run.topics["events"], encode(event(i, "30") for i in range(4)))
    reader = sync_client(redis_target(tls_settings(mtls_redis, pki.ca, redis_ssl_certfile=pki.client_cert,
                                                   redis_ssl_keyfile=pki.client_key)), timeout_s=2)
    try:
        found = wait_for(lambda: reader.hget(decisions_key("acme"), "chat:low"), what="a decision over mutual TLS")
    finally:
        reader.close()
    assert b'"block"' in found
    assert PASSWORD not in mtls_run.log_path.read_text()
