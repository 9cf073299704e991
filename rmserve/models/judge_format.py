"""Generative reward models (GenRM judges): the checkpoint's ``judge`` section, the judge prompt, parsing a
judgment, and the reward read from it. Torch-free: the server (api/judge.py) and the trainer's eval
(``rmserve-train eval``) import this one module, so both score a judge by the same definitions.

    JudgeConfig.from_dict(rmserve.json["judge"])        the section, validated (JudgeConfigError names the field)
    choice_token_ids(config, tokenizer)                 the answer tokens, each exactly one token (checked at load)
    render_pointwise(config, prompt, response)          the judge's user message for one response
    render_pairwise(config, prompt, response_a, b)      ... for two (call it in both orders)
    judge_prompt(model, config, decoding, item, shown)  the rendered prompt as the model's encoded user turn
    assistant_text(config, choice, judgment)            the reply a judge is trained to write (SFT target)
    parse_judgment(config, text)                        the answer in generated text (answer prefix, then pattern)
    read_judgment(config, judgment)                     a backend's Judgment -> Verdict (probabilities or parsed);
                                                        UnparseableJudgment (422 ``judge_unparseable``) if neither
    reward_from_probabilities(config, probs)            pointwise: sum(p_i v_i) / sum(p_i); pairwise: P(first)
    aggregate(config, verdicts, "mean" | "majority")    k votes -> one reward
    pair_probability(p_ab, p_ba)                        the two orders -> P(a better) (their mean)
    vote_seed(seed, j)                                  the seed of vote j (voting)

Definitions (docs/architecture.md, "Generative judges"):
- the answer is read at the position right after ``answer_prefix``: the next-token distribution restricted to
  ``choices`` and renormalised. Pointwise reward = its expectation of ``values``; pairwise = p(A) / (p(A) + p(B)),
  the probability that the response shown first is better.
- pairwise judges see both orders: ``p_ab`` = P(A) with a first, ``p_ba`` = P(B) with b first (a second), both
  "a is better"; the pair's probability is their mean (position bias cancels to first order).
- when the answer position is never reached (a reasoning judge that did not write ``answer_prefix`` at a token
  boundary), the generated text is parsed: after ``answer_prefix`` a choice, else ``answer_pattern``'s group;
  the reward is then that choice's value (pairwise: 1 for A, 0 for B). Neither: ``UnparseableJudgment``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..errors import InvalidInput
from .types import JudgeDecoding, JudgePrompt, Judgment, ScoreItem

Mode = Literal["pointwise", "pairwise"]
Aggregate = Literal["mean", "majority"]
UNPARSEABLE = "judge_unparseable"
_FIELDS = {
    "pointwise": ("prompt", "response"),
    "pairwise": ("prompt", "response_a", "response_b"),
}
_PLACEHOLDER = re.compile(r"\{(prompt|response|response_a|response_b)\}")


class JudgeConfigError(ValueError):
    """A ``judge`` section that cannot work; the message names the field (``judge.choices``)."""


class UnparseableJudgment(InvalidInput):
    """The judge wrote no answer that can be read: an explicit per-item error, never a reward of 0."""

    def __init__(self, text: str, *, param=None):
        shown = text if len(text) <= 200 else text[:100] + " ... " + text[-95:]
        super().__init__(f"the judge's output has no readable answer: {shown!r}", param=param, code=UNPARSEABLE)
        self.text = text


@dataclass(frozen=True)
class JudgeConfig:
    """The ``"judge"`` section of rmserve.json (docs/architecture.md, "Checkpoint format")."""

    mode: Mode
    template: str  # the user message: {prompt} {response} (pointwise) or {prompt} {response_a} {response_b}
    answer_prefix: str  # the text after which the answer token is read, e.g. "Score:" / "Better:"
    choices: tuple[str, ...]  # the answer tokens, e.g. ("1", ..., "10") / ("A", "B")
    values: tuple[float, ...] | None = None  # pointwise: each choice's score
    reasoning: bool = False  # True: a judgment is generated before the answer prefix; False: answer at once
    max_new_tokens: int = 256
    answer_pattern: str | None = None  # regex with one group: the answer in text without the answer position

    def __post_init__(self) -> None:
        if self.mode not in _FIELDS:
            raise JudgeConfigError(f"judge.mode must be 'pointwise' or 'pairwise', got {self.mode!r}")
        found = set(_PLACEHOLDER.findall(self.template))
        missing = [f"{{{f}}}" for f in _FIELDS[self.mode] if f not in found]
        if missing:
            raise JudgeConfigError(f"judge.template ({self.mode}) lacks {', '.join(missing)}")
        wrong = sorted(found - set(_FIELDS[self.mode]))
        if wrong:
            raise JudgeConfigError(f"judge.template ({self.mode}) has fields of the other mode: {wrong}")
        if not self.answer_prefix.strip():
            raise JudgeConfigError("judge.answer_prefix must be non-empty text (e.g. 'Score:')")
        if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices) or not all(self.choices):
            raise JudgeConfigError(f"judge.choices must be at least two distinct non-empty strings, got "
                                   f"{list(self.choices)}")
        if self.mode == "pairwise":
            if len(self.choices) != 2:
                raise JudgeConfigError(f"judge.choices of a pairwise judge are two (first, second), got "
                                       f"{list(self.choices)}")
            if self.values is not None:
                raise JudgeConfigError("judge.values is for pointwise judges (a pairwise judge's reward is P(first))")
        else:
            if self.values is None or len(self.values) != len(self.choices):
                raise JudgeConfigError(f"judge.values must give one score per choice ({len(self.choices)}), got "
                                       f"{None if self.values is None else list(self.values)}")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in self.values):
                raise JudgeConfigError("judge.values must be finite numbers")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise JudgeConfigError(f"judge.max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.answer_pattern is not None:
            try:
                groups = re.compile(self.answer_pattern).groups
            except re.error as exc:
                raise JudgeConfigError(f"judge.answer_pattern is not a regular expression: {exc}") from None
            if groups != 1:
                raise JudgeConfigError(f"judge.answer_pattern must have exactly one group, it has {groups}")

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> JudgeConfig:
        if not isinstance(section, dict):
            raise JudgeConfigError(f"the judge section must be an object, got {type(section).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            raise JudgeConfigError(f"judge section has unknown fields {unknown} (known: {sorted(known)})")
        absent = [f for f in ("mode", "template", "answer_prefix", "choices") if f not in section]
        if absent:
            raise JudgeConfigError(f"judge section lacks {absent}")
        values = section.get("values")
        return cls(**{**section, "choices": tuple(str(c) for c in section["choices"]),
                      "values": None if values is None else tuple(values)})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["choices"] = list(self.choices)
        if self.values is None:
            del out["values"]
        else:
            out["values"] = list(self.values)
        return out

    @classmethod
    def of(cls, extra_config: dict) -> JudgeConfig | None:
        """The judge section of a model's extra config (``ServedModel.extra_config``), or None."""
        section = extra_config.get("judge")
        return cls.from_dict(section) if section else None


