"""A lab of real network stacks: one Linux network namespace per peer, joined by veth pairs to a bridge.

Needs root and iproute2 (``ip``); loss and one-way cuts need ``nft`` (Debian's ``nftables``). This
kernel has no ``netem`` qdisc, so delay is left to the simulator (``warpmesh sim``); loss is real:
an nftables ``numgen random`` rule drops packets on a peer's input.

Layout for a lab named ``wmc<pid>x<k>``: a bridge namespace ``<name>br`` with bridge ``br0``; per peer
``i`` a namespace ``<name>n<i>`` whose ``eth0`` (``10.<a>.<b>.<10 + i>/24``) is one end of a veth pair,
the other end (``b<i>``) being a port of ``br0``. The driver's own namespace gets a port too
(``<name>c``, ``.2``), so clients reach the peers through the bridge without being cut off by the
peers' nemeses. Everything is removed by :meth:`Lab.close` (also on errors: use ``with Lab(...)``),
and :func:`cleanup_stale` removes labs whose creating process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable

from warpmesh.errors import WarpmeshError

PREFIX = "wmc"
_NAME = re.compile(rf"^{PREFIX}(\d+)x(\d+)")


class LabError(WarpmeshError):
    """The lab could not be built (not root, no ``ip``, a command failed)."""


def unavailable_reason(*, need_nft: bool = True) -> str | None:
    """Why a lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's 'ip' is not installed"
    if need_nft and shutil.which("nft") is None:
        return "nftables' 'nft' is not installed (apt-get install nftables)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(args)}: {out.stderr.strip() or out.returncode}")
    return out


def cleanup_stale() -> list[str]:
    """Remove the namespaces (and driver ports) of labs whose creating process no longer exists."""
    removed = []
    names = _run(["ip", "netns", "list"], check=False).stdout.split()
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for name in names + re.findall(rf"\d+: ({PREFIX}\d+x\d+c)[@:]", links):
        m = _NAME.match(name)
        if m is None or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        if name.endswith("c") and name in links:
            _run(["ip", "link", "del", name], check=False)
        else:
            _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


class Lab:
    """``peers`` namespaces on one bridge (see the module docstring)."""

    def __init__(self, peers: int, *, seq: int = 0) -> None:
        if not 1 <= peers <= 40:
            raise ValueError("peers must be within 1..40")
        self.peers = peers
        self.name = f"{PREFIX}{os.getpid()}x{seq}"
        k = (os.getpid() * 7 + seq) % 250 + 1
        self.net = f"10.{200 + k % 50}.{k}"
        self.bridge_ns = f"{self.name}br"
        self.client_link = f"{self.name}c"
        self.client_ip = f"{self.net}.2"
        self._made: list[str] = []
        self._nft: set[int] = set()

    # -- addressing -----------------------------------------------------------------------------
    def ns(self, i: int) -> str:
        return f"{self.name}n{i}"

    def ip(self, i: int) -> str:
        return f"{self.net}.{10 + i}"

    def exec_prefix(self, i: int) -> list[str]:
        """Prefix a command with this to run it in peer ``i``'s namespace."""
        return ["ip", "netns", "exec", self.ns(i)]

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        br = self.bridge_ns
        _run(["ip", "netns", "add", br])
        self._made.append(br)
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        _run(["ip", "-n", br, "link", "set", "lo", "up"])
        for i in range(self.peers):
            ns = self.ns(i)
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"b{i}", "netns", br])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", br, "link", "set", f"b{i}", "master", "br0"])
            _run(["ip", "-n", br, "link", "set", f"b{i}", "up"])
        _run(["ip", "link", "add", self.client_link, "type", "veth", "peer", "name", "bc", "netns", br])
        self._made.append(self.client_link)
        _run(["ip", "addr", "add", f"{self.client_ip}/24", "dev", self.client_link])
        _run(["ip", "link", "set", self.client_link, "up"])
        _run(["ip", "-n", br, "link", "set", "bc", "master", "br0"])
        _run(["ip", "-n", br, "link", "set", "bc", "up"])

    def close(self) -> None:
        """Remove every namespace and link this lab made (processes inside should be stopped first)."""
        for name in reversed(self._made):
            if name == self.client_link:
                _run(["ip", "link", "del", name], check=False)
            else:
                _run(["ip", "netns", "del", name], check=False)
        self._made.clear()

    # -- nemeses --------------------------------------------------------------------------------
    def link(self, i: int, up: bool) -> None:
        """Cut (or restore) peer ``i``'s only link: a two-way partition of ``i`` from everyone."""
        _run(["ip", "-n", self.bridge_ns, "link", "set", f"b{i}", "up" if up else "down"])

    def _nft_table(self, i: int) -> None:
        if i in self._nft:
            return
        _run(["ip", "netns", "exec", self.ns(i), "nft", "add", "table", "inet", "chaos"])
        _run(["ip", "netns", "exec", self.ns(i), "nft", "add", "chain", "inet", "chaos", "input",
              "{ type filter hook input priority 0; }"])
        self._nft.add(i)

    def drop_from(self, i: int, sources: Iterable[int]) -> None:
        """Peer ``i`` drops every packet from ``sources`` (one way: they still hear ``i``)."""
        self._nft_table(i)
        for j in sources:
            _run(["ip", "netns", "exec", self.ns(i), "nft", "add", "rule", "inet", "chaos", "input", "ip", "saddr",
                  self.ip(j), "drop"])

    def partition(self, side_a: Iterable[int], side_b: Iterable[int], *, one_way: bool = False) -> None:
        """``side_a`` stops hearing ``side_b``; and, unless ``one_way``, ``side_b`` stops hearing ``side_a``."""
        a, b = list(side_a), list(side_b)
        for i in a:
            self.drop_from(i, b)
        if not one_way:
            for i in b:
                self.drop_from(i, a)

    def loss(self, percent: int, peers: Iterable[int] | None = None) -> None:
        """Every listed peer (default: all) drops ``percent`` % of its incoming packets at random."""
        for i in range(self.peers) if peers is None else peers:
            self._nft_table(i)
            _run(["ip", "netns", "exec", self.ns(i), "nft", "add", "rule", "inet", "chaos", "input", "numgen",
                  "random", "mod", "100", "<", str(percent), "drop"])

    def heal(self) -> None:
        """Every link up, every nftables rule gone."""
        for i in range(self.peers):
            self.link(i, True)
        for i in sorted(self._nft):
            _run(["ip", "netns", "exec", self.ns(i), "nft", "delete", "table", "inet", "chaos"], check=False)
        self._nft.clear()
