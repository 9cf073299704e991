"""vLLM's async engine (``AsyncLLM``) on an event loop of its own, driven from any thread.

    submit(prompt, params, finish) ──► Future   (thread-safe, returns at once)
        └─ loop thread: AsyncLLM.encode(prompt, params, request_id) ──► PoolingRequestOutput
                        ──► finish(output.outputs.data) ──► the future's result

Each submitted item is one vLLM request from the moment it is submitted: vLLM's scheduler adds it to its
next engine step (continuous batching; a group's shared prompt hits the prefix cache), instead of waiting
for the rest of a batch formed by rmserve. The engine core runs in its own process, as with ``LLM``.

Cancelling a returned future before it is done cancels its coroutine, and ``AsyncLLM.encode`` aborts the
vLLM request on cancellation (vllm/v1/engine/async_llm.py): an abandoned item stops costing compute.

``finish`` runs on the loop thread as each output arrives (the vLLM backend applies rmserve's heads there),
so completions are not serialised behind a single consumer thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("rmserve.models.vllm")


class AsyncPooler:
    """A pooling ``AsyncLLM`` built from ``AsyncEngineArgs(**engine_args)`` and run on a daemon thread."""

    def __init__(self, engine_args: dict[str, Any], *, name: str = "rmserve-vllm"):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._ids = itertools.count()
        self.engine = None
        try:
            # Built on the loop: AsyncLLM starts its output handler on the running loop it is created in.
            self.engine = asyncio.run_coroutine_threadsafe(self._create(engine_args), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _create(engine_args: dict[str, Any]):
        from vllm import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        # The step budget defaults of vLLM's offline LLM class, not those of an engine context or of its
        # OpenAI server (on CPU half the tokens and seqs, on GPUs a half to a quarter of the tokens): the server's
        # smaller steps keep a generating stream's inter-token latency short, and pooling has no decode
        # steps to protect. Every pooling request is one prefill, so bigger steps are fewer, fuller steps.
        # --vllm-max-num-batched-tokens / --vllm-max-num-seqs override it (bench.vllm_compare sets both).
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args), usage_context=UsageContext.LLM_CLASS)

    @property
    def model_config(self):
        return self.engine.model_config

    def submit(self, prompt: dict, params, finish: Callable[[Any], Any] | None = None) -> Future:
        """Pool ``prompt`` (``{"prompt_token_ids": [...], "multi_modal_data": ...}``) with ``params``
        (vLLM ``PoolingParams``, cloned per request); the future holds ``finish(data)`` or ``data``."""
        return asyncio.run_coroutine_threadsafe(self._pool(prompt, params.clone(), finish), self._loop)

    async def _pool(self, prompt: dict, params, finish):
        final = None
        async for output in self.engine.encode(prompt, params, f"rmserve-{next(self._ids)}"):
            final = output  # FINAL_ONLY pooling: one output, finished
        if final is None:
            raise RuntimeError("vLLM returned no output for a pooling request")
        data = final.outputs.data
        return data if finish is None else finish(data)

    def shutdown(self) -> None:
        """Shut the engine core down and stop the loop thread (idempotent)."""
        if self.engine is not None:
            try:
                self.engine.shutdown()
            except Exception:  # already gone; nothing else to free
                log.debug("vLLM async engine shutdown failed", exc_info=True)
            self.engine = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


__all__ = ["AsyncPooler"]