def choice_token_ids(config: JudgeConfig, tokenizer) -> tuple[int, ...]:
    """Each choice's token id; JudgeConfigError unless every choice is exactly one token of ``tokenizer``."""
    ids = []
    for choice in config.choices:
        tokens = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise JudgeConfigError(f"judge.choices: {choice!r} is {len(tokens)} tokens in this tokenizer "
                                   f"({tokens}); every answer choice must be a single token")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise JudgeConfigError(f"judge.choices map to the same token: {dict(zip(config.choices, ids, strict=True))}")
    return tuple(ids)


# ── prompts ────────────────────────────────────────────────────────────────────────────────────


def conversation_text(prompt: str | None, messages: Sequence[dict] | None) -> str:
    """The conversation as the judge's ``{prompt}``: the prompt, or the turns flattened with role names
    (image and video parts become ``[image]`` / ``[video]``; the images themselves lead the judge's turn)."""
    if prompt is not None:
        return prompt
    lines = []
    for m in messages or []:
        content = m["content"]
        text = content if isinstance(content, str) else "".join(
            p["text"] if p["type"] == "text" else f"[{p['type']}]" for p in content)
        lines.append(f"{m['role'].capitalize()}: {text}")
    return "\n".join(lines)


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)  # one pass: field text stays literal


def render_pointwise(config: JudgeConfig, prompt: str, response: str) -> str:
    if config.mode != "pointwise":
        raise ValueError("render_pointwise needs a pointwise judge")
    return _fill(config.template, {"prompt": prompt, "response": response})


