"""The pure game modules: the seat plan, the seat book, presence and the example rules."""

from __future__ import annotations

import pytest

from warpmesh.game import presence as pres
from warpmesh.game.errors import IllegalMove
from warpmesh.game.rules import Game
from warpmesh.game.seats import (
    ChangeMembership,
    Idle,
    Pause,
    ProposeSeat,
    ProposeUnseat,
    SeatBook,
    SeatView,
    plan,
)

F = frozenset


def view(**kw: object) -> SeatView:
    base: dict[str, object] = dict(self_id="a", voters=F({"a", "b", "c"}), learners=F(), changing=False,
                                   players=("a", "b", "c"), witnesses=(), target_players=3)
    base.update(kw)
    return SeatView(**base)  # type: ignore[arg-type]


def test_plan_is_idle_when_everything_agrees_and_waits_during_a_change() -> None:
    assert plan(view()) == Idle()
    assert plan(view(changing=True, lost=F({"c"}))) == Idle()


def test_plan_records_a_seat_for_an_unrecorded_voter_and_unseats_a_removed_one() -> None:
    assert plan(view(players=("a", "b"))) == ProposeSeat("c", "player")
    assert plan(view(players=("a", "b"), witness_joiners=("c",))) == ProposeSeat("c", "witness")
    assert plan(view(voters=F({"a", "b"}), target_players=2)) == ProposeUnseat("c", "lost")
    assert plan(view(voters=F({"a", "b"}), vacated=F({"c"}), target_players=2)) == ProposeUnseat("c", "left")


def test_plan_evicts_a_lost_voter_and_keeps_spectators() -> None:
    step = plan(view(lost=F({"c"}), learners=F({"w"})))
    assert step == ChangeMembership(F({"a", "b"}), F({"w"}), "evict c")


def test_plan_pauses_when_the_rest_cannot_commit() -> None:
    step = plan(view(voters=F({"a", "b"}), players=("a", "b"), lost=F({"b"}), target_players=2))
    assert isinstance(step, Pause) and "witness" in step.reason
    # A voter that left gracefully still votes, so two voters can release a seat.
    assert isinstance(plan(view(voters=F({"a", "b"}), players=("a", "b"), vacated=F({"b"}),
                                target_players=2)), ChangeMembership)


def test_plan_admits_the_lowest_joiner_then_a_witness_then_spectators() -> None:
    v = view(voters=F({"a"}), players=("a",), joiners=("z", "d"), witness_joiners=("w",),
             spectators_waiting=("s",), want_witness=True, allow_spectators=True, max_spectators=1)
    assert plan(v) == ChangeMembership(F({"a", "d"}), F(), "admit player d")
    full = view(voters=F({"a", "d", "e"}), players=("a", "d", "e"), witness_joiners=("w",),
                spectators_waiting=("s",), want_witness=True, allow_spectators=True, max_spectators=1)
    assert plan(full) == ChangeMembership(F({"a", "d", "e", "w"}), F(), "admit witness w")
    nospec = view(spectators_waiting=("s",), allow_spectators=True, max_spectators=1, learners=F({"t"}))
    assert plan(nospec) == Idle()  # the one spectator place is taken


def test_plan_never_admits_a_departed_peer() -> None:
    assert plan(view(voters=F({"a"}), players=("a",), joiners=("b",), lost=F({"b"}))) == Idle()


def test_seat_book_applies_records_ignores_junk_and_round_trips() -> None:
    b = SeatBook()
    for rec in (["policy", "", [2, True, False, 0]], ["seat", "a", "player"], ["seat", "w", "witness"],
                ["seat", "a", "player"], ["bogus"], "junk", ["seat", 7, "player"], ["seat", "b", "player"],
                ["unseat", "a", "lost"], ["unseat", "nobody", "lost"]):
        b.apply(rec)
    assert b.players == ["b"] and b.witnesses == ["w"] and b.gone == [("a", "lost")]
    assert b.policy == [2, True, False, 0]
    again = SeatBook(b.to_obj())
    assert again.to_obj() == b.to_obj()
    with pytest.raises(ValueError):
        SeatBook(["not", "a", "book"])


def test_presence_duplicate_hosts_and_admission() -> None:
    slots = {"b": pres.HOST, "a": pres.HOST, "c": pres.PRESENT,
             pres.ADMISSION: (False, True, ("a", "c"))}
    assert pres.duplicate_host_winner("b", slots) == "a" and pres.duplicate_host_winner("a", slots) is None
    assert pres.with_status(slots, pres.PRESENT, among={"c"}) == ["c"]
    adm = pres.admission(slots)
    assert adm == pres.Admission(False, True, ("a", "c"))
    assert pres.Admission.decode("garbage") is None


def test_tictactoe_win_draw_and_refusals() -> None:
    g = Game("tictactoe", 2)
    g.seat("h")
    assert g.check("h", 1) is not None  # not started
    g.seat("p")
    assert g.current() == "h" and g.marks == {"h": "X", "p": "O"}
    with pytest.raises(IllegalMove, match="turn"):
        g.apply("p", 1)
    for who, cell in (("h", 1), ("p", 4), ("h", 2), ("p", 5)):
        g.apply(who, cell)
    with pytest.raises(IllegalMove, match="taken"):
        g.apply("h", 4)
    with pytest.raises(IllegalMove, match="1 to 9"):
        g.apply("h", 10)
    g.apply("h", 3)
    assert g.over and g.winner == "h"
    d = Game("tictactoe", 2)
    d.seat("h")
    d.seat("p")
    for i, cell in enumerate((1, 2, 3, 5, 4, 6, 8, 7, 9)):
        d.apply(("h", "p")[i % 2], cell)
    assert d.over and d.winner is None
    with pytest.raises(IllegalMove):
        Game.parse("x")


def test_nim_turn_order_and_a_lost_seat() -> None:
    g = Game("nim", 3, heap=7)
    for p in ("h", "a", "b"):
        g.seat(p)
    g.apply("h", 3)
    assert g.current() == "a"
    g.unseat("a")  # lost: the turn passes to the next player
    assert g.current() == "b" and g.players == ["h", "b"]
    with pytest.raises(IllegalMove, match="1, 2 or 3"):
        g.apply("b", 4)
    g.apply("b", 3)
    g.apply("h", 1)
    assert g.over and g.winner == "h"
    h1 = Game.from_obj(g.to_obj())
    assert h1.state_hash() == g.state_hash()


def test_the_last_player_standing_wins() -> None:
    g = Game("nim", 2)
    g.seat("h")
    g.seat("p")
    g.unseat("h")
    assert g.over and g.winner == "p"
