"""Compat endpoints with the exact shapes real RL frameworks send and read (docs/architecture.md, "Wire contracts").

OpenRLHF remote RM, ``POST /get_reward``::

    {"query": [str], "prompts": [str]?, "labels": [...]?}
    -> {"rewards": [float], "scores": [float], "extra_logs": {name: [float]}}

A ``labels[i]`` may carry the sample's images (api/labels.py): OpenRLHF sends no pixels, and a VLM
policy's query holds its processor's expanded image runs; every run, whatever its pad count, collapses
to one image slot per image before the split (``rmserve.models.rendered``), and the reward model's own
processor renders the label's images there. Placeholders without images are a 422 naming
``labels.N.images``. An empty response is a response (the empty assistant turn is scored).
``truncate`` defaults to true here: OpenRLHF turns any error into a missing reward.

vLLM-style (veRL's reward loop with a vLLM reward model), ``POST /classify`` and ``POST /pooling``, and
SGLang-style ``POST /v1/embeddings`` (veRL with an SGLang reward model reads ``data[-1].embedding[-1]``)::

    {"model", "input": str | [str], "use_activation" | "activation": bool}
    -> {"id", "object": "list", "created", "model", "data": [...], "usage"}

These clients send text, not conversations: an OpenRLHF ``query`` is the decoded prompt + response
token ids with special tokens kept (possibly with pad tokens around it); a veRL ``input`` is the
whole conversation rendered by the chat template, assistant turn included. The server splits such
text back into (templated prompt, response) and re-encodes it exactly as ``/v1/score`` would encode
the conversation (``ServedModel.encode_rendered``), so the reward equals direct scoring. The rule:

1. strip pad tokens from both ends of the query (and of the prompt);
2. if the prompt is given and the query starts with it, the response is the rest;
   otherwise the response starts after the **last** assistant-turn opener of the model's chat
   template (``<|im_start|>assistant\\n`` for ChatML; learned by rendering a probe conversation);
   neither -> 422 ``unsplittable_query`` naming the item;
3. the response's end-of-turn marker (the template's, e.g. ``<|im_end|>``, else the EOS token) and the
   whitespace after it are removed once; the model adds its own back when encoding. Whitespace inside
   the response is kept (it is part of what was generated).

With an ensemble, the text is split with the first member's chat template and re-encoded by every
member: the text was rendered with one template, so the members are assumed to share it.

Unknown request fields are ignored, not refused, as vLLM and OpenRLHF's own servers do: these
clients (and their forks) add fields such as ``add_special_tokens``, ``priority`` or ``datasources``.

OpenRLHF: ``scores`` equal ``rewards``; ``extra_logs`` carries ``raw_reward`` when the reward was
composed (safety policy with ``safety_apply: always``, or the ``compat_verifier`` on ``labels``),
``verified`` (1/0) with a verifier, ``safety_flagged`` (1/0) with the policy, and each member's
reward (``reward/<model>``) for an ensemble.

vLLM /classify: ``probs = [sigmoid(reward)]`` with activation on (vLLM's default), ``[reward]``
with ``use_activation`` (or the older ``activation``) false; ``label`` is ``LABEL_0`` and
``num_classes`` 1, as vLLM reports a ``num_labels=1`` reward model.

vLLM /pooling: ``data`` is the reward as a one-element vector ``[reward]`` (``use_activation: true``
-> ``[sigmoid(reward)]``); ``"task": "embed"`` returns the pooled final hidden state instead (the
vector the heads read; L2-normalised unless ``use_activation`` is false, vLLM's embed default),
from a single model (not an ensemble).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rmserve.api.labels import Label, parse_label
from rmserve.api.models import Selection
from rmserve.api.pipeline import RequestT, ResponseT, ScoringEndpoint
from rmserve.api.scoring import Job, Scored
from rmserve.errors import InvalidInput
from rmserve.models.rendered import collapse_image_slots
from rmserve.rewards import sigmoid

# ── splitting decoded text back into (prompt, response) ────────────────────────────────────────


def _strip_repeated(text: str, token: str | None, *, left: bool) -> str:
    if not token:
        return text
    if left:
        while text.startswith(token):
            text = text[len(token) :]
    else:
        while text.endswith(token):
            text = text[: -len(token)]
    return text


def split_conversation(
    query: str,
    prompt: str | None = None,
    *,
    assistant_start: str | None = None,
    assistant_end: str | None = None,
    response_prefix: str = "",
    pad_token: str | None = None,
    eos_token: str | None = None,
) -> tuple[str, str] | None:
    """``(templated prompt, response)`` of decoded prompt+response text (rule in the module doc); None if
    the response cannot be found."""
    text = _strip_repeated(_strip_repeated(query, pad_token, left=True), pad_token, left=False)
    prompt_text = None
    if prompt is not None:
        prompt = _strip_repeated(prompt, pad_token, left=True)
        if prompt and text.startswith(prompt):
            prompt_text, rest = prompt, text[len(prompt) :]
    if prompt_text is None:
        if not assistant_start or assistant_start not in text:
            return None
        cut = text.rindex(assistant_start) + len(assistant_start)
        prompt_text, rest = text[:cut], text[cut:]
    if response_prefix and rest.startswith(response_prefix):
        rest = rest[len(response_prefix) :]
    for marker in dict.fromkeys(m for m in (assistant_end, eos_token) if m):
        trimmed = rest.rstrip()
        if trimmed.endswith(marker):
            rest = trimmed[: -len(marker)]
            break
    return prompt_text, rest


def _splitter(selection: Selection):
    model = selection.primary.model
    markers = model.turn_markers()
    syntax = model.prompt_syntax()
    tokenizer = model.tokenizer
    options = {
        "assistant_start": markers.assistant_start if markers else None,
        "assistant_end": markers.assistant_end if markers else None,
        "response_prefix": markers.response_prefix if markers else "",
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
    }

    def split(query: str, prompt: str | None) -> tuple[str, str] | None:
        # A VLM policy's query holds its processor's expanded image runs, its prompt one slot per image:
        # collapse both so the prompt is a prefix of the query again.
        if syntax is not None and syntax.image_token:
            query = collapse_image_slots(query, syntax)[0]
            prompt = collapse_image_slots(prompt, syntax)[0] if prompt is not None else None
        return split_conversation(query, prompt, **options)

    return split


def _text_jobs(selection: Selection, texts: list[str], prompts: list[str] | None, field: str, *, truncate=False,
               labels: list[Label] | None = None) -> list[Job]:
    split = _splitter(selection)
    jobs = []
    for i, text in enumerate(texts):
        images_at = ("labels", i, "images") if labels is not None else (field, i)

        def where(loc, i=i, images_at=images_at):
            # image errors point where the images belong (with their index); anything else at the whole text
            return (*images_at, *loc[1:]) if loc and loc[0] == "images" else (field, i)

        parts = split(text, prompts[i] if prompts is not None else None)
        if parts is None:
            raise InvalidInput(
                f"cannot find the response in {field}.{i}: no assistant turn of this model's chat template "
                "(send the conversation rendered with the model's chat template"
                + (", and its prompt in `prompts`" if field == "query" else "")
                + ")",
                param=f"{field}.{i}",
                code="unsplittable_query",
            )
        jobs.append(Job(response=parts[1], where=where, prompt=parts[0], rendered=True, truncate=truncate,
                        image_specs=labels[i].images if labels is not None else ()))
    return jobs


# ── OpenRLHF ───────────────────────────────────────────────────────────────────────────────────


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(
        min_length=1,
        description="Decoded prompt + response token ids, special tokens kept (OpenRLHF's `queries`).",
    )
    prompts: list[str] | None = Field(
        default=None, description="The decoded prompts, same length: query = prompt + response."
    )
    labels: list[Any] | None = Field(
        default=None,
        description="Per-query labels: a ground truth for the server's `compat_verifier`, or a JSON object (or a "
        'string holding one) `{"images": [data URL | {"sha256": ...}], "ground_truth": ...}` (api/labels.py).',
    )
    truncate: bool = Field(
        default=True,
        description="Drop the oldest prompt tokens of a query longer than the model's max_length instead of "
        "refusing it (OpenRLHF turns a refusal into a missing reward).",
    )

    def parsed_labels(self) -> list[Label]:
        return [parse_label(label, f"labels.{i}") for i, label in enumerate(self.labels or [None] * len(self.query))]


class GetRewardResponse(BaseModel):
    rewards: list[float] = Field(description="One reward per query.")
    scores: list[float] = Field(description="Same as rewards (OpenRLHF uses them for dynamic filtering).")
    extra_logs: dict[str, list[float]] = Field(description="Per-query values OpenRLHF logs, by name.")


class GetRewardEndpoint(ScoringEndpoint[GetRewardRequest, GetRewardResponse]):
    """OpenRLHF's remote reward model protocol (always the default model: the request names none)."""

    def select(self, request: GetRewardRequest) -> Selection:
        return self.ctx.models.default

    def validate(self, request: GetRewardRequest, selection: Selection) -> None:
        n = len(request.query)
        for name in ("prompts", "labels"):
            given = getattr(request, name)
            if given is not None and len(given) != n:
                raise InvalidInput(
                    f"`{name}` has {len(given)} entries for {n} queries; send one per query",
                    param=name,
                    code="length_mismatch",
                )
        self.ctx.check_items(n, "query")
        for i, label in enumerate(request.parsed_labels()):
            self.ctx.check_images(len(label.images), selection, ("labels", i, "images"))

    def jobs(self, request: GetRewardRequest, selection: Selection) -> list[Job]:
        return _text_jobs(selection, request.query, request.prompts, "query", truncate=request.truncate,
                          labels=request.parsed_labels())

    def build(self, request: GetRewardRequest, selection: Selection, scored: Scored) -> GetRewardResponse:
        n = len(request.query)
        compat_verifier = self.ctx.compat_verifier
        verifier = (compat_verifier, 1e-6) if compat_verifier and request.labels is not None else None
        apply_safety = self.ctx.safety_applies(selection, None)
        labels = request.parsed_labels()  # "" and null are no label (OpenRLHF sends "" when a dataset has none)
        rewards, logs = [], {}
        for i, output in enumerate(scored.outputs):
            composed = self.ctx.compose(
                output,
                apply_safety=apply_safety,
                response="" if verifier is None else _response_of(request, i, selection),
                verifier=verifier,  # items without a label get sigmoid(reward), like the others' scale
                ground_truth=labels[i].ground_truth,
            )
            rewards.append(composed.reward)
            if composed.changed_by:
                logs.setdefault("raw_reward", []).append(composed.raw_reward)
            if verifier is not None:
                logs.setdefault("verified", []).append(1.0 if composed.verified else 0.0)
            if composed.decision is not None:
                logs.setdefault("safety_flagged", []).append(1.0 if composed.decision.flagged else 0.0)
            for name, value in (scored.model_rewards[i] if scored.model_rewards else {}).items():
                logs.setdefault(f"reward/{name}", []).append(value)
        logs = {k: v for k, v in logs.items() if len(v) == n}  # only complete columns
        return GetRewardResponse(rewards=rewards, scores=list(rewards), extra_logs=logs)


