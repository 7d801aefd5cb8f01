"""Abandoned requests stop: a non-streamed request whose client goes away is cancelled, and so is its generation.

A streamed response already stops this way (Starlette's `StreamingResponse` listens for the disconnect). A plain
handler does not: it used to generate to the end for nobody, and ten such requests slowed every other one
about 30x for minutes. Cancelling the handler's task cancels the engine call, and vLLM's `AsyncLLM.generate`
aborts the request when it is cancelled.

This is the pattern of vLLM's `with_cancellation` (vllm/entrypoints/serve/utils/api_utils.py), written out
here because that decorator returns None to FastAPI on a disconnect and lives in vLLM's server package, which
the gateway does not import outside server/engine.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    # The body was read already (FastAPI parsed it), so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run `work` to the end, or cancel it when the client disconnects first: (finished, result)."""
    task = asyncio.ensure_future(work)
    listener = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait([task, listener], return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return False, None
