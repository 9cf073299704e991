"""Wire types of the score API (pydantic v2). The OpenAPI docs at /docs are generated from these.

Every model forbids unknown fields, so a typo (``"respones"``) is a 422 naming the field instead
of a silently ignored value. Limits that depend on configuration (items per request, images
per item) are checked by the service, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from rmserve.errors import FieldMessage, InvalidInput

ReturnField = Literal["reward", "attributes", "safety"]
VerifierName = Literal["exact_match", "numeric_match", "choice_letter", "boxed"]
SafetyAction = Literal["none", "flag", "penalize", "replace", "reject"]


class ImageRef(BaseModel):
    """A reference to an image the server already holds, by the sha256 of its encoded bytes."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Hex sha256 of the image file's bytes, as returned by an earlier upload or inline send.",
    )


def _image_kind(value: Any) -> str:
    if isinstance(value, bytes):
        return "bytes"
    return "ref" if isinstance(value, dict | ImageRef) else "data"


# Tags name the union members in validation error paths; the REST layer strips them again
# (``items.0.images.1.data`` -> ``items.0.images.1``), see ``UNION_TAGS``. ``bytes`` is how gRPC's
# ``Image.data`` arrives (server/rpc/codec.py): never from JSON, so it is not in the REST schema.
ImageInput = Annotated[
    Annotated[str, Tag("data")] | Annotated[ImageRef, Tag("ref")] | Annotated[SkipJsonSchema[bytes], Tag("bytes")],
    Discriminator(_image_kind),
]
# ``str | list[str]`` unions (compat ``input``) tag their members with type names: strip those too.
UNION_TAGS = frozenset({"data", "ref", "bytes", "str", "int", "float", "bool", "parts", "text_part", "image_url_part",
                        "image_part", "video_url_part", "video_part"})


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="The part's kind.")
    text: str = Field(description="Text, placed where the part sits.")


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="`data:image/...;base64,...` (raw base64 also accepted; http(s) with "
                     "--allow-image-urls).")
    detail: Literal["auto", "low", "high"] | None = Field(
        default=None, description="Accepted for OpenAI compatibility; the model's own processor sets the resolution.")


class ImageUrlPart(BaseModel):
    """OpenAI's image part."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"] = Field(description="The part's kind.")
    image_url: ImageUrl = Field(description="The image.")


class ImagePart(BaseModel):
    """An image the server already holds (uploaded with POST /v1/images or sent inline before), by sha256."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image"] = Field(description="The part's kind.")
    image: ImageInput = Field(description='The image: `{"sha256": ...}` of one the server holds, or a data URL.')


class VideoUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # bytes: how gRPC's Video.data arrives (server/rpc/codec.py), never from JSON.
    url: str | SkipJsonSchema[bytes] = Field(description="`data:video/mp4;base64,...`.")
    fps: float | None = Field(default=None, gt=0, le=120, description="Frames to sample per second of video "
                              "(default 2); at most the server's --max-video-frames are kept.")
    max_frames: int | None = Field(default=None, ge=1, description="Most frames to keep (capped by the server's "
                                   "--max-video-frames).")


