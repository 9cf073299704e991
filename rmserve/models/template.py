"""Render (prompt | messages, images, response) into a prompt text and a response text.

The split matters: the prompt part (with images) is tokenized by the processor, the response
part by the bare tokenizer, and the two id lists are concatenated. Training and serving both
go through here, so they see identical ids, and every response to one prompt shares the
prompt's ids exactly (what prefix sharing needs).
"""

from __future__ import annotations

from ..errors import InvalidInput
from .types import ScoreItem, TurnMarkers

ROLES = ("system", "user", "assistant", "tool")
MEDIA_PARTS = ("image", "video")
TEMPLATE_FIELDS = ("name", "tool_call_id")  # passed through to the chat template (tool turns use them)


def _content(i: int, content) -> str | list[dict]:
    """A turn's content as the chat template takes it: a string, or parts with media placeholders.

    Text-only part lists become one string (texts joined as the Qwen-VL templates join them: with
    nothing between), so text-only families' templates, which expect strings, render them too.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise InvalidInput("content must be a string or a non-empty list of parts", param=f"messages.{i}.content")
    parts: list[dict] = []
    for k, part in enumerate(content):
        where = f"messages.{i}.content.{k}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidInput("a text part needs a string 'text'", param=f"{where}.text")
            parts.append({"type": "text", "text": text})
        elif kind in MEDIA_PARTS:
            parts.append({"type": kind})
        else:
            raise InvalidInput("part type must be one of text, image, video", param=f"{where}.type")
    if not any(p["type"] in MEDIA_PARTS for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def media_parts(messages: list[dict], kind: str) -> list[str]:
    """Dotted paths (``messages.M.content.K``) of the ``kind`` parts, in conversation order."""
    return [f"messages.{i}.content.{k}" for i, m in enumerate(messages) if isinstance(m.get("content"), list)
            for k, p in enumerate(m["content"]) if isinstance(p, dict) and p.get("type") == kind]


def build_messages(item: ScoreItem) -> list[dict]:
    """Chat messages for the prompt, each image and video placeholder where its part sits.

    Without image parts, ``item.images`` go into the first user turn, before its text (the
    original top-level ``images`` form, kept exactly as it was).
    """
    if (item.prompt is None) == (item.messages is None):
        raise InvalidInput("give exactly one of 'prompt' or 'messages'", param="prompt")
    if item.prompt is not None:
        messages: list[dict] = [{"role": "user", "content": item.prompt}]
    else:
        if not item.messages:
            raise InvalidInput("'messages' must not be empty", param="messages")
        messages = []
        for i, m in enumerate(item.messages):
            role = m.get("role")
            if role not in ROLES:
                raise InvalidInput(f"role must be one of {ROLES}", param=f"messages.{i}.role")
            turn = {"role": role, "content": _content(i, m.get("content"))}
            turn.update({k: m[k] for k in TEMPLATE_FIELDS if m.get(k) is not None})
            messages.append(turn)
        if messages[-1]["role"] == "assistant":
            raise InvalidInput("the last message must not be an assistant turn: the response is scored as the "
                               "reply to the conversation", param=f"messages.{len(messages) - 1}.role")
    video_parts = media_parts(messages, "video")
    if len(video_parts) != len(item.videos):
        raise InvalidInput(f"{len(video_parts)} video parts but {len(item.videos)} videos", param="messages")
    image_parts = media_parts(messages, "image")
    if image_parts:
        if len(image_parts) != len(item.images):
            raise InvalidInput(f"{len(image_parts)} image parts but {len(item.images)} images", param="messages")
    elif item.images:
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first_user is None:
            raise InvalidInput("images need a user turn to go into", param="messages")
        content = messages[first_user]["content"]
        text_parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        parts = [{"type": "image"} for _ in item.images] + text_parts
        messages[first_user] = {**messages[first_user], "content": parts}
    return messages


_ROLE_PROBE = "RMSERVE_ROLE_PROBE"
_ROLE_CONTEXT = {"system": [], "user": [], "assistant": [{"role": "user", "content": "q"}],
                 "tool": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
_role_cache: dict[tuple[int, str, str], bool] = {}


def _renders_role(tokenizer, role: str) -> bool:
    """Whether the template shows a ``role`` turn's text at all (some drop roles they do not know)."""
    key = (id(tokenizer), tokenizer.chat_template, role)
    if key not in _role_cache:
        probe = _ROLE_CONTEXT[role] + [{"role": role, "content": _ROLE_PROBE}]
        if role == "system":
            probe.append({"role": "user", "content": "q"})
        try:
            _role_cache[key] = _ROLE_PROBE in tokenizer.apply_chat_template(probe, tokenize=False)
        except Exception:  # a template that refuses the role outright
            _role_cache[key] = False
    return _role_cache[key]


