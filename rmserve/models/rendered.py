"""Prompts that arrive as text already rendered by a chat template (pure string functions, no torch).

RL frameworks send the policy's own text: OpenRLHF's ``query`` is the decoded prompt + response with
special tokens kept, so a Qwen-VL policy's image shows up as its processor's *expanded* run
``<|vision_start|><|image_pad|>...<|image_pad|><|vision_end|>`` (one pad per vision token, a count
that depends on the policy's image processor, not ours); slime's and users' prompts often carry the
chat template already. Scoring such text as a plain question would template it twice (a different
reward) or count the policy's pads as extra images. So:

- ``collapse_image_slots`` turns every run, whatever its pad count, into one image slot, the form the
  reward model's own processor expands again for its own image processing; the slot count is the
  number of images the text refers to;
- ``carries_template`` tells whether a prompt string already contains the template's turn markers.

``PromptSyntax`` (models/types.py, the serving contract) holds this model's strings, learned by
rendering probe conversations with its own chat template (``prompt_syntax``), so nothing here is
specific to one model family.
"""

from __future__ import annotations

import functools
import re

from .types import PromptSyntax


@functools.lru_cache(maxsize=64)
def _image_run(syntax: PromptSyntax) -> re.Pattern:
    pads = f"(?:{re.escape(syntax.image_token)})+"
    return re.compile(re.escape(syntax.image_open) + pads + re.escape(syntax.image_close))


def collapse_image_slots(text: str, syntax: PromptSyntax) -> tuple[str, int]:
    """``(text with each image run as one slot, number of image slots)``.

    Runs of any length collapse (``<|vision_start|>`` + N x ``<|image_pad|>`` + ``<|vision_end|>`` ->
    one slot). For a family whose slot has no open/close text (LLaVA's bare ``<image>``), adjacent
    images cannot be told apart from one expanded image; their runs merge into one slot.
    """
    if not syntax.image_token:
        return text, 0
    return _image_run(syntax).subn(syntax.image_slot, text)


def carries_template(text: str, syntax: PromptSyntax) -> bool:
    """Whether ``text`` already contains the chat template's turn markers (it was rendered by someone)."""
    return any(marker in text for marker in syntax.chat_markers)


def _special_tokens(tokenizer) -> set[str]:
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
    found = set(getattr(tok, "all_special_tokens", []) or [])
    for added in (getattr(tok, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            found.add(str(added.content if hasattr(added, "content") else added))
    return {t for t in found if t}


def prompt_syntax(tokenizer, assistant_start: str, assistant_end: str, image_token: str | None = None) -> PromptSyntax:
    """This model's ``PromptSyntax``: chat markers are the special tokens in its assistant-turn markers;
    the image slot is what its template inserts for one ``{"type": "image"}`` block (``image_token``:
    the processor's, None for text-only models)."""
    image_pieces: set[str] = set()
    image_token = image_token or ""
    open_, close = "", ""
    if image_token:
        text = [{"type": "text", "text": "x"}]
        try:
            with_image = tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, *text]}], add_generation_prompt=True, tokenize=False)
            without = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        except Exception:  # a template that cannot render image blocks: no collapsing
            with_image = without = ""
        slot = _inserted(without, with_image)
        if slot and image_token in slot:
            open_, _, close = slot.partition(image_token)
            image_pieces = {image_token, open_, close}
        else:
            image_token = ""
    specials = _special_tokens(tokenizer) - image_pieces
    markers = tuple(sorted(t for t in specials if t in assistant_start + assistant_end))
    return PromptSyntax(chat_markers=markers, image_open=open_, image_token=image_token, image_close=close)


def _inserted(shorter: str, longer: str) -> str:
    """The substring ``longer`` has in addition to ``shorter`` (one contiguous insertion), or ""."""
    if not longer or len(longer) <= len(shorter):
        return ""
    i = 0
    while i < len(shorter) and shorter[i] == longer[i]:
        i += 1
    j = 0
    while j < len(shorter) - i and shorter[-1 - j] == longer[-1 - j]:
        j += 1
    return longer[i : len(longer) - j]


__all__ = ["PromptSyntax", "carries_template", "collapse_image_slots", "prompt_syntax"]
