"""``KVServer``: one replica of the key-value store (a RaftNode + the KV state machine + the client
protocol), and :func:`open_kv_node`, which builds the whole stack on a TCP mesh with SQLite storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.errors import WarpmeshError
from warpmesh.kv import admin as A
from warpmesh.kv import protocol as P
from warpmesh.kv.state import (
    KVStateMachine,
    encode_cas,
    encode_delete,
    encode_member,
    encode_put,
    encode_retire,
)
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import Seam, SeamClosed
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import (
    CatchUpTimeout,
    MembershipChangeInProgress,
    NotLeader,
    RaftClosed,
    RaftError,
    SessionExpired,
    TransferFailed,
)
from warpmesh.raft.messages import MAX_ID_BYTES
from warpmesh.raft.runtime import RaftNode, wait_future
from warpmesh.raft.statemachine import ReplicatedStateMachine
from warpmesh.raft.storage import RaftStorage
from warpmesh.raft.transport import RAFT_CHANNEL, SeamRaftTransport
from warpmesh.raft.types import DedupKey, Role
from warpmesh.wire.frame import FrameError

log = logging.getLogger("warpmesh.kv")

#: Requests served concurrently per server; more wait (the client's own timeout bounds the wait).
MAX_INFLIGHT = 8192
#: How long a membership change may take on the leader (catch-up of a new voter included).
ADMIN_CHANGE_TIMEOUT = 30.0
#: How long a second membership change waits for the first before it is refused.
ADMIN_WAIT = 5.0


class AdminRefused(WarpmeshError, ValueError):
    """An operator request was refused; the message says why and what to do (sent as ERROR)."""


class KVServer:
    """Serves the client protocol on ``channel`` for the replica ``node``."""

    def __init__(self, node: RaftNode, channel: Seam, *, snapshot_every: int = 10_000,
                 request_timeout: float = 5.0, data_dir: str | Path | None = None,
                 addresses: Callable[[], dict[str, str]] | None = None) -> None:
        self.node = node
        self.channel = channel
        self.kv = KVStateMachine()
        self.rsm = ReplicatedStateMachine(node, self.kv, snapshot_every=snapshot_every)
        self.request_timeout = request_timeout
        self.data_dir = None if data_dir is None else Path(data_dir)
        self._addresses = addresses
        self.stats: Counter[str] = Counter()
        self._sem = asyncio.Semaphore(MAX_INFLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._admin_lock = asyncio.Lock()
        self._asks: dict[int, asyncio.Future[list[Any]]] = {}
        self._ask_rid = 0
        #: Resolved (with the reason) once this node learns it was removed from the cluster.
        self.removed: asyncio.Future[str] | None = None
        self._was_member = False
        self._check_task: asyncio.Task[None] | None = None

    async def start(self) -> KVServer:
        await self.rsm.start()
        self._sub = self.channel.subscribe()
        loop = asyncio.get_running_loop()
        self.removed = loop.create_future()
        self._task = loop.create_task(self._serve(), name=f"kv-{self.node.id}")
        self._watch = loop.create_task(self._watcher(), name=f"kv-{self.node.id}-watch")
        return self

    async def close(self) -> None:
        await cancel_and_wait([self._task, getattr(self, "_watch", None), self._check_task, *self._handlers])
        await self.rsm.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sender, data = await self._sub.get()
            except SeamClosed:
                return
            try:
                req = P.decode_request(data)
            except (FrameError, P.BadFrame):
                self._answer(data)
                continue
            await self._sem.acquire()
            t = loop.create_task(self._handle(sender, req))
            self._handlers.add(t)
            t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task[None]) -> None:
        self._handlers.discard(t)
        self._sem.release()

    async def _handle(self, sender: str, req: list[Any]) -> None:
        rid, op, key, a, b, client, seq, floor = req
        status, info = P.OK, ""
        result: Any = None
        try:
            result = await self._execute(op, key, a, b, client, seq, floor)
            if isinstance(result, list) and result and result[0] == "error":
                status, result, info = P.ERROR, None, str(result[1])
        except SessionExpired as err:
            status, info = P.EXPIRED, str(err)
        except (AdminRefused, CatchUpTimeout, TransferFailed) as err:
            status, info = P.ERROR, str(err)
        except (TimeoutError, RaftError, RaftClosed, NotLeader) as err:
            status, info = P.RETRY, f"{type(err).__name__}: {err}"
        except (ValueError, TypeError) as err:
            status, info = P.ERROR, str(err)
        self.stats[f"status:{status}"] += 1
        try:
            await self.channel.send_to(sender, P.encode_response(rid, status, result, self.node.leader.value,
                                                                 info))
        except Exception:  # the client went away; it will retry elsewhere
            self.stats["reply_dropped"] += 1

    async def _execute(self, op: str, key: str, a: Any, b: Any, client: str, seq: int, floor: int) -> Any:
        t = self.request_timeout
        if op == "hello":
            m = self.node.membership.value
            return [sorted(m.all_voters), sorted(m.learners)]
        if op == "get":
            return list(await self.rsm.read(lambda sm: sm.get_with_revision(key), timeout=t))
        if op == "sget":
            return list(self.kv.get_with_revision(key))
        if op == "state":
            import blake3

            return [self.rsm.applied.value, blake3.blake3(self.kv.snapshot()).hexdigest(), len(self.kv.data)]
        if op in P.ADMIN_OPS:
            return await self._admin(op, key, a, b)
        dk = DedupKey(client, seq, floor)
        if op == "put":
            cmd = encode_put(key, a)
        elif op == "del":
            cmd = encode_delete(key)
        else:
            cmd = encode_cas(key, a, b)
        return await self.rsm.execute(cmd, key=dk, timeout=t)

    # -- operator requests (see warpmesh.kv.admin for the decisions) ------------------------------
    def _leader_core(self) -> Any:
        core = self.node.core
        if core is None or self.node.closed or self.node.role.value != Role.LEADER:
            raise NotLeader(self.node.leader.value)
        return core

    def _progress(self, core: Any) -> tuple[dict[str, int], dict[str, float | None]]:
        now = asyncio.get_running_loop().time()
        match = {p: pr.match for p, pr in core.prs.items()}
        age = {p: (now - pr.ack_sent_at if math.isfinite(pr.ack_sent_at) else None)
               for p, pr in core.prs.items()}
        return match, age

    def live_members(self) -> set[str] | None:
        """On the leader, the members it heard from within the election timeout; None elsewhere."""
        try:
            return self._live(self._leader_core())
        except NotLeader:
            return None

    async def _answered_since(self, since: int) -> set[str]:
        """The voters (this leader included) that acknowledged a heartbeat round numbered above
        ``since``; waits up to two election timeouts for every voter to, so only a voter that is
        really silent is left out."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 2 * self.node.config.election_timeout_max
        while True:
            core = self._leader_core()
            voters = self.node.membership.value.all_voters
            live = ({self.node.id} | {p for p, pr in core.prs.items() if pr.acked_round > since}) & voters
            if live >= voters or loop.time() >= end:
                return set(live)
            await asyncio.sleep(0.02)

    def _live(self, core: Any) -> set[str]:
        _match, age = self._progress(core)
        return A.live_voters(self.node.membership.value, self.node.id, age,
                             self.node.config.election_timeout_max)

    async def _barrier(self) -> None:
        """Confirm leadership and apply everything committed before deciding on the member book."""
        self._leader_core()
        await self.rsm.read(lambda sm: None, timeout=self.request_timeout)
        self._leader_core()

    async def _change(self, voters: Any, learners: Any) -> None:
        """One membership change, retried briefly while a previous one (maybe from another leader)
        finishes; then refused with the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ADMIN_WAIT
        while True:
            try:
                await self.node.change_membership(voters, learners, timeout=ADMIN_CHANGE_TIMEOUT)
                return
            except MembershipChangeInProgress as err:
                if loop.time() >= deadline:
                    raise AdminRefused(f"{err}; retry when `warpmesh kv member list` shows it "
                                       "finished") from None
                await asyncio.sleep(0.1)

    def addresses(self) -> dict[str, str]:
        return self._addresses() if self._addresses is not None else {}

    async def _admin(self, op: str, key: str | None, a: Any, b: Any) -> Any:
        if op == "status":
            return self.status()
        if op in ("members", "check", "snapsave", "transfer"):
            await self._barrier()
            return await self._admin_query(op, key)
        # Membership changes: one at a time on this leader (a second one waits, then is refused).
        asked_at_round = self._leader_core().round  # heartbeats after this one prove a voter is up
        try:
            await asyncio.wait_for(self._admin_lock.acquire(), ADMIN_WAIT)
        except TimeoutError:
            raise AdminRefused("another membership change is in flight; retry when `warpmesh kv member "
                               "list` shows it finished") from None
        try:
            await self._barrier()
            assert key is not None
            return await self._admin_change(op, key, a, b if isinstance(b, dict) else {}, asked_at_round)
        finally:
            self._admin_lock.release()

    async def _admin_query(self, op: str, key: str | None) -> Any:
        node = self.node
        core = self._leader_core()
        m = node.membership.value
        if op == "members":
            match, age = self._progress(core)
            return A.member_rows(m, node.id, node.id, core.log.last_index(), match, age,
                                 self.kv.members, self.addresses())
        if op == "check":
            assert key is not None
            gone = key in self.kv.retired and key not in m.members
            return {"removed": gone, "member": key in m.members,
                    "detail": (f"{key} was removed from the cluster at log index {self.kv.retired[key]}"
                               if gone else f"{key} is {'a member' if key in m.members else 'unknown'}")}
        if op == "snapsave":
            index, data = await self.rsm.read(lambda sm: (self.rsm.applied.value, sm.snapshot()),
                                              timeout=self.request_timeout)
            room = self.channel.max_payload - 4096
            if len(data) > room:
                raise AdminRefused(f"the store's snapshot is {len(data)} bytes, more than one response "
                                   f"can carry ({room}); back up a copy of a stopped node's data "
                                   "directory instead")
            return [index, data]
        # transfer
        target = key
        if target == node.id:
            return {"leader": node.id, "previous": node.id, "detail": f"{node.id} already leads"}
        match, _age = self._progress(core)
        if target is None:
            target = A.pick_transfer_target(m, node.id, match, core.log.last_index(), self._live(core))
            if target is None:
                raise AdminRefused("no other live, up-to-date voter to hand leadership to; add or "
                                   "restart a voter first (`warpmesh kv member list`)")
        elif not m.is_voter(target):
            raise AdminRefused(f"{target!r} is not a voter (`warpmesh kv member list` shows the voters)")
        await node.transfer_leadership(target, timeout=max(self.request_timeout,
                                                           node.config.transfer_timeout_s))
        return {"leader": target, "previous": node.id, "detail": f"leadership moved from {node.id} to "
                                                                   f"{target}"}

    async def _admin_change(self, op: str, key: str, a: Any, opts: dict[str, Any], asked_at_round: int) -> Any:
        node = self.node
        if len(key) > MAX_ID_BYTES or not key.isprintable() or "," in key or "=" in key:
            raise AdminRefused(f"a node id is at most {MAX_ID_BYTES} printable characters without "
                               "',' or '='")
        core = self._leader_core()
        m = node.membership.value
        if op in ("add", "join"):
            if not isinstance(a, str) or not a or len(a) > 300:
                raise AdminRefused("give the new member's address as ID=HOST:PORT")
            if opts.get("token") is not None and (not isinstance(opts["token"], str)
                                                  or len(opts["token"]) > 128):
                raise AdminRefused("a join token is a string of at most 128 characters")
            learner = bool(opts.get("learner", False))
            token = opts.get("token") if op == "join" else None
            v = A.join_verdict(key, token=token if isinstance(token, str) else None,
                               force=bool(opts.get("force", False)), membership=m, book=self.kv.members,
                               retired=self.kv.retired)
            if v.action == "refuse":
                raise AdminRefused(v.detail)
            book = self.kv.members.get(key)
            if v.action == "already":
                if op == "join" and token and (book is None or book[1] != token):
                    await self.rsm.execute(encode_member(key, a, token, book[2] if book else learner),
                                           timeout=self.request_timeout)
                return {"added": False, "detail": v.detail + " (nothing to do)"}
            # Register it (address, token, intended role), then add it as a learner. The promoter
            # makes it a voter once it has caught up, unless it is to stay a learner.
            await self.rsm.execute(encode_member(key, a, token, learner), timeout=self.request_timeout)
            await self._change(m.voters, m.learners | {key})
            role = "learner" if learner else "learner (promoted to voter once it has caught up)"
            return {"added": True, "detail": f"{key} added at {a} as a {role}"}
        if op == "promote":
            if key not in m.members:
                raise AdminRefused(f"no member {key!r}; add it first with `warpmesh kv member add "
                                   f"{key}=HOST:PORT`")
            if m.is_voter(key):
                return {"detail": f"{key} is already a voter (nothing to do)"}
            book = self.kv.members.get(key)
            await self.rsm.execute(encode_member(key, book[0] if book else self.addresses().get(key, ""),
                                                 book[1] if book else None, False),
                                   timeout=self.request_timeout)
            try:
                await self._change(m.voters | {key}, m.learners - {key})
            except CatchUpTimeout:
                raise AdminRefused(f"{key} has not caught up with the leader's log, so it stays a "
                                   "learner; check that it runs, then retry") from None
            return {"detail": f"{key} promoted to voter"}
        if op == "remove":
            if key not in m.members:
                if key in self.kv.members or self._was_configured(key):
                    # The config change committed, the book entry did not (a leader change).
                    await self.rsm.execute(encode_retire(key), timeout=self.request_timeout)
                    return {"removed": True, "detail": f"{key} removed"}
                if key in self.kv.retired:
                    return {"removed": False, "detail": f"{key} was already removed (nothing to do)"}
                raise AdminRefused(f"no member {key!r} (`warpmesh kv member list` shows the members)")
            # Live means "answered a heartbeat sent after this request arrived": a voter that died a
            # moment ago still looks recent by contact age, and a removal that counts it would
            # append a configuration whose majority can never be reached (the cluster wedges).
            live = await self._answered_since(asked_at_round)
            core = self._leader_core()
            m = node.membership.value
            reason = A.remove_refusal(m, key, live)
            if reason is not None:
                raise AdminRefused(reason)
            if key == node.id:
                # Removing the leader: hand leadership over first, then the new leader removes us.
                match, _age = self._progress(core)
                target = A.pick_transfer_target(m, node.id, match, core.log.last_index(), live)
                if target is None:
                    raise AdminRefused(f"cannot move leadership off {key} first: no other live, "
                                       "up-to-date voter")
                await node.transfer_leadership(target, timeout=max(self.request_timeout,
                                                                   node.config.transfer_timeout_s))
                raise NotLeader(target, "leadership moved before removing the old leader; retry there")
            # Retire the id first: if the leader changes after the configuration change, the retry
            # still knows the id was a member (its configuration may already be compacted away).
            await self.rsm.execute(encode_retire(key), timeout=self.request_timeout)
            await self._change(m.voters - {key}, m.learners - {key})
            return {"removed": True, "detail": f"{key} removed"}
        raise AdminRefused(f"unknown operator request {op!r}")

    def _was_configured(self, node: str) -> bool:
        """Whether ``node`` appears in a configuration this node still knows (log or snapshot)."""
        core = self.node.core
        if core is None or node in self.kv.retired:
            return False
        return node in core.base_membership.members or any(
            node in m.members for _i, m in core.config_entries)

    async def _book_keeper(self) -> None:
        """On the leader: give every configured member a member-book entry (the bootstrap members
        of a ``--peers`` cluster have none), so ``member list`` shows addresses and a removed
        id is remembered."""
        node = self.node
        core = node.core
        if core is None or node.role.value != Role.LEADER or self._admin_lock.locked():
            return
        missing = sorted(n for n in node.membership.value.members
                         if n not in self.kv.members and n not in self.kv.retired)
        if not missing:
            return
        async with self._admin_lock:
            m = node.membership.value
            addrs = self.addresses()
            for n in missing:
                if n in m.members and n not in self.kv.members:
                    # Token "peers": its data directory exists (it was configured, not just
                    # announced), so a --join under its id from an empty directory is refused.
                    await self.rsm.execute(encode_member(n, addrs.get(n, ""), A.BOOTSTRAP_TOKEN,
                                                         m.is_learner(n)),
                                           timeout=self.request_timeout)

    async def _promoter(self) -> None:
        """On the leader: make each caught-up learner that is meant to be a voter a voter."""
        node = self.node
        core = node.core
        if core is None or node.role.value != Role.LEADER or self._admin_lock.locked():
            return
        m = node.membership.value
        if m.joint or core.conf_change is not None:
            return
        for learner in sorted(m.learners):
            book = self.kv.members.get(learner)
            pr = core.prs.get(learner)
            if book is None or book[2] or pr is None or pr.match < core.log.commit:
                continue
            async with self._admin_lock:
                with contextlib.suppress(RaftError, TimeoutError, AdminRefused):
                    m = node.membership.value
                    if learner in m.learners:
                        await self._change(m.voters | {learner}, m.learners - {learner})
                        log.info("%s: promoted %s to voter", node.id, learner)
            return

    async def _watcher(self) -> None:
        """Every few hundred ms: promote caught-up learners (leader), and notice our own removal."""
        while True:
            await asyncio.sleep(0.2)
            core = self.node.core
            if core is None or self.node.closed:
                continue
            m = self.node.membership.value
            member = self.node.id in m.members
            if member:
                self._was_member = True
            if self._was_member and self.removed is not None and not self.removed.done():
                quiet = asyncio.get_running_loop().time() - core.leader_contact
                lost = core.role != Role.LEADER and quiet > 5 * self.node.config.election_timeout_max
                if not member and core._removed():
                    self.removed.set_result(f"{self.node.id} was removed from the cluster")
                elif (not member or lost) and (self._check_task is None or self._check_task.done()):
                    # We may never learn from Raft that we were removed: the leader stops
                    # replicating to a removed node once it sent the news (which can be lost), and a
                    # later leader never contacts it. So a node that sees itself removed but not yet
                    # committed, or hears no leader for a while, asks the leader.
                    self._check_task = asyncio.get_running_loop().create_task(self._ask_removed())
            try:
                await self._book_keeper()
                await self._promoter()
            except asyncio.CancelledError:
                raise
            except (RaftError, TimeoutError):
                pass  # lost leadership or timed out: the next round retries
            except Exception:  # never let a failed promotion stop the watcher
                log.exception("promoting a learner failed")

    async def _ask_removed(self) -> None:
        with contextlib.suppress(TimeoutError, AdminRefused):
            r = await self.ask("check", self.node.id, timeout=2.0)
            if isinstance(r, dict) and r.get("removed") and self.removed is not None \
                    and not self.removed.done():
                self.removed.set_result(str(r.get("detail")))
        await asyncio.sleep(1.0)  # at most one question a second

    def status(self) -> dict[str, Any]:
        """This node's row of ``kv status``."""
        node = self.node
        core = node.core
        data_bytes = 0
        if self.data_dir is not None and self.data_dir.is_dir():
            data_bytes = sum(f.stat().st_size for f in self.data_dir.iterdir() if f.is_file())
        else:
            data_bytes = sum(len(k) + len(v) for k, (v, _r) in self.kv.data.items())
        commit = node.commit_index.value
        applied = self.rsm.applied.value
        return {"id": node.id, "role": str(node.role.value), "leader": node.leader.value,
                "term": node.term.value, "commit_index": commit, "applied_index": applied,
                "log_entries": 0 if core is None else len(core.log.entries),
                "snapshot_index": node.compaction_floor, "data_bytes": data_bytes,
                "healthy": A.healthy(leader=node.leader.value, commit_index=commit, applied_index=applied,
                                     closed=node.closed)}

    # -- asking other servers (kv serve --join, the removed-node check) ----------------------------
    def _answer(self, data: bytes) -> None:
        try:
            r = P.decode_response(data)
        except (FrameError, P.BadFrame):
            self.stats["refused"] += 1
            return
        fut = self._asks.get(r[0])
        if fut is not None and not fut.done():
            fut.set_result(r)

    async def ask(self, op: str, key: str | None = None, a: Any = None, b: Any = None, *,
                  timeout: float = 10.0) -> Any:
        """Send an operator request to the cluster from this server (following leader hints), like a
        client would. Raises :class:`AdminRefused` on ERROR and ``TimeoutError`` if nobody answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hint: str | None = None
        attempt = 0
        while loop.time() < deadline:
            peers = sorted(self.channel.roster.value - {self.node.id})
            if not peers:
                await asyncio.sleep(0.1)
                continue
            # Clients share the mesh and never answer: ask the members we know of first, and give
            # an unknown peer only a short attempt (a server answers at once, if only with a hint).
            known = set(self.node.membership.value.members) | set(self.kv.members)
            pool = [p for p in peers if p in known] or peers
            target = hint if hint in peers else pool[attempt % len(pool)]
            per = 10.0 if target == hint or target in known else 0.5
            attempt += 1
            self._ask_rid += 1
            rid = self._ask_rid
            fut: asyncio.Future[list[Any]] = loop.create_future()
            self._asks[rid] = fut
            try:
                await self.channel.send_to(target, P.encode_request(rid, op, key, a, b))
                r = await wait_future(fut, min(per, max(0.05, deadline - loop.time())))
            except Exception:  # timed out, or the peer went away: try the next one
                hint = None
                continue
            finally:
                self._asks.pop(rid, None)
            _rid, status, result, leader, info = r
            if status == P.OK:
                return result
            if status == P.ERROR:
                raise AdminRefused(info)
            hint = leader if leader != target else None
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no leader answered {op!r} within {timeout:.0f}s")


class KVNode:
    """A running KV replica on a TCP mesh: mesh + Raft + server. Build with :func:`open_kv_node`."""

    def __init__(self, mesh: Any, node: RaftNode, server: KVServer, *, had_data: bool = True) -> None:
        self.mesh = mesh
        self.node = node
        self.server = server
        #: The data directory held state at start (a restart, not a first start or a fresh join).
        self.had_data = had_data

    async def check_not_removed(self, *, interval: float = 1.0) -> str:
        """Ask the cluster's leader until it answers whether this node's id was removed; returns the
        reason if it was (the node must then stop), waits forever otherwise (cancel it)."""
        while True:
            try:
                r = await self.server.ask("check", self.node.id, timeout=3.0)
                if isinstance(r, dict) and r.get("removed"):
                    return str(r.get("detail", f"{self.node.id} was removed"))
                if isinstance(r, dict):
                    break  # the leader answered: this id is not retired
            except (TimeoutError, AdminRefused):
                pass
            await asyncio.sleep(interval)
        return await self._removed()

    async def _removed(self) -> str:
        assert self.server.removed is not None
        return await asyncio.shield(self.server.removed)

    async def _engine_crashed(self) -> str:
        err = await self.node.wait_crashed()
        return (f"the Raft engine of {self.node.id} stopped on an error ({type(err).__name__}: {err}); "
                "this node takes no further part in the cluster and stops; restart it on the same "
                "--data (its log is intact up to the last acknowledged write)")

    def _crashed_task(self) -> asyncio.Task[str]:
        """A task that ends (with the reason) if this node's Raft engine stops on an error."""
        return asyncio.get_running_loop().create_task(self._engine_crashed())

    def _removed_task(self) -> asyncio.Task[str]:
        """A task that ends (with the reason) when this node learns it was removed."""
        return asyncio.get_running_loop().create_task(self._removed())

    async def close(self) -> None:
        await self.server.close()
        await self.node.close()
        with contextlib.suppress(Exception):
            await self.mesh.close()


