"""Admission as plain function calls: one link per pair of processes, the same answer on both ends.

Each case is named after the guarantee it holds; see :mod:`warpmesh.net.admission`.
"""

from __future__ import annotations

import pytest

from warpmesh.net.admission import (
    Admit,
    Existing,
    OldLink,
    Probe,
    ProbeOld,
    Refuse,
    check_identity,
    decide,
)
from warpmesh.net.handshake import PeerInfo, Refusal


def peer(node_id: str = "b", incarnation: int = 5) -> PeerInfo:
    return PeerInfo(node_id, incarnation, ("127.0.0.1", 7002))


def test_a_peer_with_our_id_and_incarnation_is_ourselves() -> None:
    assert check_identity("a", 3, peer("a", 3)) == Refuse(Refusal.SELF, "a connected to itself")


def test_a_peer_with_our_id_and_another_incarnation_is_a_duplicate_node() -> None:
    refused = check_identity("a", 3, peer("a", 4))
    assert refused is not None and refused.code is Refusal.DUPLICATE_ID
    assert "unique --id" in refused.reason


def test_any_other_id_passes_the_identity_check() -> None:
    assert check_identity("a", 3, peer("b", 3)) is None


# (name, self_id, peer, new link dialled by, old link, we dial it too, probe result, expected)
CASES: list[tuple[str, str, PeerInfo, str, Existing | None, bool, Probe, object]] = [
    ("first link to a peer is admitted", "a", peer(), "a", None, False, Probe.NOT_YET, Admit()),
    ("an inbound link while the smaller id dials is refused", "a", peer(), "b", None, True, Probe.NOT_YET,
     Refusal.DUPLICATE_LINK),
    ("an inbound link while the larger id dials is admitted", "c", peer(), "b", None, True, Probe.NOT_YET,
     Admit()),
    ("an outbound link is admitted even while dialling", "a", peer(), "a", None, True, Probe.NOT_YET, Admit()),
    ("an older incarnation than the linked one is stale", "a", peer(incarnation=4), "b",
     Existing(5, True, "b"), False, Probe.NOT_YET, Refusal.STALE_INCARNATION),
    ("a live old link is probed before anything else", "a", peer(incarnation=6), "b",
     Existing(5, True, "b"), False, Probe.NOT_YET, ProbeOld()),
    ("an old link that does not answer is closed and replaced", "a", peer(), "b",
     Existing(5, True, "a"), False, Probe.SILENT, Admit(OldLink.CLOSE_DEAD)),
    ("an old link that left while probed is simply replaced", "a", peer(), "b",
     Existing(5, True, "a"), False, Probe.GONE, Admit()),
    ("a restarted peer replaces a link still in its handshake", "a", peer(incarnation=6), "b",
     Existing(5, False, "a"), False, Probe.NOT_YET, Admit(OldLink.CLOSE_RESTARTED)),
    ("a newer incarnation while the old one answers is a duplicate id", "a", peer(incarnation=6), "b",
     Existing(5, True, "b"), False, Probe.ANSWERED, Refusal.DUPLICATE_ID),
    ("a side that dials again gave up on its first link", "a", peer(), "b",
     Existing(5, True, "b"), False, Probe.ANSWERED, Admit(OldLink.RETIRE_NEWER)),
    ("the link dialled by the smaller id wins over a live one", "a", peer(), "a",
     Existing(5, True, "b"), False, Probe.ANSWERED, Admit(OldLink.RETIRE_LOST)),
    ("the link dialled by the smaller id wins over one in its handshake", "a", peer(), "a",
     Existing(5, False, "b"), False, Probe.NOT_YET, Admit(OldLink.CLOSE_DUPLICATE)),
    ("the link dialled by the larger id loses", "a", peer(), "b",
     Existing(5, True, "a"), False, Probe.ANSWERED, Refusal.DUPLICATE_LINK),
    ("the link dialled by the larger id loses to one in its handshake", "a", peer(), "b",
     Existing(5, False, "a"), False, Probe.NOT_YET, Refusal.DUPLICATE_LINK),
]


@pytest.mark.parametrize(("self_id", "new", "initiator", "old", "dialing", "probe", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_admission(self_id: str, new: PeerInfo, initiator: str, old: Existing | None, dialing: bool,
                   probe: Probe, expected: object) -> None:
    got = decide(self_id, new, initiator=initiator, old=old, dialing=dialing, probe=probe)
    if isinstance(expected, Refusal):
        assert isinstance(got, Refuse) and got.code is expected, got
        assert got.reason
    else:
        assert got == expected


@pytest.mark.parametrize(("a", "b"), [("a", "b"), ("b", "a"), ("n1", "n10")])
def test_both_ends_of_a_simultaneous_dial_keep_the_same_link(a: str, b: str) -> None:
    """Each side holds its own dial and then sees the other's arrive: exactly one link survives, and it
    is the same one (the one dialled by the smaller id) on both sides."""
    kept = {}
    for me, other in ((a, b), (b, a)):
        mine = Existing(5, True, me)  # my own dial got established first
        got = decide(me, peer(other), initiator=other, old=mine, dialing=False, probe=Probe.ANSWERED)
        kept[me] = other if isinstance(got, Admit) else me
    assert kept[a] == kept[b] == min(a, b)