class VideoUrlPart(BaseModel):
    """A video file (MP4), decoded and sampled by the server."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["video_url"] = Field(description="The part's kind.")
    video_url: VideoUrl = Field(description="The video and how to sample it.")


class VideoFramesPart(BaseModel):
    """A video given as frames the client sampled itself (each an image as in `images`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["video"] = Field(description="The part's kind.")
    frames: list[ImageInput] = Field(min_length=1, description="The frames, in time order, all one size.")
    fps: float = Field(default=2.0, gt=0, le=120, description="Rate of the given frames (Qwen2.5-VL spaces its "
                       "temporal positions by it).")


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"{kind}_part" if kind in PART_TYPES else None


PART_TYPES = ("text", "image_url", "image", "video_url", "video")
# Tagged ``<type>_part`` so validation paths can drop the tag (UNION_TAGS) without dropping real field names.
ContentPart = Annotated[
    Annotated[TextPart, Tag("text_part")]
    | Annotated[ImageUrlPart, Tag("image_url_part")]
    | Annotated[ImagePart, Tag("image_part")]
    | Annotated[VideoUrlPart, Tag("video_url_part")]
    | Annotated[VideoFramesPart, Tag("video_part")],
    Discriminator(_part_kind, custom_error_type="invalid_part",
                  custom_error_message=f"part type must be one of {', '.join(PART_TYPES)}"),
]


def _content_kind(value: Any) -> str:
    return "str" if isinstance(value, str) else "parts"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Who said it.")
    content: Annotated[
        Annotated[str, Tag("str")] | Annotated[list[ContentPart], Tag("parts")], Discriminator(_content_kind)
    ] = Field(
        description="The turn's text, or a list of OpenAI-style content parts: `text`, `image_url`, "
        "`image` ({sha256}), `video_url` (data:video/mp4), `video` (frames). Each image or video sits where its "
        "part sits, in any turn the model's chat template renders."
    )
    name: str | None = Field(default=None, description="Passed to the chat template as it is (e.g. a tool's name).")
    tool_call_id: str | None = Field(default=None, description="Passed to the chat template as it is.")

    @field_validator("content")
    @classmethod
    def _parts_not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("content parts must not be empty")
        return value


class Conversation(BaseModel):
    """The prompt side of an item: a prompt or chat turns, and images. Shared by every endpoint."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None, description="The user prompt. Give this or `messages`, not both."
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        description="Chat turns (system, user, assistant, tool) not ending with an assistant turn; the response "
        "is scored as the reply (on /v1/score a final assistant turn may be the response itself). Give this or "
        "`prompt`, not both. Images and videos go where their content parts sit; top-level `images` go into "
        "the first user turn.",
    )
    images: list[ImageInput] = Field(
        default_factory=list,
        description="Images as `data:image/png;base64,...` URLs (raw base64 also accepted) or "
        '`{"sha256": ...}` references to images the server already holds (uploaded with POST /v1/images '
        "or sent inline before).",
    )
    truncate: bool = Field(
        default=False,
        description="If the conversation is longer than the model's limit: false -> error, "
        "true -> drop the oldest prompt tokens.",
    )

    @model_validator(mode="after")
    def _prompt_xor_messages(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        return self

    def _check_not_ending_with_reply(self):
        if self.messages is not None and self.messages[-1].role == "assistant":
            raise ValueError("`messages` must not end with an assistant turn when a response is given (the "
                             "response is scored as the reply)")

    # /v1/score items may leave `response` out and end with the reply itself (ScoreItemIn._final_reply).
    takes_final_reply: ClassVar[bool] = False

    @model_validator(mode="after")
    def _reply_comes_last(self):
        if not self.takes_final_reply:
            self._check_not_ending_with_reply()
        return self


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("response must not be empty")
    return value


class ScoreItemIn(Conversation):
    """One conversation and the response to score."""

    takes_final_reply: ClassVar[bool] = True

    response: str = Field(
        default=None,  # type: ignore[assignment]  # filled from the final assistant turn (_final_reply)
        description="The response to score. May be empty or only whitespace (a policy can produce that): the "
        "model then scores the empty assistant turn. Without it, `messages` must end with an assistant turn of "
        "text only: that reply is the response.",
    )
    # Not part of the contract any more: the engine finds items that share a prompt exactly (prompt token ids +
    # image hashes, EncodedItem.prefix_key), which a declared id cannot improve on, and replicas route on the
    # x-rmserve-group header. Still accepted (never read) so that older clients sending it get no 422.
    group: str | None = Field(
        default=None,
        max_length=256,
        deprecated=True,
        description="Deprecated, ignored: accepted so that older clients keep working. Items that share a "
        "prompt and images are found from their content (prefix sharing needs no id); to keep a GRPO group on "
        "one replica, send its id in the `x-rmserve-group` header (rmserve-client does this from `group`).",
    )
    ground_truth: str | None = Field(
        default=None,
        description="Reference answer for the request's `verifier` (hybrid reward: 1 if the response's answer "
        "matches, else sigmoid(model reward)). Needs `verifier`.",
    )

    @model_validator(mode="after")
    def _final_reply(self):
        """Conversations as policies log them end with the reply: it is the scored response."""
        if self.response is not None:
            self._check_not_ending_with_reply()
            return self
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant":
            raise ValueError("give `response`, or `messages` ending with the assistant reply to score")
        content = last.content
        if not isinstance(content, str):
            if any(p.type != "text" for p in content):
                raise ValueError("the final assistant reply (the scored response) must be text only")
            content = "".join(p.text for p in content)
        self.response = content
        self.messages = self.messages[:-1]
        if not self.messages:
            raise ValueError("`messages` needs a turn before the assistant reply it scores")
        return self


class VerifierSpec(BaseModel):
    """A rule-based answer check (rmserve.rewards.verifiers)."""

    model_config = ConfigDict(extra="forbid")

    name: VerifierName = Field(
        description="exact_match (normalised final answer), numeric_match (last number, within tolerance), "
        "choice_letter (option A-E), boxed (last \\boxed{...})."
    )
    tolerance: float = Field(
        default=1e-6, ge=0, description="numeric_match / boxed: absolute or relative tolerance."
    )


class VotingSpec(BaseModel):
    """Generative judges: k sampled judgments instead of one greedy judgment (per item, per order)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(ge=1, description="Sampled judgments per item (and per order for pairwise judges); at most the "
                   "server's --max-judge-votes.")
    aggregate: Literal["mean", "majority"] = Field(
        default="mean", description="mean: the mean of the votes' rewards; majority: the most frequent answer's "
        "reward (a tie: the mean of the tied answers' rewards).")
    seed: int = Field(default=0, ge=0, lt=2**63, description="Vote j is sampled from a generator seeded with "
                      "(seed, j): the same seed gives the same judgments.")
    temperature: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False, description="Sampling temperature.")


