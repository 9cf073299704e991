"""Preference pairs -> judge SFT rows: the judge prompt as serving builds it, the judgment as the target.

    pairwise judge, one record (chosen c, rejected r) -> two rows, both orders:
        user: images + template(prompt, A=c, B=r)    assistant: [judgment\\n] answer_prefix choices[0]
        user: images + template(prompt, A=r, B=c)    assistant: [judgment\\n] answer_prefix choices[1]
    pointwise judge -> one row per response:
        user: images + template(prompt, response)    assistant: [judgment\\n] answer_prefix <its score's choice>

Prompts and replies come from rmserve.models.judge_format, the module the server judges with: the prompt
ids are ``judge_prompt``'s (the rendered template as the user turn with the images, the generation prompt,
and for a judge without reasoning the answer prefix), the reply is ``assistant_text``'s: a reasoning judge's
judgment and answer prefix tokenized, then the answer choice's own token id (never the joined text
re-tokenized: a BPE could merge the prefix with the choice), then the chat template's end of turn. So the
model state at the answer position is exactly the one the server reads.

Judgment text (reasoning judges): a record with both reference critiques (``chosen_reason``,
``rejected_reason``, MM-RLHF) gets ``"Response A: <reason of A>\\nResponse B: <reason of B>"`` in the
order shown (pairwise), or the response's own reason (pointwise); without them the judge answers at once.
Pointwise scores: a side's ``attributes[side]["score"]`` when the record has one (it must be one of the
judge's values), else the chosen side gets the highest value and the rejected side the lowest (a
verifier-style judge trained from preferences: good / bad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rmserve.models.judge_format import JudgeConfig, assistant_text, judge_prompt
from rmserve.models.types import EncodedItem, JudgeDecoding, ScoreItem

from ..records import PairRecord
from .base import DataError, record_images
from .collate import PairCollator

SCORE_ATTRIBUTE = "score"  # attributes[side][SCORE_ATTRIBUTE]: a pointwise label for that response


@dataclass
class JudgeRow:
    """One judge SFT row: the conversation, the responses shown (in order), the reply before the answer, and
    the answer."""

    conversation: ScoreItem  # the record's prompt (or messages) and images; its response is unused
    shown: tuple[str, ...]  # (response,) pointwise; (first, second) pairwise
    before_answer: str  # assistant_text's first part: [judgment + newline] + answer_prefix
    choice: int  # index into JudgeConfig.choices


def judge_rows(config: JudgeConfig, record: PairRecord) -> tuple[JudgeRow, JudgeRow]:
    """The record's two rows: pairwise (chosen first, chosen second) or pointwise (chosen, rejected)."""
    if record.videos:
        raise DataError(record.source, "judge training takes images, not videos", record.id)
    prompt = {"messages": record.prompt} if isinstance(record.prompt, list) else {"prompt": record.prompt}
    conversation = ScoreItem(response="", images=record_images(record), **prompt)
    reasons = (record.chosen_reason, record.rejected_reason)
    has_reasons = all(r and r.strip() for r in reasons)

    def reply(choice: int, judgment: str) -> str:
        return assistant_text(config, config.choices[choice], judgment)[0]

    sides = (record.chosen, record.rejected)
    if config.mode == "pairwise":
        rows = []
        for first, second, answer in ((0, 1, 0), (1, 0, 1)):
            judgment = f"Response A: {reasons[first]}\nResponse B: {reasons[second]}" if has_reasons else ""
            rows.append(JudgeRow(conversation, (sides[first], sides[second]), reply(answer, judgment), answer))
        return rows[0], rows[1]
    choices = [_pointwise_choice(config, record, side) for side in ("chosen", "rejected")]
    return tuple(JudgeRow(conversation, (sides[k],), reply(choices[k], reasons[k] if has_reasons else ""), choices[k])
                 for k in (0, 1))  # type: ignore[return-value]


