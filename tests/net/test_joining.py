"""join_verdict: when a starting peer is in its mesh, should keep trying, or must give up (issue 9)."""

from __future__ import annotations

from warpmesh.net.joining import (
    OK,
    PENDING,
    REFUSED,
    SELF,
    UNREACHABLE,
    SeedOutcome,
    all_refused,
    join_verdict,
)


def _v(*outcomes: SeedOutcome, linked: bool = False, elapsed: float = 0.0, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    return join_verdict(list(outcomes), linked=linked, elapsed=elapsed, timeout=timeout)


def test_refused_seeds_are_retried_until_the_budget_runs_out() -> None:
    seed = SeedOutcome("127.0.0.1:7000", REFUSED, attempts=5)
    assert _v(seed, elapsed=29.9).state == "waiting"
    failed = _v(seed, elapsed=30.0)
    assert failed.state == "failed"
    assert "127.0.0.1:7000" in failed.reason and "refused" in failed.reason and "--join-timeout" in failed.reason


def test_any_link_means_joined() -> None:
    assert _v(SeedOutcome("a:1", REFUSED), SeedOutcome("b:1", OK)).state == "joined"
    # A peer of the mesh dialled us first (a whole mesh restarting): joined although no seed answered.
    assert _v(SeedOutcome("a:1", PENDING), linked=True).state == "joined"


def test_only_our_own_address_as_seed_is_the_first_peer() -> None:
    assert _v(SeedOutcome("127.0.0.1:7000", SELF)).state == "joined"
    assert _v(SeedOutcome("127.0.0.1:7000", SELF), SeedOutcome("127.0.0.1:7001", REFUSED)).state == "waiting"


def test_a_taken_id_or_a_wrong_secret_fails_at_once_with_the_reason() -> None:
    for code, word in (("duplicate_id", "--id"), ("bad_secret", "secret"), ("stale_incarnation", "--id"),
                       ("version", "version")):
        v = _v(SeedOutcome("10.0.0.1:7000", code, "told by the seed"), elapsed=0.1)
        assert v.state == "failed", code
        assert "10.0.0.1:7000" in v.reason and "told by the seed" in v.reason and code in v.reason
        v = _v(SeedOutcome("10.0.0.1:7000", code), elapsed=0.1)
        assert word in v.reason
    # Even when another seed let us in: two live peers with one id is a mistake to stop on.
    assert _v(SeedOutcome("a:1", OK), SeedOutcome("b:1", "duplicate_id")).state == "failed"


def test_transient_refusals_keep_waiting() -> None:
    for kind in (PENDING, UNREACHABLE, "timeout", "eof", "reset", "overloaded", "duplicate_link"):
        assert _v(SeedOutcome("a:1", kind, "x"), elapsed=1.0).state == "waiting", kind
    v = _v(SeedOutcome("a:1", UNREACHABLE, "OSError: no route to host"), elapsed=31.0)
    assert v.state == "failed" and "no route to host" in v.reason


def test_all_refused_needs_every_seed_refused_enough_times() -> None:
    assert not all_refused([])
    assert all_refused([SeedOutcome("a:1", REFUSED, attempts=2)], min_attempts=2)
    assert not all_refused([SeedOutcome("a:1", REFUSED, attempts=1)], min_attempts=2)
    assert not all_refused([SeedOutcome("a:1", REFUSED, attempts=3), SeedOutcome("b:1", PENDING)])
    assert not all_refused([SeedOutcome("a:1", REFUSED, attempts=3), SeedOutcome("b:1", UNREACHABLE, attempts=3)])


def test_tcp_mesh_reports_each_seed_outcome() -> None:
    """TcpMesh.seed_outcomes() over loopback: ok, refused (counted), bad secret, taken id, self."""
    import socket

    from tests.net.tcp_helpers import close_all, eventually, mesh, run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = ("127.0.0.1", int(s.getsockname()[1]))

    async def main() -> None:
        a = await mesh("a")
        assert a.address is not None
        b = await mesh("b", [a.address, dead])
        wrong = await mesh("c", [a.address], secret=b"another-secret-another-secret-xx")
        twin = await mesh("a", [a.address], incarnation=2)
        me = await mesh("solo", [])
        try:
            def kinds(m):  # type: ignore[no-untyped-def]
                return [o.kind for o in m.seed_outcomes()]

            await eventually(lambda: kinds(b) == [OK, REFUSED] and b.seed_outcomes()[1].attempts >= 2,
                             what="ok and refused seeds")
            assert b.seed_outcomes()[1].address == f"127.0.0.1:{dead[1]}"
            await eventually(lambda: kinds(wrong) == ["bad_secret"], what="bad_secret")
            assert "secret" in wrong.seed_outcomes()[0].detail
            await eventually(lambda: kinds(twin) == ["duplicate_id"], what="duplicate_id")
            assert join_verdict(twin.seed_outcomes(), linked=False, elapsed=0, timeout=30).state == "failed"
            assert me.seed_outcomes() == []
        finally:
            await close_all([a, b, wrong, twin, me])

    run(main())