def _apply_template(tokenizer, messages: list[dict], **kwargs) -> str:
    """The template's rendering; a template error becomes a 422 naming the first message it cannot take."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2's TemplateError or raise_exception(): the conversation's shape
        bad = len(messages) - 1
        for k in range(1, len(messages)):
            try:
                tokenizer.apply_chat_template(messages[:k], tokenize=False)
            except Exception:
                bad = k - 1
                break
        raise InvalidInput(f"the model's chat template cannot render this conversation at message {bad} "
                           f"(role {messages[bad]['role']!r}): {exc}", param=f"messages.{bad}.role",
                           code="unsupported_role") from None


def _check_roles(tokenizer, messages: list[dict]) -> None:
    for i, m in enumerate(messages):
        if not _renders_role(tokenizer, m["role"]):
            raise InvalidInput(f"the model's chat template does not render {m['role']!r} turns",
                               param=f"messages.{i}.role", code="unsupported_role")


def _plain(messages: list[dict]) -> str:
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = "".join(p.get("text", "") for p in content)
        out.append(content)
    return "\n".join(out) + "\n"


def render(tokenizer, item: ScoreItem, response: str | None = None) -> tuple[str, str, bool]:
    """Return ``(prompt_text, response_text, uses_chat_template)``.

    With a chat template, the response text is what the template adds for the assistant turn,
    with trailing whitespace removed so the last token is the end-of-turn token (the token
    whose hidden state is pooled).
    """
    messages = build_messages(item)
    response = item.response if response is None else response
    if getattr(tokenizer, "chat_template", None):
        if item.messages is not None:
            _check_roles(tokenizer, messages)
        prompt_text = _apply_template(tokenizer, messages, add_generation_prompt=True)
        full_text = _apply_template(tokenizer, messages + [{"role": "assistant", "content": response}])
        if not full_text.startswith(prompt_text):
            # Templates that rewrite earlier turns (e.g. strip reasoning) cannot be split; fall back to appending.
            return prompt_text, response, True
        return prompt_text, full_text[len(prompt_text):].rstrip(), True
    if item.videos:
        raise InvalidInput("this model has no chat template to place videos with", param=media_parts(messages,
                           "video")[0], code="videos_not_supported")
    eos = tokenizer.eos_token or ""
    return _plain(messages), response + eos, False


_SENTINEL = "RMSERVE_RESPONSE_SENTINEL"


def turn_markers(tokenizer) -> TurnMarkers | None:
    """The template's assistant-turn markers, or None without a chat template (or one that cannot be probed)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    probe = [{"role": "user", "content": "x"}]
    try:
        closed = tokenizer.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
        opened = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    except Exception:  # a template that needs other inputs: no markers, callers fall back
        return None
    if not (opened.startswith(closed) and full.startswith(opened) and _SENTINEL in full[len(opened):]):
        return None
    before, after = full[len(opened):].split(_SENTINEL, 1)
    return TurnMarkers(assistant_start=opened[len(closed):], response_prefix=before, assistant_end=after.rstrip())
