"""Key schema of the Redis decision contract (v1): names and Cluster hash tags."""

from __future__ import annotations

import re

import pytest

from spendwarden.streams.publisher import CONTRACT_VERSION, changes_channel, decisions_key


def _hash_tag(key: str) -> str:
    """The part Redis Cluster hashes: between the first '{' and the next '}'."""
    match = re.search(r"\{([^}]*)\}", key)
    assert match is not None
    return match.group(1)


def test_decisions_key_layout() -> None:
    """The decisions hash is sw:{tenant}:decisions."""
    assert decisions_key("acme") == "sw:{acme}:decisions"


def test_changes_channel_layout() -> None:
    """The change channel is sw:{tenant}:changes."""
    assert changes_channel("acme") == "sw:{acme}:changes"


@pytest.mark.parametrize("tenant", ["acme", "t-42", "Acme Corp", "a:b", "ünï", "x" * 200])
def test_hash_tag_is_exactly_the_tenant(tenant: str) -> None:
    """Both names hash on exactly the tenant id, so they share a Cluster slot."""
    assert _hash_tag(decisions_key(tenant)) == tenant
    assert _hash_tag(changes_channel(tenant)) == tenant


def test_distinct_tenants_get_distinct_keys() -> None:
    """Different tenants never share a key or channel."""
    assert decisions_key("a") != decisions_key("b")
    assert changes_channel("a") != changes_channel("b")
    assert decisions_key("a") != changes_channel("a")


@pytest.mark.parametrize("tenant", ["", "a{b", "a}b", "{acme}"])
def test_unusable_tenant_ids_are_refused(tenant: str) -> None:
    """Empty ids and braces (which would move the hash tag) raise ValueError."""
    with pytest.raises(ValueError):
        decisions_key(tenant)
    with pytest.raises(ValueError):
        changes_channel(tenant)


def test_contract_version() -> None:
    """The key schema is contract v1 (docs/redis.md)."""
    assert CONTRACT_VERSION == 1
