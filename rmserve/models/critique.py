"""Critique-based scoring (MM-RLHF): generate an evaluation, then score with it (docs/architecture.md).

    item (question, images, response)
      --evaluator_item-->   user turn: images + template([Question] q, [LMM Response] r, [Evaluation]:)
      --generate_critique-> greedy assistant turn (the critique)
      --scored_item------>  the same user turn + the critique as the assistant reply -> reward head

The trainer (``rmserve-train critique``) teacher-forces reference critiques on exactly the
sequence ``scored_item`` builds, so training and serving see identical ids. A checkpoint is a
critique model when its ``rmserve.json`` has a ``"critique"`` section (``CritiqueConfig``):
the template and the generation settings travel with the weights.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import torch

from ..errors import InvalidInput
from .types import ScoreItem, ScoreOutput

DEFAULT_TEMPLATE = (
    "You are an expert evaluator of answers about images. Read the question and the response, then "
    "evaluate the response: is it correct, faithful to the image, helpful and safe?\n"
    "[Question]\n{question}\n[LMM Response]\n{response}\n[Evaluation]:"
)
EMPTY_CRITIQUE = "No evaluation."  # scored in place of a critique that came out empty
_FIELDS = re.compile(r"\{(question|response)\}")


@dataclass
class CritiqueConfig:
    """The ``"critique"`` section of rmserve.json."""

    template: str = DEFAULT_TEMPLATE  # must contain {question} and {response}
    max_new_tokens: int = 256
    generation: dict = field(default_factory=dict)  # extra greedy-generation kwargs (e.g. repetition_penalty)

    def __post_init__(self):
        missing = [f"{{{k}}}" for k in ("question", "response") if f"{{{k}}}" not in self.template]
        if missing:
            raise ValueError(f"critique template lacks {missing}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CritiqueConfig:
        return cls(**d)

    @classmethod
    def of(cls, model) -> CritiqueConfig | None:
        """The model's critique settings, or None if it scores responses directly."""
        section = model.extra_config.get("critique")
        return cls.from_dict(section) if section else None


def is_critique_model(model) -> bool:
    return bool(model.extra_config.get("critique"))


def can_generate(model) -> bool:
    """Whether ``model`` can generate text (``ServedModel.can_generate``)."""
    return model.can_generate()


def question_text(item: ScoreItem) -> str:
    """The question as text: the prompt, or a multi-turn conversation flattened with role names."""
    if item.prompt is not None:
        return item.prompt
    return "\n".join(f"{m['role'].capitalize()}: {_turn_text(m['content'])}" for m in item.messages or [])


def _turn_text(content) -> str:
    """A turn's text; media parts become ``[image]`` / ``[video]`` marks (the images themselves go in front of
    the evaluator turn, in order: the evaluator prompt is one user turn)."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] if p["type"] == "text" else f"[{p['type']}]" for p in content)


def evaluator_prompt(template: str, question: str, response: str) -> str:
    values = {"question": question, "response": response}
    return _FIELDS.sub(lambda m: values[m.group(1)], template)  # one pass: text in the fields stays literal


def scored_item(config: CritiqueConfig, item: ScoreItem, critique: str) -> ScoreItem:
    """The sequence the reward head reads: evaluator user turn + ``critique`` as the assistant reply."""
    if item.videos:
        raise InvalidInput("critique models do not take videos (the evaluator prompt holds images only)",
                           param="messages", code="videos_not_supported")
    return ScoreItem(response=critique, prompt=evaluator_prompt(config.template, question_text(item), item.response),
                     images=item.images, truncate=item.truncate, image_hashes=item.image_hashes)


def _generate_inputs(model, ids: list[int], vision: dict) -> dict:
    device = model.device
    input_ids = torch.tensor([ids], device=device)
    kw = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if "image_grid_thw" in vision:  # Qwen-VL: without mm_token_type_ids the 3D positions are silently wrong
        kw["pixel_values"] = vision["pixel_values"].to(device, model.backbone.dtype)
        kw["image_grid_thw"] = vision["image_grid_thw"].to(device)
        kw["mm_token_type_ids"] = (input_ids == model.backbone.config.image_token_id).int()
    elif "image_sizes" in vision:  # LLaVA-OneVision
        kw["pixel_values"] = vision["pixel_values"].to(device, model.backbone.dtype)
        kw["image_sizes"] = vision["image_sizes"].to(device)
        kw["batch_num_images"] = torch.tensor([vision["num_images"]], device=device)
    return kw


@torch.inference_mode()
def generate_critique(model, item: ScoreItem, config: CritiqueConfig | None = None, *, streamer=None) -> str:
    """Greedy critique of ``item.response`` (HF ``generate(do_sample=False)``); ``streamer`` streams tokens.

    A model with its own ``generate_ids(prompt_ids, images, max_new_tokens, generation, streamer)`` (the
    vLLM backend) generates there, from the same prompt ids with the same budget and settings.
    """
    config = config or CritiqueConfig.of(model) or CritiqueConfig()
    ids, vision, _ = model.encode_prompt(scored_item(config, item, critique=""))
    budget = min(config.max_new_tokens, model.max_length - len(ids) - 1)  # leave room for the end-of-turn token
    if budget <= 0:
        return EMPTY_CRITIQUE
    tok = model.tokenizer
    generate_ids = getattr(model, "generate_ids", None)
    if generate_ids is not None:
        new_ids = generate_ids(ids, item.images, budget, config.generation, streamer=streamer)
    else:
        out = model.backbone.generate(**_generate_inputs(model, ids, vision), do_sample=False, max_new_tokens=budget,
                                      pad_token_id=tok.pad_token_id, streamer=streamer, **config.generation)
        new_ids = out[0, len(ids):]
    text = tok.decode(new_ids, skip_special_tokens=True).strip()
    return text or EMPTY_CRITIQUE


@dataclass
class CritiqueResult:
    critique: str
    score: ScoreOutput


def critique_and_score(model, items: list[ScoreItem], config: CritiqueConfig | None = None,
                       batch_size: int = 16) -> list[CritiqueResult]:
    """Generate each item's critique (one at a time: greedy text must not depend on batch neighbours),
    then score the evaluator turn + critique sequences in batches."""
    config = config or CritiqueConfig.of(model) or CritiqueConfig()
    critiques = [generate_critique(model, it, config) for it in items]
    scores = model.score([scored_item(config, it, c) for it, c in zip(items, critiques, strict=True)],
                         batch_size=batch_size)
    return [CritiqueResult(c, s) for c, s in zip(critiques, scores, strict=True)]


__all__ = ["CritiqueConfig", "CritiqueResult", "DEFAULT_TEMPLATE", "EMPTY_CRITIQUE", "can_generate",
           "critique_and_score", "evaluator_prompt", "generate_critique", "is_critique_model", "question_text",
           "scored_item"]