def _response_of(request: GetRewardRequest, i: int, selection: Selection) -> str:
    parts = _splitter(selection)(request.query[i], request.prompts[i] if request.prompts else None)
    return parts[1] if parts else request.query[i]


# ── vLLM-style /classify and /pooling ──────────────────────────────────────────────────────────


class _VllmRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="Served model name (or its directory); default model if unset.")
    input: str | list[str] = Field(
        description="Whole conversation(s) rendered with the model's chat template, assistant turn included."
    )
    use_activation: bool | None = Field(default=None, description="Apply the activation (see the endpoint).")
    activation: bool | None = Field(default=None, description="Older name of `use_activation`.")
    truncate_prompt_tokens: int | None = Field(
        default=None, ge=-1, description="Any value: drop the oldest prompt tokens instead of refusing a long input."
    )
    add_special_tokens: bool | None = Field(
        default=None, description="Accepted and ignored: the text is re-encoded exactly as the model's own template."
    )

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise InvalidInput("`input` is an empty list", param="input", code="too_short")
        return texts

    def activation_on(self, default: bool) -> bool:
        for value in (self.use_activation, self.activation):
            if value is not None:
                return value
        return default


class ClassifyRequest(_VllmRequest):
    """vLLM's classification request (unknown fields are ignored)."""


