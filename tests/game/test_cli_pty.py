"""An interactive game through pseudo-terminals: two players type moves, both screens show the same board."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Term:
    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        env = dict(os.environ, COLUMNS="80", LINES="40", TERM="xterm")
        self.proc = subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", *args], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.buf = b""

    def pump(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.buf).decode(errors="replace").replace("\r", "")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")


def _wait(terms: list[Term], pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        for t in terms:
            t.pump()
        if time.monotonic() > end:
            raise AssertionError("timeout; screens:\n" + "\n=====\n".join(t.text[-1500:] for t in terms))
        time.sleep(0.05)


def test_two_players_type_moves_and_see_the_same_board() -> None:
    addr = f"127.0.0.1:{_port()}"
    host = Term(["game", "host", "--players", "2", "--listen", addr])
    time.sleep(1.0)
    p2 = Term(["game", "join", addr, "--id", "p2"])
    terms = [host, p2]
    try:
        for who, cell in ((host, 1), (p2, 4), (host, 2), (p2, 5), (host, 3)):
            _wait(terms, lambda w=who: w.text.count("your move") > w.text.count("\n<typed>"), 60)
            who.buf += b"\n<typed>"
            who.type(str(cell))
        _wait(terms, lambda: all("host wins" in t.text for t in terms), 60)
        for t in terms:
            assert re.search(r"X \| X \| X", t.text) and re.search(r"O \| O \| 6", t.text), t.text[-1500:]
        # Both screens end with the same final board.
        boards = [re.findall(r"X \| X \| X.*?\n.*?\n.*?O \| O \| 6", t.text, re.S)[-1] for t in terms]
        assert boards[0] == boards[1]
        for t in terms:
            assert t.proc.wait(timeout=30) == 0
    finally:
        for t in terms:
            if t.proc.poll() is None:
                t.proc.kill()
                t.proc.wait()
            os.close(t.master)
