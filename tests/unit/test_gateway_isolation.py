"""spendwarden.gateway needs only redis-py and the standard library, so gateways can vendor it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import spendwarden.gateway

GATEWAY_DIR = Path(spendwarden.gateway.__file__).parent
CLIENT_MODULES = ("__init__.py", "cache.py", "client.py", "verdicts.py", "reservations.py")


def run_python(code: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_pulls_in_nothing_but_redis_and_stdlib(tmp_path: Path) -> None:
    """Modules new after ``import redis`` are stdlib or the gateway package itself."""
    out = run_python("""
        import json, sys
        import redis, redis.asyncio
        before = set(sys.modules)
        import spendwarden.gateway, spendwarden.gateway.client, spendwarden.gateway.reservations
        new = sorted(set(sys.modules) - before)
        print(json.dumps({"new": new, "stdlib": sorted(sys.stdlib_module_names)}))
    """, tmp_path)
    stdlib = set(out["stdlib"])
    foreign = [m for m in out["new"] if m.split(".")[0] not in stdlib and m != "spendwarden"
               and not m.startswith("spendwarden.gateway")]
    assert foreign == []
    assert "spendwarden.gateway.client" in out["new"] and "spendwarden.gateway.reservations" in out["new"]


def test_vendored_copy_works_with_the_rest_of_spendwarden_blocked(tmp_path: Path) -> None:
    """A copy under another name imports and decides with spendwarden, orjson and pydantic unimportable."""
    vendored = tmp_path / "acme_gateway_sw"
    vendored.mkdir()
    for name in CLIENT_MODULES:
        shutil.copy(GATEWAY_DIR / name, vendored / name)
    out = run_python("""
        import importlib.abc, json, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("spendwarden", "orjson", "pydantic", "structlog"):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import acme_gateway_sw as gw
        values = {"support:low": b'{"level":"L1","model_alias":"mini","max_output_tokens":64}',
                  "*:low": None, "_expires_at": b"9999999999", "_on_stale": None}
        verdict = gw.decide(values, "low", 1.0, "open")
        client = gw.GatewayClient.__name__
        from acme_gateway_sw.reservations import estimate_cost
        print(json.dumps({"action": verdict.action, "alias": verdict.model_alias, "client": client,
                          "estimate": str(estimate_cost(100, 10, "0.000001", "0.00001"))}))
    """, tmp_path)
    assert out == {"action": "degrade", "alias": "mini", "client": "GatewayClient", "estimate": "0.000200"}