class ClassificationData(BaseModel):
    index: int = Field(description="Position of the input.")
    label: str | None = Field(description="`LABEL_0`: a reward model has one output.")
    probs: list[float] = Field(description="[sigmoid(reward)] with activation on, [reward] with it off.")
    num_classes: int = Field(description="Always 1.")


class UsageInfo(BaseModel):
    prompt_tokens: int = Field(description="Tokens scored.")
    total_tokens: int = Field(description="Same as prompt_tokens.")
    completion_tokens: int = Field(default=0, description="Always 0.")
    prompt_tokens_details: None = Field(default=None, description="Always null.")


class ClassifyResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"classify-{uuid.uuid4().hex}", description="Request id.")
    object: str = Field(default="list", description="Always `list`.")
    created: int = Field(default_factory=lambda: int(time.time()), description="Unix time.")
    model: str = Field(description="The model (or ensemble) that scored.")
    data: list[ClassificationData] = Field(description="One entry per input.")
    usage: UsageInfo = Field(description="Token counts.")


class PoolingRequest(_VllmRequest):
    """vLLM's pooling request (unknown fields are ignored)."""

    task: Literal["reward", "classify", "embed"] | None = Field(
        default=None,
        description="`reward`/`classify` (default): the reward as a one-element vector; `embed`: the pooled "
        "final hidden state the heads read.",
    )
    encoding_format: Literal["float"] = Field(default="float", description="Only `float`.")