class JudgmentOut(BaseModel):
    """One judgment a generative judge wrote (`return_judgment: true`)."""

    text: str = Field(description="The generated judgment, up to and with the answer prefix (empty for a judge "
                      "that answers without reasoning).")
    answer: str = Field(description="The answer: the sampled choice (voting), else the most probable one, else the "
                        "one parsed from the text.")
    reward: float = Field(description="This judgment's reward: the pointwise score (expectation over the answer "
                          "tokens, or the parsed answer's value), or pairwise P(first shown is better).")
    source: Literal["probabilities", "parsed"] = Field(
        description="probabilities: read from the answer tokens at the answer position; parsed: from the text.")
    about: list[int] = Field(default_factory=list, description="Compare/rank: the responses it judged, in the order "
                             "shown (pairwise: [first, second]).")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    model: str | None = Field(default=None, description="Model name; optional (the server serves one model).")
    items: list[ScoreItemIn] = Field(
        min_length=1, description="Items to score; their outputs come back in the same order."
    )
    return_: list[ReturnField] = Field(
        default_factory=lambda: ["reward"],
        alias="return",
        min_length=1,
        description="Which outputs to return per item. `reward` always comes back; "
        "`attributes` and `safety` need the model's matching heads. Asking for `safety` also applies the "
        "server's safety policy to the reward (`raw_reward` keeps the model's own).",
    )
    verifier: VerifierSpec | None = Field(
        default=None,
        description='Hybrid reward: a verifier (`"numeric_match"` or `{"name", "tolerance"}`) checks each '
        "item's `ground_truth`; reward = 1 if it matches, else sigmoid(model reward) (also for items "
        "without a ground truth).",
    )
    on_reject: Literal["reward", "error"] = Field(
        default="reward",
        description="When the safety policy rejects an item: `reward` -> the item gets the rule's reward and "
        '`safety_action: "reject"`; `error` -> the whole request fails with 422 `safety_rejected`.',
    )
    voting: VotingSpec | None = Field(
        default=None, description="Generative judges: k sampled judgments per item instead of one greedy one.")
    return_judgment: bool = Field(
        default=False, description="Generative judges: return each item's judgments (text, answer, reward).")

    @field_validator("verifier", mode="before")
    @classmethod
    def _verifier_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ScoreItemOut(BaseModel):
    reward: float = Field(description="The scalar reward (higher is better).")
    attributes: dict[str, float] | None = Field(
        default=None, description="Per-attribute regressions, if requested (e.g. helpfulness)."
    )
    safety: dict[str, float] | None = Field(
        default=None, description="Per-hazard-category probabilities, if requested (e.g. S1, S10)."
    )
    raw_reward: float | None = Field(
        default=None,
        description="The model's own reward (ensemble-combined), when `reward` was changed from it by a "
        "verifier or the safety policy (present whenever either was applied).",
    )
    verified: bool | None = Field(
        default=None, description="With a verifier: whether the response matched `ground_truth`."
    )
    flagged: bool | None = Field(default=None, description="With the safety policy: any category over threshold.")
    flagged_categories: list[str] | None = Field(
        default=None, description="With the safety policy: the categories over their thresholds."
    )
    safety_action: SafetyAction | None = Field(
        default=None, description="With the safety policy: the action taken (the most severe flagged rule's)."
    )
    model_rewards: dict[str, float] | None = Field(
        default=None, description="For an ensemble: each member model's reward."
    )
    judgments: list[JudgmentOut] | None = Field(
        default=None, description="Generative judges with `return_judgment`: the judgments behind the reward.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens processed (prompt + response + image tokens), all items.")
    total_tokens: int = Field(description="Same as prompt_tokens: a reward model generates nothing.")
    items: int = Field(description="Items scored.")


