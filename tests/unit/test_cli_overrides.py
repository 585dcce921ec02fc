"""``spendwarden override``: the command line without Kafka (the topic is a list in memory)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from click.testing import CliRunner, Result

from spendwarden.cli import main
from spendwarden.streams import override_feed
from spendwarden.streams.overrides import Override, OverrideBook


class Topic:
    def __init__(self) -> None:
        self.records: list[Override] = []
        self.readable = True

    def book(self) -> OverrideBook:
        book = OverrideBook()
        for record in self.records:
            book.apply(record.scope_key, record.to_record(), time.time())
        return book


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> Topic:
    held = Topic()

    async def read_book(bootstrap: str, name: str, options: Any = None, timeout_s: float = 15.0) -> Any:
        if not held.readable:
            raise TopicAuthorizationFailedError("metadata of topic")
        return held.book(), []

    async def send(bootstrap: str, name: str, override: Override, options: Any = None) -> None:
        held.records.append(override)

    monkeypatch.setattr(override_feed, "read_book", read_book)
    monkeypatch.setattr(override_feed, "send", send)
    return held


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["override", *args], env={"SPENDWARDEN_KAFKA_BOOTSTRAP": "kafka:9092"})


SET = ("--for", "1h", "--reason", "incident", "--author", "alice")


@pytest.mark.parametrize("flags", [("--block", "--unblock"), ("--unblock", "--block"), ("--block", "--degrade", "m"),
                                   ()])
def test_exactly_one_action(topic: Topic, flags: tuple[str, ...]) -> None:
    result = run("set", "tenant=acme", *flags, *SET)
    assert result.exit_code == 2 and "exactly one of --block, --unblock or --degrade" in result.output
    assert topic.records == []


@pytest.mark.parametrize("scope", [("tenant=a", "tenant=b"), ("tenant=a", "tenant_id=b"),
                                   ("tenant=a", "use_case=x", "use_case_id=y")])
def test_a_scope_name_given_twice_is_refused(topic: Topic, scope: tuple[str, ...]) -> None:
    result = run("set", *scope, "--block", *SET)
    assert result.exit_code == 2 and "given twice" in result.output
    assert topic.records == []


def test_an_id_that_cost_events_could_not_carry_is_refused(topic: Topic) -> None:
    result = run("set", "tenant=acme", "use_case=_x", "--block", *SET)
    assert result.exit_code == 2 and "use_case_id" in result.output and "not an id" in result.output


def test_set_says_what_it_replaces(topic: Topic) -> None:
    first = run("set", "tenant=acme", "--block", *SET)
    assert first.exit_code == 0 and "replaces" not in first.output
    second = run("set", "tenant=acme", "--unblock", "--tiers", "low", "--for", "30m", "--reason", "fixed",
                 "--author", "bob")
    assert second.exit_code == 0, second.output
    assert "replaces the active block on tenant=acme (tiers low,medium,high) set by alice" in second.output
    other = run("set", "tenant=acme", "use_case=chat", "--block", *SET)  # another scope: replaces nothing
    assert "replaces" not in other.output
    assert [o.action for o in topic.records] == ["block", "unblock", "block"]


def test_set_goes_on_when_the_topic_cannot_be_read(topic: Topic) -> None:
    topic.readable = False
    result = run("set", "tenant=acme", "--block", *SET)
    assert result.exit_code == 0 and len(topic.records) == 1
    assert "could not read" in result.output and "TopicAuthorizationFailedError" in result.output


def test_list_filters_by_use_case_and_model(topic: Topic) -> None:
    run("set", "tenant=acme", "--block", "--tiers", "low", *SET)
    run("set", "tenant=acme", "use_case=chat", "--unblock", *SET)
    run("set", "tenant=acme", "use_case=search", "--block", *SET)
    run("set", "tenant=acme", "use_case=chat", "model=llama3:8b", "--degrade", "llama3:1b", *SET)
    run("set", "tenant=other", "use_case=chat", "--block", *SET)

    def listed(*scope: str) -> list[str]:
        result = run("list", *scope)
        assert result.exit_code == 0, result.output
        return [" ".join(line.split()[1:3]) for line in result.output.splitlines()]

    assert listed("tenant=acme", "use_case=chat") == ["unblock tenant=acme", "degrade tenant=acme"]
    assert len(listed("tenant=acme")) == 4 and len(listed()) == 5
    only_model = run("list", "tenant=acme", "use_case=chat", "model=llama3:8b").output.splitlines()
    assert len(only_model) == 1 and "model=llama3:8b" in only_model[0] and "(to llama3:1b)" in only_model[0]