class PoolingData(BaseModel):
    index: int = Field(description="Position of the input.")
    object: str = Field(default="pooling", description="Always `pooling`.")
    data: list[float] = Field(description="[reward] (or the hidden state for task=embed).")


class PoolingResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"pool-{uuid.uuid4().hex}", description="Request id.")
    object: str = Field(default="list", description="Always `list`.")
    created: int = Field(default_factory=lambda: int(time.time()), description="Unix time.")
    model: str = Field(description="The model (or ensemble) that answered.")
    data: list[PoolingData] = Field(description="One entry per input.")
    usage: UsageInfo = Field(description="Token counts.")


class _TextsEndpoint(ScoringEndpoint[RequestT, ResponseT]):
    """vLLM-shaped requests: ``input`` is whole conversations rendered with the chat template."""

    def validate(self, request, selection: Selection) -> None:
        self.ctx.check_items(len(request.texts()), "input")

    def jobs(self, request, selection: Selection) -> list[Job]:
        truncate = request.truncate_prompt_tokens is not None
        return _text_jobs(selection, request.texts(), None, "input", truncate=truncate)

    def rewards(self, selection: Selection, scored: Scored) -> list[float]:
        apply_safety = self.ctx.safety_applies(selection, None)
        return [self.ctx.compose(o, apply_safety=apply_safety).reward for o in scored.outputs]

    @staticmethod
    def usage(tokens: int) -> UsageInfo:
        return UsageInfo(prompt_tokens=tokens, total_tokens=tokens)


class ClassifyEndpoint(_TextsEndpoint[ClassifyRequest, ClassifyResponse]):
    """vLLM's /classify shape (veRL's reward loop)."""

    def build(self, request: ClassifyRequest, selection: Selection, scored: Scored) -> ClassifyResponse:
        on = request.activation_on(default=True)
        data = [
            ClassificationData(index=i, label="LABEL_0", probs=[sigmoid(r) if on else r], num_classes=1)
            for i, r in enumerate(self.rewards(selection, scored))
        ]
        return ClassifyResponse(model=selection.name, data=data, usage=self.usage(scored.num_tokens))


