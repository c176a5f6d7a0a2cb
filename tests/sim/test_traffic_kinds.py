"""The simulator attributes every byte on the wire to what it carried (the scale work's measuring stick)."""

from __future__ import annotations

from warpmesh.quilt.core import QuiltKind
from warpmesh.sim.warp import run_warp, traffic_kind
from warpmesh.wire.frame import encode_frame


def test_every_byte_sent_is_attributed_to_a_board_and_frame_kind() -> None:
    report = run_warp(3, peers=4, jobs=60)
    m = report.metrics
    assert report.ok, report.failures
    assert sum(m["bytes_by_board_kind"].values()) == m["bytes_sent"]
    assert sum(m["bytes_by_kind"].values()) == m["bytes_sent"]
    # Jobs travel as queue and results deltas; a settled mesh exchanges digests; peers heartbeat.
    for key in ("queue.delta", "results.delta", "liveness.heartbeat"):
        assert m["bytes_by_board_kind"].get(key, 0) > 0, key
    assert "other" not in m["bytes_by_kind"]
    assert m["bytes_per_job"] == round(m["bytes_sent"] / 60)


def test_traffic_kind_reads_the_mux_tag_and_the_quilt_frame_kind() -> None:
    frame = encode_frame(QuiltKind.STATE, ["s", 1])
    assert traffic_kind(bytes((0x02,)) + frame) == "results.full_state"
    assert traffic_kind(bytes((0x01,)) + encode_frame(QuiltKind.DIGEST, [])) == "queue.digest"
    assert traffic_kind(bytes((0x06,)) + b"\x01\x02") == "warp.control"
    assert traffic_kind(bytes((0x10,)) + b"x") == "liveness.heartbeat"
    assert traffic_kind(b"") == "other"


def test_answers_acknowledged_as_they_arrive_keep_boards_empty_and_lose_nothing() -> None:
    report = run_warp(3, peers=4, jobs=120, ack_answers=True)
    m = report.metrics
    assert report.ok, report.failures
    assert m["lost"] == 0 and m["wrong"] == 0 and m["steady_duplicates"] == 0
    assert m["answers_acked"] >= 120 and m["answers_left_on_boards"] == 0


def test_a_run_reports_its_progress_and_frames_by_board() -> None:
    seen: list[tuple[int, int, str]] = []
    report = run_warp(3, peers=3, jobs=90, on_progress=lambda n, total, phase, _t: seen.append((n, total, phase)))
    assert report.ok, report.failures
    assert seen[0] == (30, 90, "steady") and seen[-1] == (90, 90, "quiesce")
    counts = [n for n, _, _ in seen]
    assert counts == sorted(counts) and len([p for _, _, p in seen if p == "churn"]) == 60
    frames = report.metrics["frames_by_board_kind"]
    assert frames["queue.delta"] > 0 and sum(frames.values()) == sum(report.metrics["frames_by_kind"].values())
