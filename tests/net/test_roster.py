"""Roster gossip as plain function calls: parsing a ROSTER body and merging it into what we know."""

from __future__ import annotations

from typing import Any

import pytest

from warpmesh.net.roster import (
    MAX_ROSTER,
    Action,
    RosterEntry,
    RosterVerdict,
    encode_roster,
    merge_roster,
    parse_roster,
)

B = RosterEntry("b", 5, ("127.0.0.1", 7002))
C = RosterEntry("c", 7, ("127.0.0.1", 7003))


def test_an_encoded_roster_parses_back_to_the_same_entries() -> None:
    assert parse_roster(encode_roster([B, C])) == ([B, C], 0)


@pytest.mark.parametrize("body", [None, 3, [], {"peers": "x"}, {"nope": []},
                                  {"peers": [["b", 1, "h", 1]] * (MAX_ROSTER + 1)}],
                         ids=["none", "int", "list", "peers-not-a-list", "no-peers", "too-many"])
def test_an_unusable_roster_body_is_refused_whole(body: Any) -> None:
    assert parse_roster(body) is None


@pytest.mark.parametrize("entry", [
    ["b", 1, "h"], ["b", 1, "h", 1, 2], "b", ["", 1, "h", 1], ["x" * 256, 1, "h", 1], [3, 1, "h", 1],
    ["b", -1, "h", 1], ["b", True, "h", 1], ["b", 1.0, "h", 1], ["b", 1, 7, 1], ["b", 1, "h", 0],
    ["b", 1, "h", 65536], ["b", 1, "h", "80"],
])
def test_a_malformed_entry_is_counted_and_the_rest_kept(entry: Any) -> None:
    good = [B.peer, B.incarnation, *B.address]
    assert parse_roster({"peers": [good, entry, good]}) == ([B, B], 1)


def merge(entries: list[RosterEntry], *, linked: dict[str, int] | None = None, secret: bool = True) -> list[Any]:
    return merge_roster(entries, self_id="a", sender="s", linked=linked or {}, has_secret=secret)


def test_an_unknown_peer_is_learned() -> None:
    assert merge([B, C]) == [RosterVerdict(Action.LEARN, B), RosterVerdict(Action.LEARN, C)]


def test_we_and_the_sender_are_never_learned_from_gossip() -> None:
    me = RosterEntry("a", 1, ("127.0.0.1", 7001))
    sender = RosterEntry("s", 1, ("127.0.0.1", 7009))
    assert merge([me, sender, B]) == [RosterVerdict(Action.LEARN, B)]


def test_a_wildcard_address_is_never_dialled() -> None:
    assert merge([RosterEntry("b", 5, ("0.0.0.0", 7002)), RosterEntry("c", 5, ("", 7003))]) == []


def test_a_peer_linked_at_the_same_or_a_newer_incarnation_is_only_seen() -> None:
    assert merge([B, C], linked={"b": 5, "c": 9}) == [RosterVerdict(Action.SEEN, B), RosterVerdict(Action.SEEN, C)]


def test_a_newer_incarnation_than_the_linked_one_is_learned() -> None:
    assert merge([B], linked={"b": 4}) == [RosterVerdict(Action.LEARN, B)]


def test_without_a_secret_only_loopback_peers_are_dialled() -> None:
    far = RosterEntry("c", 7, ("10.0.0.3", 7003))
    assert merge([B, far], secret=False) == [RosterVerdict(Action.LEARN, B), RosterVerdict(Action.BLOCKED, far)]
    assert merge([B, far], secret=True) == [RosterVerdict(Action.LEARN, B), RosterVerdict(Action.LEARN, far)]