def render_pairwise(config: JudgeConfig, prompt: str, response_a: str, response_b: str) -> str:
    """The user message with ``response_a`` shown first (as A); call it again swapped for the other order."""
    if config.mode != "pairwise":
        raise ValueError("render_pairwise needs a pairwise judge")
    return _fill(config.template, {"prompt": prompt, "response_a": response_a, "response_b": response_b})


def assistant_text(config: JudgeConfig, choice: str, judgment: str = "") -> tuple[str, str]:
    """The reply a judge is trained to write, as ``(text before the answer, the answer token's text)``.

    Serving reads the answer at the token right after ``answer_prefix``: a trainer must tokenize the first
    part and append the choice's single token id (``choice_token_ids``), not tokenize the joined text (a BPE
    may merge the two). ``judgment``: the reasoning (reasoning judges), followed by a newline.
    """
    if choice not in config.choices:
        raise ValueError(f"{choice!r} is not one of the judge's choices {list(config.choices)}")
    before = f"{judgment.rstrip()}\n" if config.reasoning and judgment.strip() else ""
    return before + config.answer_prefix, choice


def judge_prompt(model, config: JudgeConfig, decoding: JudgeDecoding, item: ScoreItem,
                 shown: Sequence[str]) -> JudgePrompt:
    """The judge's prompt for ``shown`` (one response, or a pair in the order shown) to ``item``'s conversation:
    the rendered template as the user turn with ``item``'s images in it, the generation prompt, and the answer
    prefix when the judge answers without reasoning. ``model`` is a ``ServedModel`` (its ``encode_prompt``).
    InvalidInput (locations relative to the item) for videos and for prompts over the model's length."""
    if item.videos:
        raise InvalidInput("generative judges do not take videos (the judge prompt holds images only)",
                           param="messages", code="videos_not_supported")
    question = conversation_text(item.prompt, item.messages)
    text = (render_pointwise(config, question, shown[0]) if config.mode == "pointwise"
            else render_pairwise(config, question, shown[0], shown[1]))
    try:
        ids, vision, _ = model.encode_prompt(ScoreItem(response="", prompt=text, images=item.images,
                                                       image_hashes=item.image_hashes))
    except InvalidInput:
        raise
    except (ValueError, TypeError) as exc:  # the tokenizer/processor refusing this input
        raise InvalidInput(f"the judge prompt could not be encoded: {exc}", code="invalid_item") from None
    if not decoding.reasoning:
        ids = list(ids) + list(decoding.prefix_ids)
    room = 1 if decoding.reasoning else 0  # a reasoning judge needs room to write something
    if len(ids) + room > model.max_length:
        raise InvalidInput(f"the judge prompt (template + conversation + responses) is {len(ids)} tokens, over this "
                           f"judge's limit of {model.max_length}; shorten the responses or the prompt",
                           code="too_long")
    keys = tuple(item.image_hashes) if len(item.image_hashes) == len(item.images) else ()
    return JudgePrompt(list(ids), vision, list(item.images), keys)


# ── reading a judgment ─────────────────────────────────────────────────────────────────────────


def ends_with_answer_prefix(config: JudgeConfig, text: str) -> bool:
    """Whether generated text has just reached the answer position (where a reasoning judge stops)."""
    return text.endswith(config.answer_prefix)


def parse_judgment(config: JudgeConfig, text: str) -> int | None:
    """The choice index written in ``text``: the choice right after the first ``answer_prefix`` (longest
    match first: "10" before "1"), else ``answer_pattern``'s group at its last match; None if neither."""
    at = text.find(config.answer_prefix)
    if at >= 0:
        rest = text[at + len(config.answer_prefix):].lstrip()
        for i in sorted(range(len(config.choices)), key=lambda i: -len(config.choices[i])):
            choice = config.choices[i]
            if rest.startswith(choice) and not _continues_word(choice, rest[len(choice):]):
                return i
    if config.answer_pattern is not None:
        matches = list(re.finditer(config.answer_pattern, text))
        if matches:
            found = (matches[-1].group(1) or "").strip()
            if found in config.choices:
                return config.choices.index(found)
    return None


def _continues_word(choice: str, after: str) -> bool:
    """"Ab" after prefix "Better:" is not the choice "A"; "7." or "7/10" is the choice "7"."""
    return bool(after) and choice[-1:].isalnum() and after[0].isalnum()


