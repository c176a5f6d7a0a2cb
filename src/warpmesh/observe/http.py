"""``DashboardServer``: the dashboard over HTTP with aiohttp (a runtime module).

Read-only GET routes on one port:

* ``/`` - the page (plain HTML/JS/CSS shipped in this package: no build step, no CDN);
* ``/api/summary`` - the board's whole view (peers, counters, series, the task stream's first page,
  Raft, isolates); ``/api/stream?before=N&limit=M`` - older pages of the task stream;
  ``/api/job/ID`` - one job's detail;
* ``/api/live`` - server-sent events: a ``summary`` message every ``push_interval`` seconds;
* ``/metrics`` - Prometheus text format (:mod:`warpmesh.observe.metrics`).

Everything the server holds is bounded (the board's ring buffers), and a page only ever receives a
summary and pages of at most 500 runs, so neither grows with the number of jobs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from importlib import resources
from typing import Any

from aiohttp import web

from warpmesh.errors import WarpmeshError
from warpmesh.observe.board import Board
from warpmesh.observe.metrics import CONTENT_TYPE, metrics_text

__all__ = ["DashboardServer", "NotLoopback", "is_loopback"]

_STATIC = {"app.js": "application/javascript", "style.css": "text/css", "index.html": "text/html"}


class NotLoopback(WarpmeshError):
    """The dashboard would listen beyond loopback without a secret or TLS configured."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


class DashboardServer:
    """Serves ``observer``'s board (an :class:`~warpmesh.observe.Observer` that :meth:`watch` es).

    ``secured``: the mesh has a secret or TLS, so a non-loopback ``host`` is allowed.
    """

    def __init__(self, observer: Any, host: str = "127.0.0.1", port: int = 8080, *, secured: bool = False,
                 push_interval: float = 0.5, title: str | None = None) -> None:
        if not secured and not is_loopback(host):
            raise NotLoopback(f"the dashboard serves {host} only with a mesh secret or TLS configured; use "
                              "127.0.0.1, or give --secret-file / $WARPMESH_SECRET")
        self.observer = observer
        self.board: Board = observer.watch()
        self.host, self.port = host, port
        self.push_interval = push_interval
        self.title = title or f"warpmesh - {observer.self_id}"
        self._runner: web.AppRunner | None = None
        self._live: set[web.StreamResponse] = set()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> DashboardServer:
        """Bind and serve (port 0 picks a free port: see :attr:`port`)."""
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/job/{job}", self._job)
        app.router.add_get("/api/live", self._live_events)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            self._runner = None
            raise WarpmeshError(f"cannot serve the dashboard on {self.host}:{self.port}: "
                                f"{err.strerror or err}; pick another --http port") from None
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop serving (open live streams end)."""
        for resp in list(self._live):
            resp.force_close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------------
    def _view(self) -> dict[str, Any]:
        self.observer.refresh()
        out = self.board.summary(self.observer.node.now())
        out["title"] = self.title
        return out

    async def _index(self, _req: web.Request) -> web.Response:
        return await self._static_file("index.html")

    async def _static(self, req: web.Request) -> web.Response:
        name = req.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return await self._static_file(name)

    async def _static_file(self, name: str) -> web.Response:
        body = resources.files("warpmesh.observe").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    async def _summary(self, _req: web.Request) -> web.Response:
        return web.Response(text=_dumps(self._view()), content_type="application/json")

    async def _stream(self, req: web.Request) -> web.Response:
        try:
            before = int(req.query["before"]) if "before" in req.query else None
            limit = int(req.query.get("limit", "50"))
        except ValueError:
            raise web.HTTPBadRequest(text="before and limit are integers") from None
        self.observer.refresh()
        return web.Response(text=_dumps(self.board.stream_page(before, limit)), content_type="application/json")

    async def _job(self, req: web.Request) -> web.Response:
        self.observer.refresh()
        detail = self.board.job(req.match_info["job"])
        if detail is None:
            raise web.HTTPNotFound(text="this dashboard holds no such job (it keeps the most recent ones)")
        return web.Response(text=_dumps(detail), content_type="application/json")

    async def _metrics(self, _req: web.Request) -> web.Response:
        self.observer.refresh()
        return web.Response(body=metrics_text(lambda: self.board), headers={"Content-Type": CONTENT_TYPE})

    async def _live_events(self, req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(req)
        self._live.add(resp)
        try:
            while True:
                await resp.write(f"event: summary\ndata: {_dumps(self._view())}\n\n".encode())
                await asyncio.sleep(self.push_interval)
        except (ConnectionError, RuntimeError):  # the page went away
            pass
        finally:
            self._live.discard(resp)
        return resp