class ScoreResponse(BaseModel):
    items: list[ScoreItemOut] = Field(description="One output per request item, in order.")
    model: str = Field(description="The model that scored them.")
    usage: Usage = Field(description="What the request cost.")


class ModelCard(BaseModel):
    id: str = Field(description="Model name.")
    object: Literal["model"] = Field(default="model", description="Always `model`.")
    family: str = Field(description="Backbone family, e.g. qwen2_5_vl.")
    heads: list[str] = Field(description="Output heads: reward, attributes, safety.")
    max_length: int = Field(description="Longest sequence (tokens) the model scores.")
    multimodal: bool = Field(description="Whether the model takes images.")
    untrained: bool = Field(description="True for the bundled untrained default model: its scores are noise.")
    device: str = Field(description="Where it runs.")
    dtype: str = Field(description="Weight precision.")
    attribute_names: list[str] = Field(description="Names of the attributes head's outputs.")
    safety_categories: list[str] = Field(description="Categories of the safety head's outputs.")
    default: bool = Field(default=False, description="Requests without `model` use this one.")
    critique: bool = Field(default=False, description="Whether /v1/critique can use it (MM-RLHF critique model).")
    judge: Literal["pointwise", "pairwise"] | None = Field(
        default=None, description="A generative judge's mode (its reward is read from generated judgments).")
    members: list[str] | None = Field(default=None, description="For the ensemble: its member models.")
    ensemble_method: str | None = Field(default=None, description="For the ensemble: mean or weighted_mean.")
    weights: list[float] | None = Field(default=None, description="For the ensemble: each member's weight.")


class ModelList(BaseModel):
    object: Literal["list"] = Field(default="list", description="Always `list`.")
    data: list[ModelCard] = Field(description="The models served.")


class ErrorBody(BaseModel):
    message: str = Field(description="What went wrong and, where possible, how to fix it.")
    type: str = Field(description="Error class, e.g. invalid_request_error, overloaded_error.")
    param: str | None = Field(
        default=None, description="Dotted path of the offending field, e.g. items.0.response."
    )
    code: str | None = Field(default=None, description="Machine-readable detail, e.g. image_too_large.")


class ErrorResponse(BaseModel):
    error: ErrorBody = Field(description="The one error shape every endpoint uses.")


# ── turning pydantic's errors into one InvalidInput (shared by REST, offline scoring, gRPC) ────


def loc_to_param(loc: Sequence[Any]) -> str | None:
    """``("body", "items", 0, "images", 1, "data")`` -> ``"items.0.images.1"``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts.pop(0)
        if where != "body" and parts:
            return str(parts[0])
    parts = [str(p) for p in parts if not (isinstance(p, str) and (p in UNION_TAGS or "[" in p))]
    return ".".join(parts) or None


def invalid_input_from_errors(errors: Sequence[dict[str, Any]]) -> InvalidInput:
    """The first validation error as an ``InvalidInput`` naming its field (with a count of the rest)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    param = loc_to_param(first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        position = first["loc"][-1] if first.get("loc") else "?"
        message, param, code = (
            f"request body is not valid JSON: {detail} (at character {position})",
            None,
            kind,
        )
    elif kind == "extra_forbidden":
        message, code = FieldMessage("unknown field '", "'", "unknown field"), "unknown_field"
    elif kind == "missing":
        param = param or "body"
        message = FieldMessage("missing required field '", "'", "request body is required")
        if param == "body":
            message = message.bare
        code = kind
    else:
        text = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        message, code = FieldMessage("", f": {text}", text), kind or None
    if len(errors) > 1:
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
        if isinstance(message, FieldMessage):
            message = FieldMessage(message.before, message.after + more, message.bare + more)
        else:
            message += more
    return InvalidInput(message, param=param, code=code)