def choice_probabilities(logprobs: Sequence[float]) -> list[float]:
    """The answer distribution restricted to the choices and renormalised (softmax of their log-probs)."""
    if not logprobs or not all(math.isfinite(x) for x in logprobs):
        raise ValueError(f"choice log-probabilities must be finite, got {list(logprobs)}")
    top = max(logprobs)
    weights = [math.exp(x - top) for x in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def reward_from_probabilities(config: JudgeConfig, probs: Sequence[float]) -> float:
    """Pointwise: sum(p_i * v_i) / sum(p_i); pairwise: p(first) / (p(first) + p(second))."""
    total = sum(probs)
    if config.mode == "pairwise":
        return probs[0] / total
    assert config.values is not None
    return sum(p * v for p, v in zip(probs, config.values, strict=True)) / total


def reward_from_choice(config: JudgeConfig, index: int) -> float:
    """A written answer's reward: its value (pointwise), 1.0 for the first / 0.0 for the second (pairwise)."""
    if config.mode == "pairwise":
        return 1.0 if index == 0 else 0.0
    assert config.values is not None
    return float(config.values[index])


@dataclass(frozen=True)
class Verdict:
    """One judgment read: ``reward`` (pointwise score, or pairwise P(first better)), the ``answer`` (choice
    index: the sampled one, else the most probable, else the parsed one), and where it came from."""

    reward: float
    answer: int
    source: Literal["probabilities", "parsed"]
    text: str
    probabilities: tuple[float, ...] | None = None  # over the choices, renormalised
    completion_tokens: int = 0


def read_judgment(config: JudgeConfig, judgment: Judgment) -> Verdict:
    """A backend's judgment as a verdict; UnparseableJudgment when no answer can be read."""
    if judgment.choice_logprobs is not None:
        probs = choice_probabilities(judgment.choice_logprobs)
        answer = judgment.sampled_choice if judgment.sampled_choice is not None else max(
            range(len(probs)), key=lambda i: (probs[i], -i))
        return Verdict(reward_from_probabilities(config, probs), answer, "probabilities", judgment.text,
                       tuple(probs), judgment.completion_tokens)
    index = parse_judgment(config, judgment.text)
    if index is None:
        raise UnparseableJudgment(judgment.text)
    return Verdict(reward_from_choice(config, index), index, "parsed", judgment.text, None,
                   judgment.completion_tokens)


def aggregate(config: JudgeConfig, verdicts: Sequence[Verdict], how: Aggregate = "mean") -> float:
    """k votes -> one reward. ``mean``: the mean of the votes' rewards. ``majority``: the most frequent answer's
    reward (pointwise: its value; pairwise: 1.0 / 0.0); a tie between answers gives the mean of the tied
    answers' rewards (pairwise: 0.5)."""
    if not verdicts:
        raise ValueError("no verdicts to aggregate")
    if how == "mean":
        return sum(v.reward for v in verdicts) / len(verdicts)
    if how != "majority":
        raise ValueError(f"aggregate must be 'mean' or 'majority', got {how!r}")
    counts = Counter(v.answer for v in verdicts)
    top = max(counts.values())
    tied = sorted(a for a, n in counts.items() if n == top)
    return sum(reward_from_choice(config, a) for a in tied) / len(tied)


def pair_probability(p_ab: float, p_ba: float) -> float:
    """P(a better) from both orders: ``p_ab`` (a shown first, P(A)) and ``p_ba`` (b first, P(B)); their mean."""
    return (p_ab + p_ba) / 2.0


_SEED_STRIDE = 1_000_003


def vote_seed(seed: int, vote: int) -> int:
    """The seed of vote ``vote`` (0..k-1) of a request seeded with ``seed``: the same for every case, so a case's
    votes do not depend on its neighbours or its position."""
    return (seed * _SEED_STRIDE + vote) % (2**63)


def second_is_better(p_first: float) -> float:
    """A pairwise reward read with b shown first (P(b better)) as P(a better): the order swapped back."""
    return 1.0 - p_first


__all__ = [
    "UNPARSEABLE", "Aggregate", "JudgeConfig", "JudgeConfigError", "Mode", "UnparseableJudgment", "Verdict",
    "aggregate", "assistant_text", "choice_probabilities", "choice_token_ids", "conversation_text",
    "ends_with_answer_prefix", "judge_prompt", "pair_probability", "parse_judgment", "read_judgment", "render_pairwise",
    "render_pointwise", "reward_from_choice", "reward_from_probabilities", "second_is_better", "vote_seed",
]
