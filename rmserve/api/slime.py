"""slime's remote reward model, ``POST /slime/reward``.

slime (``slime/rollout/rm_hub/__init__.py``, ``remote_rm``) posts one sample per request to
``--rm-url`` when ``--rm-type remote_rm``::

    {"prompt": sample.prompt, "response": sample.response, "label": sample.label}

and uses the JSON answer as the reward, or ``answer[--reward-key]`` when that flag is set. So the
answer is ``{"reward": float, ...}`` and slime is run with ``--reward-key reward``.

- ``prompt``: with ``--apply-chat-template`` the policy's rendered text (ending with the generation
  prompt, one image slot per image); without it the dataset's text or its messages. Rendered text is
  scored as rendered (``RewardModel.encode`` detects the template's markers), plain text is templated.
- ``label``: a ground truth, or a JSON object with ``images`` and ``ground_truth`` (api/labels.py):
  slime sends no pixels, so images reach the reward model only through the label.
- ``truncate`` (default true): an over-long sample is cut, not refused (slime retries then raises).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rmserve.api.labels import parse_label
from rmserve.api.models import Selection
from rmserve.api.pipeline import ScoringEndpoint
from rmserve.api.scoring import Job, Scored
from rmserve.errors import InvalidInput, Loc


class SlimeRewardRequest(BaseModel):
    """slime's remote RM payload (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str | list[dict[str, Any]] = Field(
        description="The sample's prompt: text (rendered by the chat template or plain) or chat messages."
    )
    response: str = Field(description="The policy's response (may be empty).")
    label: Any = Field(default=None, description='Ground truth, or {"images": [...], "ground_truth": ...}.')
    truncate: bool = Field(default=True, description="Cut an over-long prompt instead of refusing the sample.")


class SlimeRewardResponse(BaseModel):
    reward: float = Field(description="The reward (read by slime with `--reward-key reward`).")
    raw_reward: float = Field(description="The model's reward before the verifier / safety policy.")
    verified: float | None = Field(default=None, description="With the server's compat_verifier: 1 or 0.")


def _messages(prompt: list[dict[str, Any]]) -> tuple[list[dict], int]:
    """Chat messages with text content, and the number of image blocks they had (their pixels come in
    the label)."""
    messages, images = [], 0
    for i, message in enumerate(prompt):
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for block in content:
                kind = block.get("type") if isinstance(block, dict) else None
                if kind == "text":
                    texts.append(block.get("text") or "")
                elif kind == "image":
                    images += 1
                else:
                    raise InvalidInput("content blocks must be text or image", param=f"prompt.{i}.content",
                                       code="invalid_content")
            content = "".join(texts)
        if not isinstance(content, str):
            raise InvalidInput("content must be a string or a list of blocks", param=f"prompt.{i}.content")
        messages.append({"role": message.get("role"), "content": content})
    return messages, images


def _where(loc: Loc) -> Loc:
    """An item-relative error location in this request's terms: images live in the label, messages are
    ``prompt``."""
    if loc and loc[0] == "images":
        return ("label", *loc)
    if loc and loc[0] == "messages":
        return ("prompt", *loc[1:])
    return loc or ("prompt",)


class SlimeRewardEndpoint(ScoringEndpoint[SlimeRewardRequest, SlimeRewardResponse]):
    """slime's remote reward model (always the default model: the request names none)."""

    def select(self, request: SlimeRewardRequest) -> Selection:
        return self.ctx.models.default

    def validate(self, request: SlimeRewardRequest, selection: Selection) -> None:
        label = parse_label(request.label, "label")
        self.ctx.check_images(len(label.images), selection, ("label", "images"))
        if not isinstance(request.prompt, str):
            _, blocks = _messages(request.prompt)
            if blocks != len(label.images):
                raise InvalidInput(
                    f"prompt has {blocks} image block(s) but the label carries {len(label.images)} image(s); "
                    'put the images in the label as {"images": [...]}',
                    param="label.images", code="missing_images" if not label.images else "image_count_mismatch")

    def jobs(self, request: SlimeRewardRequest, selection: Selection) -> list[Job]:
        label = parse_label(request.label, "label")
        job = Job(response=request.response, where=_where, image_specs=label.images, truncate=request.truncate)
        if isinstance(request.prompt, str):
            job.prompt = request.prompt
        else:
            job.messages, _ = _messages(request.prompt)
        return [job]

    def build(self, request: SlimeRewardRequest, selection: Selection, scored: Scored) -> SlimeRewardResponse:
        truth = parse_label(request.label, "label").ground_truth
        verifier = (self.ctx.compat_verifier, 1e-6) if self.ctx.compat_verifier and truth is not None else None
        composed = self.ctx.compose(scored.outputs[0], apply_safety=self.ctx.safety_applies(selection, None),
                                    response=request.response, verifier=verifier, ground_truth=truth)
        verified = None if composed.verified is None else float(composed.verified)
        return SlimeRewardResponse(reward=composed.reward, raw_reward=composed.raw_reward, verified=verified)


__all__ = ["SlimeRewardEndpoint", "SlimeRewardRequest", "SlimeRewardResponse"]
