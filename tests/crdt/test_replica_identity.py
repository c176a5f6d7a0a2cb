"""Replica identity survives restarts: a restarted node mints under a new incarnation, so it can never
mint a dot its earlier life minted (kuilt report §7 item 14; the #2077 class of lost tasks).

The second half shows why: reusing a replica id with a fresh counter re-mints old dots, and two
different adds carrying one dot annihilate each other on join.
"""

from __future__ import annotations

import random

import pytest

from warpmesh.crdt import GCounter, LWWRegister, ORMap, ORSet, parse_replica_id, replica_id


def test_replica_id_format_and_parse() -> None:
    assert replica_id("n1", 17) == "n1@17"
    assert parse_replica_id("n1@17") == ("n1", 17)
    assert parse_replica_id(replica_id("host@rack", 3)) == ("host@rack", 3)
    for bad_node, bad_inc in (("", 1), ("n1", -1), ("n1", 1.5), (None, 1)):
        with pytest.raises(ValueError):
            replica_id(bad_node, bad_inc)  # type: ignore[arg-type]
    for bad in ("n1", "n1@", "@3", "n1@x"):
        with pytest.raises(ValueError):
            parse_replica_id(bad)


class Node:
    """A replica of a work queue and a results board, sending deltas into an unreliable network."""

    def __init__(self, name: str, incarnation: int) -> None:
        self.name = name
        self.rid = replica_id(name, incarnation)
        self.queue = ORSet()
        self.board: ORMap[LWWRegister] = ORMap(LWWRegister)

    def enqueue(self, task: str) -> tuple[ORSet, ORMap[LWWRegister]]:
        return self.queue.add(self.rid, task), self.board.update(self.rid, task, lambda r: r.set(self.rid, "pending"))


def run_cluster(restart_incarnation: int, seed: int) -> tuple[list[Node], set[str]]:
    """Three nodes enqueue tasks while deltas wander; n1 crashes mid-stream (losing its state and
    with deltas still in flight) and restarts at ``restart_incarnation``, enqueueing again before it
    has heard from anyone. Returns the nodes after everything is delivered, and all tasks enqueued.
    """
    rng = random.Random(seed)
    nodes = {n: Node(n, 1) for n in ("n1", "n2", "n3")}
    in_flight: list[tuple[str, ORSet, ORMap[LWWRegister]]] = []  # (destination, queue delta, board delta)
    enqueued: set[str] = set()

    def step(node: Node, i: int) -> None:
        task = f"{node.rid}/t{i}"
        enqueued.add(task)
        dq, db = node.enqueue(task)
        for other in nodes:
            if other != node.name:
                in_flight.append((other, dq, db))

    def deliver_some(fraction: float) -> None:
        rng.shuffle(in_flight)
        keep = []
        for dest, dq, db in in_flight:
            if rng.random() < fraction:
                nodes[dest].queue.join(dq)
                nodes[dest].board.join(db)
            else:
                keep.append((dest, dq, db))
        in_flight[:] = keep

    for i in range(40):
        for node in nodes.values():
            step(node, i)
        deliver_some(0.3)
    # Crash n1: its state is gone; its deltas still in flight will arrive later. Deltas addressed to
    # it are lost with it.
    in_flight[:] = [f for f in in_flight if f[0] != "n1"]
    nodes["n1"] = Node("n1", restart_incarnation)
    for i in range(40):
        step(nodes["n1"], 1000 + i)  # enqueues before any full state reaches it
        deliver_some(0.3)
    deliver_some(1.0)
    # Anti-entropy: full states until everyone holds the join.
    q, b = ORSet(), ORMap(LWWRegister)
    for node in nodes.values():
        q.join(node.queue)
        b.join(node.board)
    for node in nodes.values():
        node.queue.join(q)
        node.board.join(b)
    return list(nodes.values()), enqueued


@pytest.mark.parametrize("seed", range(5))
def test_restart_with_a_new_incarnation_annihilates_nothing(seed: int) -> None:
    nodes, enqueued = run_cluster(restart_incarnation=2, seed=seed)
    for node in nodes:
        assert node.queue.elements == enqueued
        assert set(node.board.keys()) == enqueued
        assert node.queue == nodes[0].queue and node.board == nodes[0].board
    assert len(enqueued) == 3 * 40 + 40


@pytest.mark.parametrize("seed", range(3))
def test_restart_reusing_the_replica_id_loses_tasks(seed: int) -> None:
    """Why the incarnation is needed: the restarted n1@1 re-mints dots (n1@1, 1..40) for new tasks
    while the old tasks under those same dots are still in flight. Every pair annihilates."""
    nodes, enqueued = run_cluster(restart_incarnation=1, seed=seed)
    survivors = nodes[0].queue.elements
    lost = enqueued - survivors
    assert all(node.queue == nodes[0].queue for node in nodes)  # still convergent, just wrong
    assert {t.split("/")[0] for t in lost} == {"n1@1"}
    assert len(lost) == 80  # both members of each of the 40 (old, new) pairs are gone


def test_two_adds_from_one_snapshot_reuse_a_dot_and_annihilate_both() -> None:
    """kuilt CoordinatedQueueDotUniquenessTest: adds made from one snapshot by the same replica id
    mint the same dot; the join keeps neither element."""
    base = ORSet()
    base.add("n1@1", "seed")
    left, right = base.copy(), base.copy()
    left.add("n1@1", "t1")
    right.add("n1@1", "t2")
    merged = left.copy()
    merged.join(right)
    assert "t1" not in merged and "t2" not in merged and "seed" in merged


def test_serialized_adds_from_one_replica_survive() -> None:
    q = ORSet()
    q.add("n1@1", "t1")
    q.add("n1@1", "t2")
    merged = ORSet()
    merged.join(q)
    assert merged.elements == {"t1", "t2"}


def test_concurrent_enqueues_at_scale_lose_nothing_with_unique_ids() -> None:
    """#2077 lost 919 of 1200 tasks to snapshot-reused dots. With one id per concurrent writer
    (or serialized adds) all 1200 survive."""
    base = ORSet()
    shared_id, unique = [], []
    for i in range(1200):
        s = base.copy()
        shared_id.append(s.add("n1@1", f"t{i}"))
        s = base.copy()
        unique.append(s.add(f"n1-writer{i}@1", f"t{i}"))
    lost_board, kept_board = ORSet(), ORSet()
    for d in shared_id:
        lost_board.join(d)
    for d in unique:
        kept_board.join(d)
    assert len(lost_board) == 0
    assert len(kept_board) == 1200


def test_counter_restart_reusing_id_loses_increments_new_incarnation_keeps_them() -> None:
    cluster = GCounter()
    old = GCounter()
    cluster.join(old.inc(replica_id("n1", 1), 5))
    reused, fresh = GCounter(), GCounter()
    cluster_reused, cluster_fresh = cluster.copy(), cluster.copy()
    cluster_reused.join(reused.inc(replica_id("n1", 1), 3))
    cluster_fresh.join(fresh.inc(replica_id("n1", 2), 3))
    assert cluster_reused.value == 5  # max(5, 3): three increments vanished
    assert cluster_fresh.value == 8
