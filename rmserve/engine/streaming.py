"""Token streaming from the worker thread to a coroutine, for generation run with ``run_exclusive``.

``TokenStream`` is a duck-typed transformers streamer (``put(ids)`` / ``end()``, what
``generate(streamer=...)`` calls): on the worker thread it decodes the tokens so far, and hands
each new piece of text to the event loop through ``loop.call_soon_threadsafe`` into an
``asyncio.Queue``; the coroutine reads it with ``async for text in stream``. Text is only
emitted once it does not end in a partial UTF-8 character (byte-level BPE splits characters).

It is also how generation stops early: ``put`` raises once the consumer has cancelled the stream
or the deadline has passed, and ``generate`` lets that exception out, freeing the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from rmserve.errors import DeadlineExceeded

_DONE = object()


class StreamCancelled(Exception):
    """Raised inside generation when nobody is reading the stream any more."""


class TokenStream:
    def __init__(
        self,
        decode: Callable[[list[int]], str],
        loop: asyncio.AbstractEventLoop,
        *,
        deadline: float | None = None,
        skip_prompt: bool = True,
    ):
        self._decode = decode
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._deadline = deadline
        self._skip_prompt = skip_prompt
        self._ids: list[int] = []
        self._emitted = 0  # characters of decoded text already handed out
        self.tokens = 0  # generated tokens seen
        self.cancelled = False

    # ── worker side (transformers' streamer interface) ─────────────────────────────────────

    def put(self, value) -> None:
        if self.cancelled:
            raise StreamCancelled("the caller stopped reading the stream")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise DeadlineExceeded("the request's deadline passed during generation", code="deadline_exceeded")
        if self._skip_prompt:  # generate() first puts the prompt ids
            self._skip_prompt = False
            return
        ids = value.reshape(-1).tolist() if hasattr(value, "reshape") else list(value)
        self._ids.extend(int(i) for i in ids)
        self.tokens += len(ids)
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def close(self) -> None:
        """Tell the reader there is nothing more (call once, when the generation job is over)."""
        self._send(_DONE)

    def _flush(self, *, final: bool) -> None:
        if not self._ids:
            return
        text = self._decode(self._ids)
        if not final and text.endswith("\ufffd"):
            return  # wait for the rest of the character
        if len(text) > self._emitted:
            self._send(text[self._emitted :])
            self._emitted = len(text)

    def _send(self, item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    # ── event-loop side ────────────────────────────────────────────────────────────────────

    def cancel(self) -> None:
        """Stop generation at its next token (the reader went away)."""
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            yield item


__all__ = ["StreamCancelled", "TokenStream"]
