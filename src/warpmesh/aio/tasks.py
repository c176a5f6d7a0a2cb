"""Shutting tasks down: the one "cancel, then wait for every task to finish" every runtime's close uses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger("warpmesh.aio")


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any] | None],
    *,
    swallow: tuple[type[BaseException], ...] = (Exception,),
) -> None:
    """Cancel every task (None entries are skipped) and return once all of them have finished.

    A task that ends with an exception of a type in ``swallow`` is expected at shutdown (its seam was
    closed under it ...): the exception is retrieved and dropped. Any other exception is re-raised
    once every task has finished. If the caller itself is cancelled meanwhile, it still waits for the
    tasks (a half-stopped runtime would keep running behind its owner's back) and then re-raises the
    cancellation instead of losing it.
    """
    pending = [t for t in tasks if t is not None]
    for t in pending:
        t.cancel()
    if not pending:
        return
    cancelled = False
    while True:
        try:
            await asyncio.wait(pending)
            break
        except asyncio.CancelledError:
            cancelled = True
    failure: BaseException | None = None
    for t in pending:
        if t.cancelled():
            continue
        err = t.exception()
        if err is None:
            continue
        if isinstance(err, swallow):
            log.debug("task %r ended with %r at shutdown", t, err)
        elif failure is None:
            failure = err
    if cancelled:
        raise asyncio.CancelledError
    if failure is not None:
        raise failure
