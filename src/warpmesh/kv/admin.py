"""The operator's side of the KV cluster, as pure decisions (a core module: no I/O, no clock).

The leader's :class:`~warpmesh.kv.server.KVServer` gathers the facts (the configuration, each
follower's match index and last contact, the replicated member book) and asks these functions what
to do; the answers are refusals with a one-line reason that says what to do next, or a plan.
Safety rules, from etcd's and the kuilt reference's experience:

* one membership change at a time (the server serialises them; the Raft core refuses overlap);
* ``remove`` never leaves a configuration (old or new: joint consensus needs both) without a
  majority of voters that answered recently;
* a removed id is never reused, and a member's data directory is never silently replaced by an
  empty one under the same id (both unless the operator says ``--force``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from warpmesh.raft.membership import Membership

#: The member-book token of members configured before they had a join token (``--peers``).
BOOTSTRAP_TOKEN = "peers"
#: A follower that answered the leader within this many election timeouts counts as live.
LIVE_WITHIN_ELECTION_TIMEOUTS = 4.0


@dataclass(frozen=True)
class JoinVerdict:
    """What the leader does with ``kv serve --join`` or ``member add``: "add" it, report it is
    "already" there (success, nothing to do), or "refuse" it (``detail`` says why and what to do)."""

    action: str
    detail: str


def majority(n: int) -> int:
    return n // 2 + 1


def join_verdict(node: str, *, token: str | None, force: bool, membership: Membership,
                 book: Mapping[str, tuple[str, str | None, bool]], retired: Mapping[str, int]) -> JoinVerdict:
    """Decide on a request to add ``node``. ``token`` identifies the joining data directory (None
    for ``member add``, which only registers the id and address)."""
    if node in retired and not force:
        return JoinVerdict("refuse", f"id {node!r} was removed from this cluster (at log index "
                                     f"{retired[node]}) and ids are never reused by accident: start the "
                                     "node with a new --id, or pass --force if reusing it is deliberate")
    if node in membership.members:
        # A member missing from the book was configured at bootstrap (--peers): it has data.
        known = book[node][1] if node in book else BOOTSTRAP_TOKEN
        if token is None or known is None or known == token or force:
            return JoinVerdict("already", f"{node} is already a "
                                          f"{'voter' if membership.is_voter(node) else 'learner'}")
        return JoinVerdict("refuse", f"{node} is already a member with another data directory; a "
                                     "member must not come back with an empty one under the same id: "
                                     "restart it on its old --data, or `kv member remove` it and join "
                                     "with a new id (--force overrides)")
    return JoinVerdict("add", f"{node} added")


def live_voters(membership: Membership, self_id: str, contact_age: Mapping[str, float | None],
                election_timeout: float) -> set[str]:
    """Voters (of either side of a joint configuration) heard from recently; the leader is live."""
    limit = LIVE_WITHIN_ELECTION_TIMEOUTS * election_timeout
    live = {self_id} & membership.all_voters
    for v in membership.all_voters:
        age = contact_age.get(v)
        if age is not None and age <= limit:
            live.add(v)
    return live


def remove_refusal(membership: Membership, node: str, live: Collection[str]) -> str | None:
    """Why removing ``node`` would leave the cluster without a quorum of live voters (None: safe).
    Both the current voters and the new ones need a live majority (the joint phase uses both)."""
    if node not in membership.members:
        return None
    if not membership.is_voter(node):
        return None  # a learner never counts toward a quorum
    new = set(membership.voters) - {node}
    if not new:
        return f"{node} is the only voter; a cluster cannot remove its last voter"
    for name, voters in (("the remaining", new), ("the current", set(membership.all_voters))):
        up = len(voters & set(live))
        if up < majority(len(voters)):
            down = sorted(voters - set(live) - {node})
            return (f"removing {node} would leave {name} voters without a quorum of live nodes "
                    f"({up} of {len(voters)} answering; need {majority(len(voters))}"
                    + (f"; not answering: {', '.join(down)}" if down else "")
                    + "): bring those nodes back or remove the dead ones first")
    return None


def pick_transfer_target(membership: Membership, self_id: str, match: Mapping[str, int], last_index: int,
                         live: Collection[str], exclude: Collection[str] = ()) -> str | None:
    """The most up-to-date live voter other than the leader (ties: lowest id); None if there is none."""
    best: str | None = None
    for v in sorted(membership.voters):
        if v == self_id or v in exclude or v not in live:
            continue
        if best is None or match.get(v, 0) > match.get(best, 0):
            best = v
    if best is not None and match.get(best, 0) < last_index - 10_000:
        return None  # far behind: it could not win quickly; wait for it to catch up
    return best


def member_rows(membership: Membership, leader: str | None, self_id: str, last_index: int,
                match: Mapping[str, int], contact_age: Mapping[str, float | None],
                book: Mapping[str, tuple[str, str | None, bool]],
                addresses: Mapping[str, str]) -> dict[str, object]:
    """``kv member list --json``: ``{"leader", "members": [{"id", "address", "role",
    "match_index", "last_contact_s"}]}``; the leader's own row has its last index and contact 0."""
    rows = []
    age: float | None
    for node in sorted(membership.members):
        addr = book[node][0] if node in book else addresses.get(node, "")
        if node == self_id:
            mi, age = last_index, 0.0
        else:
            mi, age = match.get(node, 0), contact_age.get(node)
        rows.append({"id": node, "address": addr,
                     "role": "voter" if membership.is_voter(node) else "learner",
                     "match_index": mi, "last_contact_s": None if age is None else round(age, 3)})
    return {"leader": leader, "members": rows}


def healthy(*, leader: str | None, commit_index: int, applied_index: int, closed: bool,
            max_lag: int = 1000) -> bool:
    """A node is healthy when it knows a leader and applies what is committed (etcd's
    ``endpoint health`` asks the same: a leader, and a working apply loop)."""
    return not closed and leader is not None and commit_index - applied_index <= max_lag
