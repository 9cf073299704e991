"""POST /v1/critique: MM-RLHF critique-based scoring (docs/architecture.md), whole or streamed.

    validate -> admit -> decode images, encode the evaluator prompt (pool: errors before any text)
    -> generate the critique greedily on the engine's worker (``Engine.run_exclusive``; the model is
       not thread-safe and the worker is its only user), tokens streamed through a ``TokenStream``
    -> score "evaluator prompt + critique" through the normal batched path -> final chunk

Only critique models can do this: checkpoints whose ``rmserve.json`` has a ``"critique"`` section
(``rmserve.models.critique.CritiqueConfig``: template and generation settings) and whose backbone
has a language-model head. Any other model is a 422 ``not_a_critique_model``: generating with the
default template would "work" for a plain reward model with an LM head, but its reward head was
never trained on evaluator turns, so that reward would be meaningless; refusing is clearer.

Streaming: chunks carry ``delta`` text as it is decoded (partial UTF-8 characters are held back);
the last chunk has ``done: true``, the final ``critique`` (whitespace-trimmed, as scored: it may
differ from the concatenated deltas in leading/trailing whitespace) and the ``reward``. If the
reader goes away, generation stops at its next token; the deadline is checked per token too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from rmserve.api.context import ServingContext
from rmserve.api.protocol import Conversation, _not_blank
from rmserve.api.scoring import Job, here
from rmserve.engine import TokenStream
from rmserve.errors import InvalidInput
from rmserve.models.critique import (
    CritiqueConfig,
    can_generate,
    generate_critique,
    is_critique_model,
    scored_item,
)
from rmserve.models.types import ScoreItem


class CritiqueRequest(Conversation):
    """A conversation and the response to critique and score."""

    model: str | None = Field(
        default=None, description="A critique model; default: the first served model that is one."
    )
    response: str = Field(description="The response to evaluate; must not be empty or only whitespace.")
    max_new_tokens: int | None = Field(
        default=None, ge=1, description="Cap on critique tokens (at most the model's own `max_new_tokens`)."
    )
    stream: bool = Field(
        default=False,
        description="REST: answer with server-sent events (`text/event-stream`): one `data: {chunk}` per piece "
        "of critique text, then one with the reward.",
    )

    @field_validator("response")
    @classmethod
    def _response_not_blank(cls, value: str) -> str:
        return _not_blank(value)


class CritiqueUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the evaluator prompt (question, response, images).")
    completion_tokens: int = Field(description="Critique tokens generated.")
    total_tokens: int = Field(description="prompt_tokens + completion_tokens.")


class CritiqueResponse(BaseModel):
    critique: str = Field(description="The generated evaluation.")
    reward: float = Field(description="The reward head's score of the evaluator prompt followed by the critique.")
    model: str = Field(description="The critique model.")
    usage: CritiqueUsage = Field(description="What the request cost.")


class CritiqueChunk(BaseModel):
    object: Literal["critique.chunk"] = Field(default="critique.chunk", description="Always `critique.chunk`.")
    delta: str = Field(default="", description="Critique text generated since the previous chunk.")
    done: bool = Field(default=False, description="True on the last chunk, which carries the result.")
    critique: str | None = Field(default=None, description="Last chunk: the whole critique, as scored.")
    reward: float | None = Field(default=None, description="Last chunk: the reward.")
    model: str | None = Field(default=None, description="Last chunk: the critique model.")
    usage: CritiqueUsage | None = Field(default=None, description="Last chunk: what the request cost.")


def can_critique(model) -> bool:
    """A critique checkpoint whose backbone can generate."""
    return is_critique_model(model) and can_generate(model)


_LACKS = (
    'is not a critique model: its checkpoint has no "critique" section (train one with `rmserve-train '
    "critique`) or it cannot generate; use /v1/score for direct rewards"
)


async def critique_stream(
    ctx: ServingContext, request: CritiqueRequest, *, deadline: float | None = None
) -> AsyncIterator[CritiqueChunk]:
    """The critique as it is generated: text chunks, then a final chunk with the reward. Validation
    errors are raised by the first ``__anext__``, before any chunk."""
    selection = ctx.models.capable(
        request.model, lambda m: can_critique(m.model), lacks=_LACKS, code="not_a_critique_model"
    )
    ctx.check_conversation(request, selection)
    engine, model = selection.primary.engine, selection.primary.model
    config = CritiqueConfig.of(model) or CritiqueConfig()
    if request.max_new_tokens is not None:
        cap = min(config.max_new_tokens, request.max_new_tokens)
        generation = dict(config.generation)
        if "min_new_tokens" in generation:
            generation["min_new_tokens"] = min(generation["min_new_tokens"], cap)
        config = dataclasses.replace(config, max_new_tokens=cap, generation=generation)
    with engine.try_admit(1) as permit:
        job = Job(response=request.response, where=here, prompt=request.prompt,
                  messages=[m.model_dump() for m in request.messages] if request.messages is not None else None,
                  image_specs=request.images, truncate=request.truncate)
        item = await engine.run_in_pool(ctx.scorer.load_item, job)
        prompt_ids, _, _ = await engine.run_in_pool(_evaluator_prompt, model, config, item)
        stream = TokenStream(model.decode_text, asyncio.get_running_loop(), deadline=deadline)
        future = engine.run_exclusive(generate_critique, model, item, config, streamer=stream)
        future.add_done_callback(lambda _: stream.close())
        try:
            async for text in stream:
                yield CritiqueChunk(delta=text)
            critique_text = await asyncio.wrap_future(future)
        except BaseException:  # the reader left (GeneratorExit / CancelledError) or generation failed
            stream.cancel()
            future.cancel()
            raise
        encoded = await engine.run_in_pool(model.encode, scored_item(config, item, critique_text))
        result = await engine.score(permit, [encoded], deadline=deadline)
    usage = CritiqueUsage(
        prompt_tokens=len(prompt_ids), completion_tokens=stream.tokens, total_tokens=len(prompt_ids) + stream.tokens
    )
    yield CritiqueChunk(
        done=True, critique=critique_text, reward=result.outputs[0].reward, model=selection.name, usage=usage
    )


async def critique(
    ctx: ServingContext, request: CritiqueRequest, *, deadline: float | None = None
) -> CritiqueResponse:
    final = None
    async for chunk in critique_stream(ctx, request, deadline=deadline):
        final = chunk
    assert final is not None and final.done
    return CritiqueResponse(critique=final.critique or "", reward=final.reward, model=final.model, usage=final.usage)


def _evaluator_prompt(model, config: CritiqueConfig, item: ScoreItem):
    """Encode the evaluator prompt once up front, so bad input fails before any text is streamed."""
    try:
        encoded = model.encode_prompt(scored_item(config, item, critique=""))
    except InvalidInput:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"item could not be encoded: {exc}", param=None, code="invalid_item") from None
    n, limit = len(encoded[0]), model.max_length
    if n + 2 > limit and not item.truncate:  # room for at least one critique token and the end of turn
        question = item.prompt if item.prompt is not None else "".join(
            m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
            for m in item.messages or [])
        asked = "prompt" if item.prompt is not None else "messages"
        longer = "response" if len(item.response) >= len(question) else asked
        raise InvalidInput(
            f"the evaluator prompt (question + response + template) is {n} tokens, over this model's limit of "
            f"{limit} with room for a critique; shorten it or set 'truncate': true",
            param=longer,
            code="too_long",
        )
    return encoded


__all__ = [
    "CritiqueChunk", "CritiqueRequest", "CritiqueResponse", "CritiqueUsage", "can_critique", "critique",
    "critique_stream",
]
