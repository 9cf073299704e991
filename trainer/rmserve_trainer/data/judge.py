"""Preference pairs -> judge SFT rows: the judge prompt as serving builds it, the judgment as the target.

    pairwise judge, one record (chosen c, rejected r) -> two rows, both orders:
        user: images + template(prompt, A=c, B=r)    assistant: [judgment\\n] answer_prefix choices[0]
        user: images + template(prompt, A=r, B=c)    assistant: [judgment\\n] answer_prefix choices[1]
    pointwise judge -> one row per response:
        user: images + template(prompt, response)    assistant: [judgment\\n] answer_prefix <its score's choice>

The texts come from rmserve.models.judge_format (``render_pairwise``/``render_pointwise``,
``assistant_text``): the module the server reads judgments with. The ids are built the way the server
reads the answer: the judge's user turn through ``RewardModel.encode_prompt`` (generation prompt
included), then the tokens of the text before the answer, then the answer choice's single token id
(never the joined text re-tokenized: a BPE could merge the prefix with the choice), then the chat
template's end of turn. So the model state at the answer position is exactly the one the server reads.

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

from rmserve.models.judge_format import (
    JudgeConfig,
    assistant_text,
    choice_token_ids,
    conversation_text,
    render_pairwise,
    render_pointwise,
)
from rmserve.models.types import EncodedItem, ScoreItem

from ..records import PairRecord
from .base import DataError, record_images
from .collate import PairCollator

SCORE_ATTRIBUTE = "score"  # attributes[side][SCORE_ATTRIBUTE]: a pointwise label for that response


@dataclass
class JudgeRow:
    """One judge SFT row as text: the user turn and the reply (before the answer, the answer choice)."""

    user: str
    images: list
    before_answer: str
    choice: int  # index into JudgeConfig.choices


def judge_rows(config: JudgeConfig, record: PairRecord) -> tuple[JudgeRow, JudgeRow]:
    """The record's two rows: pairwise (chosen first, chosen second) or pointwise (chosen, rejected)."""
    if record.videos:
        raise DataError(record.source, "judge training takes images, not videos", record.id)
    images = record_images(record)
    prompt = conversation_text(*((record.prompt, None) if isinstance(record.prompt, str) else (None, record.prompt)))
    reasons = (record.chosen_reason, record.rejected_reason)
    has_reasons = all(r and r.strip() for r in reasons)

    def reply(choice: int, judgment: str) -> str:
        return assistant_text(config, config.choices[choice], judgment)[0]

    if config.mode == "pairwise":
        rows = []
        for first, second, answer in ((0, 1, 0), (1, 0, 1)):
            sides = ((record.chosen, record.rejected)[first], (record.chosen, record.rejected)[second])
            judgment = f"Response A: {reasons[first]}\nResponse B: {reasons[second]}" if has_reasons else ""
            rows.append(JudgeRow(render_pairwise(config, prompt, *sides), images, reply(answer, judgment), answer))
        return rows[0], rows[1]
    chosen_choice, rejected_choice = (_pointwise_choice(config, record, side) for side in ("chosen", "rejected"))
    return (JudgeRow(render_pointwise(config, prompt, record.chosen), images,
                     reply(chosen_choice, reasons[0] if has_reasons else ""), chosen_choice),
            JudgeRow(render_pointwise(config, prompt, record.rejected), images,
                     reply(rejected_choice, reasons[1] if has_reasons else ""), rejected_choice))


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


def encode_judge_row(model, row: JudgeRow, choice_ids: tuple[int, ...]) -> EncodedItem:
    """Prompt ids (as the server encodes the judge prompt) + reply ids; ``prefix_len`` = the prompt's length."""
    if row.images and not model.family.multimodal:
        raise ValueError(f"model {model.name!r} is text-only and takes no images")
    ids, vision, _ = model.encode_prompt(ScoreItem(response="", prompt=row.user, images=row.images))
    before = model.tokenizer(row.before_answer, add_special_tokens=False)["input_ids"]
    full = ids + before + [choice_ids[row.choice]] + end_of_turn_ids(model)
    if len(full) > model.max_length:
        raise ValueError(f"the judge row is {len(full)} tokens, over the model's limit of {model.max_length}")
    vision.update(model.family.item_positions(full, vision))
    return EncodedItem(input_ids=full, vision=vision, prefix_len=len(ids))


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
        self.choice_ids = choice_token_ids(config, model.tokenizer)
        self.end_tokens = len(end_of_turn_ids(model))
        self._choices: list[tuple[int, int]] = []

    def encode_pair(self, rec: PairRecord):
        try:
            first, second = judge_rows(self.config, rec)
            encoded = (encode_judge_row(self.model, first, self.choice_ids),
                       encode_judge_row(self.model, second, self.choice_ids))
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