def _pointwise_choice(config: JudgeConfig, record: PairRecord, side: str) -> int:
    assert config.values is not None
    score = ((record.attributes or {}).get(side) or {}).get(SCORE_ATTRIBUTE)
    if score is None:
        best = max if side == "chosen" else min
        return config.values.index(best(config.values))
    matches = [i for i, v in enumerate(config.values) if v == score]
    if not matches:
        raise DataError(record.source, f"attributes.{side}.{SCORE_ATTRIBUTE} = {score} is not one of the judge's "
                        f"values {list(config.values)}", record.id)
    return matches[0]


def encode_judge_row(model, config: JudgeConfig, decoding: JudgeDecoding, row: JudgeRow) -> EncodedItem:
    """The judge prompt exactly as the server builds it (``judge_prompt``) + the reply's ids; ``prefix_len``:
    where the reply starts (the answer prefix of a direct judge belongs to the reply, as its text does)."""
    if row.conversation.images and not model.family.multimodal:
        raise ValueError(f"model {model.name!r} is text-only and takes no images")
    prompt = judge_prompt(model, config, decoding, row.conversation, row.shown)
    ids, vision = list(prompt.prompt_ids), dict(prompt.vision)
    if decoding.reasoning:  # the judgment (and the prefix) is what the judge writes itself
        user_len = len(ids)
        ids += model.tokenizer(row.before_answer, add_special_tokens=False)["input_ids"]
    else:  # the server puts the answer prefix in the prompt: the reply text is the prefix alone
        user_len = len(ids) - len(decoding.prefix_ids)
    full = ids + [decoding.choice_ids[row.choice]] + end_of_turn_ids(model)
    if len(full) > model.max_length:
        raise ValueError(f"the judge row is {len(full)} tokens, over the model's limit of {model.max_length}")
    vision.update(model.family.item_positions(full, vision))
    return EncodedItem(input_ids=full, vision=vision, prefix_len=user_len)


def end_of_turn_ids(model) -> list[int]:
    """What closes the judge's reply: the chat template's end of turn (e.g. ``<|im_end|>``), else EOS."""
    markers = model.turn_markers()
    end = (markers.assistant_end if markers is not None else model.tokenizer.eos_token) or ""
    return model.tokenizer(end, add_special_tokens=False)["input_ids"] if end else []


class JudgeCollator(PairCollator):
    """PairCollator over judge rows: rows [0, B) the first of each record's rows, [B, 2B) the second.

    LM targets are every reply token (``lm_targets="both"``); ``answer_at`` holds each row's answer
    position and ``answer`` its target choice index (what the answer accuracy reads).
    """

    def __init__(self, model, config: JudgeConfig, *, skip_bad: bool = False):
        super().__init__(model, lm_targets="both", skip_bad=skip_bad)
        self.config = config
        self.decoding = model.judge_decoding()  # the server's: prefix ids, choice ids (checked single tokens)
        if self.decoding is None:
            raise ValueError(f"model {model.name!r} is not a generative judge (no judge section or no LM head)")
        self.choice_ids = self.decoding.choice_ids
        self.end_tokens = len(end_of_turn_ids(model))
        self._choices: list[tuple[int, int]] = []

    def encode_pair(self, rec: PairRecord):
        try:
            first, second = judge_rows(self.config, rec)
            encoded = (encode_judge_row(self.model, self.config, self.decoding, first),
                       encode_judge_row(self.model, self.config, self.decoding, second))
        except DataError:
            raise
        except ValueError as e:  # InvalidInput (unreadable images, images for a text-only model), too long
            raise DataError(rec.source, getattr(e, "message", str(e)), rec.id) from None
        self._choices.append((first.choice, second.choice))  # in the order of the records kept
        return encoded

    def __call__(self, records: list[PairRecord]):
        self._choices = []
        out = super().__call__(records)
        lengths = out.batch.attention_mask.sum(-1)  # right-padded: each row's token count
        out.answer_at = lengths - self.end_tokens - 2  # the answer token sits at length - end - 1
        out.answer = torch.tensor([c[0] for c in self._choices] + [c[1] for c in self._choices])
        return out


__all__ = ["JudgeCollator", "JudgeRow", "SCORE_ATTRIBUTE", "encode_judge_row", "end_of_turn_ids", "judge_rows"]
