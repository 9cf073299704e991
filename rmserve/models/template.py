"""Render (prompt | messages, images, response) into a prompt text and a response text.

The split matters: the prompt part (with images) is tokenized by the processor, the response
part by the bare tokenizer, and the two id lists are concatenated. Training and serving both
go through here, so they see identical ids, and every response to one prompt shares the
prompt's ids exactly (what prefix sharing needs).
"""

from __future__ import annotations

from ..errors import InvalidInput
from .types import ScoreItem, TurnMarkers

ROLES = ("system", "user", "assistant")


def build_messages(item: ScoreItem) -> list[dict]:
    """Chat messages for the prompt, images placed in the first user turn (before its text)."""
    if (item.prompt is None) == (item.messages is None):
        raise InvalidInput("give exactly one of 'prompt' or 'messages'", param="prompt")
    if item.prompt is not None:
        messages = [{"role": "user", "content": item.prompt}]
    else:
        if not item.messages:
            raise InvalidInput("'messages' must not be empty", param="messages")
        messages = []
        for i, m in enumerate(item.messages):
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise InvalidInput(f"role must be one of {ROLES}", param=f"messages.{i}.role")
            if not isinstance(content, str):
                raise InvalidInput("content must be a string", param=f"messages.{i}.content")
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            raise InvalidInput("the last message must be a user turn (the response is scored as the reply to it)",
                               param=f"messages.{len(messages) - 1}.role")
    if item.images:
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first_user is None:
            raise InvalidInput("images need a user turn to go into", param="messages")
        text = messages[first_user]["content"]
        parts = [{"type": "image"} for _ in item.images] + [{"type": "text", "text": text}]
        messages[first_user] = {"role": "user", "content": parts}
    return messages


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
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full_text.startswith(prompt_text):
            # Templates that rewrite earlier turns (e.g. strip reasoning) cannot be split; fall back to appending.
            return prompt_text, response, True
        return prompt_text, full_text[len(prompt_text):].rstrip(), True
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