class PoolingEndpoint(_TextsEndpoint[PoolingRequest, PoolingResponse]):
    """vLLM's /pooling shape: the reward as a one-element vector, or (task=embed) the pooled hidden state."""

    async def __call__(self, request: PoolingRequest, *, deadline: float | None = None) -> PoolingResponse:
        if request.task == "embed":
            return await self.embed(request)
        return await super().__call__(request, deadline=deadline)

    def build(self, request: PoolingRequest, selection: Selection, scored: Scored) -> PoolingResponse:
        on = request.activation_on(default=False)
        rewards = self.rewards(selection, scored)
        data = [PoolingData(index=i, data=[sigmoid(r) if on else r]) for i, r in enumerate(rewards)]
        return PoolingResponse(model=selection.name, data=data, usage=self.usage(scored.num_tokens))

    async def embed(self, request: PoolingRequest) -> PoolingResponse:
        """Not a scoring run: the hidden states come from the model on its worker thread (run_exclusive)."""
        selection = self.select(request)
        if selection.is_ensemble:
            raise InvalidInput(
                f"task=embed needs one model that exposes its hidden states; {selection.name!r} does not "
                f"(name one of {', '.join(map(repr, self.ctx.models.names))})",
                param="task",
                code="unsupported_task",
            )
        self.validate(request, selection)
        engine, model = selection.primary.engine, selection.primary.model
        jobs = self.jobs(request, selection)
        with engine.try_admit(len(jobs)):
            (encoded,) = await self.ctx.scorer.preprocess(selection, jobs)
            vectors = await asyncio.wrap_future(engine.run_exclusive(_pooled_states, model, encoded))
        if request.activation_on(default=True):
            vectors = [_l2_normalize(v) for v in vectors]
        return PoolingResponse(
            model=selection.name,
            data=[PoolingData(index=i, data=v) for i, v in enumerate(vectors)],
            usage=self.usage(sum(e.num_tokens for e in encoded)),
        )


class EmbeddingsRequest(_VllmRequest):
    """OpenAI/SGLang embeddings request, as veRL's reward loop sends it for an SGLang reward model
    (``{"model", "input"}``; the reward comes back raw, no activation)."""


class EmbeddingData(BaseModel):
    index: int = Field(description="Position of the input.")
    object: str = Field(default="embedding", description="Always `embedding`.")
    embedding: list[float] = Field(description="[reward]: the reward model's score as a one-element vector.")


class EmbeddingsResponse(BaseModel):
    object: str = Field(default="list", description="Always `list`.")
    model: str = Field(description="The model (or ensemble) that scored.")
    data: list[EmbeddingData] = Field(description="One entry per input.")
    usage: UsageInfo = Field(description="Token counts.")


class EmbeddingsEndpoint(_TextsEndpoint[EmbeddingsRequest, EmbeddingsResponse]):
    """SGLang serves a reward model's score as a one-element embedding; veRL reads ``data[-1].embedding[-1]``."""

    def build(self, request: EmbeddingsRequest, selection: Selection, scored: Scored) -> EmbeddingsResponse:
        data = [EmbeddingData(index=i, embedding=[r]) for i, r in enumerate(self.rewards(selection, scored))]
        return EmbeddingsResponse(model=selection.name, data=data, usage=self.usage(scored.num_tokens))


def _pooled_states(model, encoded) -> list[list[float]]:
    import torch

    with torch.inference_mode():
        return model.pooled_hidden_items(encoded).float().cpu().tolist()  # (B, H)


def _l2_normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


__all__ = [
    "ClassificationData", "ClassifyRequest", "ClassifyResponse", "EmbeddingData", "EmbeddingsEndpoint",
    "EmbeddingsRequest", "EmbeddingsResponse", "GetRewardRequest", "GetRewardResponse",
    "ClassifyEndpoint", "GetRewardEndpoint", "PoolingData", "PoolingEndpoint", "PoolingRequest", "PoolingResponse",
    "UsageInfo", "split_conversation",
]