def _addr_text(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def open_kv_node(node_id: str, *, listen: tuple[str, int], peers: dict[str, tuple[str, int]],
                       data_dir: str | Path, secret: bytes | None = None,
                       config: RaftConfig | None = None, snapshot_every: int = 10_000,
                       storage: RaftStorage | None = None, tls: Any = None,
                       join: list[tuple[str, int]] | None = None, force: bool = False,
                       learner: bool = False, join_timeout: float = 30.0) -> KVNode:
    """Start one replica: TCP mesh on ``listen`` joining ``peers`` (every member, ``id -> address``,
    self included), SQLite storage in ``data_dir``, Raft on channel 0x20, clients on 0x21.

    With ``join`` (addresses of running members) instead of ``peers``: on an empty data directory
    the node asks the cluster to add it (as a learner, promoted to voter once caught up unless
    ``learner``) instead of bootstrapping a cluster of its own; the leader refuses an id that was
    removed before, or a member's id on a new directory, unless ``force``. With existing data it
    restarts from it either way."""
    import os

    from warpmesh.net.tcp import TcpMesh, boot_incarnation
    from warpmesh.raft.storage import SqliteRaftStorage

    if join is None and node_id not in peers:
        raise ValueError(f"--peers must include this node ({node_id})")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    had_data = (data / "raft.sqlite").exists() or storage is not None
    token_file = data / "join-token"
    store = storage or SqliteRaftStorage(data / "raft.sqlite", node_id=node_id)
    seeds = list(join) if join is not None else [a for p, a in sorted(peers.items()) if p != node_id]
    mesh = TcpMesh(node_id, listen=listen, join=seeds, secret=secret, incarnation=boot_incarnation(), tls=tls)

    def addresses() -> dict[str, str]:
        out = {str(pid): _addr_text(a) for a, pid in mesh.known_peers().items() if pid is not None}
        out[node_id] = _addr_text(mesh.address)
        return out

    try:
        await mesh.start()
        mux = MuxSeam(mesh)
        node = RaftNode(node_id, SeamRaftTransport(mux.channel(RAFT_CHANNEL)), store,
                        voters=() if join is not None else sorted(peers), config=config)
        await node.start()
        server = await KVServer(node, mux.channel(P.KV_CHANNEL), snapshot_every=snapshot_every,
                                data_dir=data, addresses=addresses).start()
    except BaseException:
        with contextlib.suppress(Exception):
            await mesh.close()
        store.close()
        raise
    kv_node = KVNode(mesh, node, server, had_data=had_data)
    if join is not None and (not had_data or token_file.exists()) and node.core is not None \
            and not node.core.membership.members:
        # A fresh joiner: the token names this data directory, so a retried join is recognised
        # while an empty directory under a member's id is not.
        if not token_file.exists():
            token_file.write_text(os.urandom(16).hex())
        token = token_file.read_text().strip()
        try:
            await server.ask("join", node_id, _addr_text(mesh.address),
                             {"token": token, "force": force, "learner": learner}, timeout=join_timeout)
        except TimeoutError:
            await kv_node.close()
            raise TimeoutError(f"no leader answered through {', '.join(_addr_text(a) for a in seeds)} "
                               f"within {join_timeout:.0f}s; are those members running, and is the "
                               "cluster secret the same?") from None
        except BaseException:
            await kv_node.close()
            raise
    return kv_node
