"""PairRecords -> one padded model batch holding the chosen and the rejected sequences, plus targets.

    records[0..B) --to_items--> (chosen ScoreItem, rejected ScoreItem) --model.encode--> EncodedItem
                  --model.collate--> Batch of 2B rows: rows [0, B) chosen, rows [B, 2B) rejected

Both sides go into ONE batch (not two) so a training step is one forward: under DDP a module
must run forward once per backward, and the two sides share padding. ``PairBatch.chosen`` /
``.rejected`` split any (2B, ...) output back. Encoding goes through ``RewardModel.encode``, the
same code the server runs, so training sees exactly the ids that serving will score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rmserve.errors import InvalidInput
from rmserve.models import ScoreItem
from rmserve.models.batch import Batch
from rmserve.models.critique import CritiqueConfig, scored_item

from ..records import PairRecord
from .base import DataError, record_images

IGNORE_INDEX = -100  # LM targets that are not trained on (prompt tokens, padding)


@dataclass
class PairBatch:
    batch: Batch  # (2B, L): chosen rows first, then rejected rows
    margin: torch.Tensor  # (B,)
    ids: list[str]
    lm_labels: torch.Tensor | None = None  # (2B, L) token ids where a response is an LM target, else -100
    lm_weights: torch.Tensor | None = None  # (2B, L) per-target LM weights (the verdict token), None = all 1
    safety: torch.Tensor | None = None  # (2B, C) 0/1 targets
    safety_mask: torch.Tensor | None = None  # (2B,) 1 where the response has safety labels
    attributes: torch.Tensor | None = None  # (2B, K) regression targets
    attributes_mask: torch.Tensor | None = None  # (2B, K) 1 where a target is given
    prompt_end: torch.Tensor | None = None  # (2B,) index of each row's last prompt token (before the response)
    answer_at: torch.Tensor | None = None  # (2B,) judges: the position whose next token is the answer choice
    answer: torch.Tensor | None = None  # (2B,) judges: each row's target choice index

    @property
    def n_pairs(self) -> int:
        return len(self.ids)

    def chosen(self, x: torch.Tensor) -> torch.Tensor:
        return x[: self.n_pairs]

    def rejected(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.n_pairs:]

    def to(self, device) -> PairBatch:
        def move(t):
            return t.to(device) if isinstance(t, torch.Tensor) else t
        return PairBatch(self.batch.to(device), move(self.margin), self.ids, move(self.lm_labels),
                         move(self.lm_weights), move(self.safety), move(self.safety_mask), move(self.attributes),
                         move(self.attributes_mask), move(self.prompt_end), move(self.answer_at), move(self.answer))


# ---- what sequence each side of a pair is ------------------------------------------------------------
def _prompt_fields(record: PairRecord) -> dict:
    if isinstance(record.prompt, list):
        return {"messages": record.prompt}
    return {"prompt": record.prompt}


def response_items(record: PairRecord) -> tuple[ScoreItem, ScoreItem]:
    """Bradley-Terry: the prompt (+ images) with each response as the assistant turn."""
    images = record_images(record)
    base = _prompt_fields(record)
    return (ScoreItem(response=record.chosen, images=images, videos=record.videos, **base),
            ScoreItem(response=record.rejected, images=images, videos=record.videos, **base))


def critique_items(config: CritiqueConfig) -> Callable[[PairRecord], tuple[ScoreItem, ScoreItem]]:
    """MM-RLHF critique: the evaluator turn for each response with its reference critique as the reply."""

    def to_items(record: PairRecord) -> tuple[ScoreItem, ScoreItem]:
        if not (record.chosen_reason and record.chosen_reason.strip()
                and record.rejected_reason and record.rejected_reason.strip()):
            raise DataError(record.source, "the critique trainer needs chosen_reason and rejected_reason", record.id)
        chosen, rejected = response_items(record)
        return scored_item(config, chosen, record.chosen_reason), scored_item(config, rejected, record.rejected_reason)

    return to_items


# ---- the collate ------------------------------------------------------------------------------------
@dataclass
class PairCollator:
    """Callable for ``DataLoader(collate_fn=...)``.

    lm_targets: which responses are LM targets: "none", "chosen" (an SFT-style regulariser on the
    preferred answer) or "both" (critique training: both reference critiques).
    safety_labels / attribute_names: the model's safety categories and attribute names, in head order.
    verdict_weight: with lm_targets "both", the LM weight of each pair's verdict token: the first token
    where its two reference critiques differ ("The image shows a red circle" then ";" for right, ","
    for "but the response says ..."). A critique's other tokens mostly follow from the ones before;
    the verdict is the one that needs the comparison, and at weight 1 it is ~1/20 of the loss.
    """

    model: object  # RewardModel (encode/collate only; runs in the DataLoader)
    to_items: Callable[[PairRecord], tuple[ScoreItem, ScoreItem]] = response_items
    lm_targets: str = "none"
    safety_labels: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()
    skip_bad: bool = False  # drop records that fail here (lazy image decode, too long) and count them
    lm_chosen_in_prompt: bool = False  # critique: also LM targets on the chosen response inside the evaluator turn
    verdict_weight: float = 1.0

    def __post_init__(self):
        self.skipped = 0
        self.errors: list[str] = []
        if self.lm_targets not in ("none", "chosen", "both"):
            raise ValueError(f"lm_targets must be none|chosen|both, got {self.lm_targets!r}")

    def __call__(self, records: list[PairRecord]) -> PairBatch:
        chosen, rejected, kept = [], [], []
        last_error = None
        for rec in records:
            try:
                c, r = self.encode_pair(rec)
            except DataError as err:
                if not self.skip_bad:
                    raise
                self.skipped += 1
                last_error = err
                if len(self.errors) < 20:
                    self.errors.append(str(err))
                continue
            chosen.append(c)
            rejected.append(r)
            kept.append(rec)
        if not kept:  # a step needs at least one pair (every rank must run its forward)
            raise DataError(records[0].source, f"every record of a batch of {len(records)} is bad; last: {last_error}")
        records = kept
        encoded = chosen + rejected
        batch = self.model.collate(encoded, padding_side="right")
        out = PairBatch(batch=batch, margin=torch.tensor([r.margin for r in records], dtype=torch.float32),
                        ids=[r.id for r in records], prompt_end=torch.tensor([e.prefix_len - 1 for e in encoded]))
        if self.lm_targets != "none":
            rows = len(encoded) if self.lm_targets == "both" else len(records)
            out.lm_labels = response_labels(encoded, batch.input_ids, rows)
            if self.lm_targets == "both" and self.verdict_weight != 1.0:
                out.lm_weights = verdict_weights(chosen, rejected, batch.input_ids, self.verdict_weight)
            if self.lm_chosen_in_prompt:
                tokenizer = self.model.tokenizer
                for i, rec in enumerate(records):
                    span = tokenizer(rec.chosen, add_special_tokens=False)["input_ids"]
                    label_span(out.lm_labels[i], chosen[i], span)
        if self.safety_labels:
            out.safety, out.safety_mask = safety_targets(records, self.safety_labels)
        if self.attribute_names:
            out.attributes, out.attributes_mask = attribute_targets(records, self.attribute_names)
        return out

    def encode_pair(self, rec: PairRecord):
        c, r = self.to_items(rec)
        try:
            return self.model.encode(c), self.model.encode(r)
        except InvalidInput as e:  # e.g. too long for the model: name the record, not a wire field
            raise DataError(rec.source, f"{e.message} ({e.param})", rec.id) from None


def response_labels(encoded, input_ids: torch.Tensor, rows: int) -> torch.Tensor:
    """(N, L) LM targets: the response tokens (up to and including end-of-turn) of the first ``rows`` rows.

    Rows are right-padded, so row i's response sits at [prefix_len, num_tokens).
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for i, item in enumerate(encoded[:rows]):
        labels[i, item.prefix_len:item.num_tokens] = input_ids[i, item.prefix_len:item.num_tokens]
    return labels


def verdict_weights(chosen, rejected, input_ids: torch.Tensor, weight: float) -> torch.Tensor:
    """(2B, L) LM weights: ``weight`` at each pair's verdict token in both rows, 1 elsewhere.

    The verdict is the first token at which the two responses' turns (the reference critiques) differ,
    counted from each row's own ``prefix_len`` (the prompts differ: each holds its response). A pair
    whose critiques differ from the first token (no shared description) gets no verdict weight.
    """
    weights = torch.ones(input_ids.shape, dtype=torch.float32)
    n = len(chosen)
    for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
        a, b = c.input_ids[c.prefix_len:c.num_tokens], r.input_ids[r.prefix_len:r.num_tokens]
        k = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if k:  # None: one is a prefix of the other; 0: nothing shared to compare against
            weights[i, c.prefix_len + k] = weight
            weights[n + i, r.prefix_len + k] = weight
    return weights


def label_span(labels: torch.Tensor, item, span: list[int]) -> None:
    """Make the last occurrence of ``span`` inside the item's prompt an LM target (in place; no-op if absent).

    In a critique row the chosen response sits in the user turn; learning to write it (the SFT-style
    signal of GRM) is what teaches a from-scratch vision tower shapes, not just colours.
    """
    ids, n = item.input_ids, len(span)
    for start in range(item.prefix_len - n, -1, -1):
        if n and ids[start:start + n] == span:
            labels[start:start + n] = torch.tensor(span)
            return


def safety_targets(records: list[PairRecord], labels: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label 0/1 targets (2B, C) and a (2B,) mask of responses that carry labels (None = unlabelled).

    Codes the head does not predict are ignored.
    """
    index = {code: i for i, code in enumerate(labels)}
    sides = [r.chosen_safety for r in records] + [r.rejected_safety for r in records]
    targets = torch.zeros(len(sides), len(labels))
    mask = torch.zeros(len(sides))
    for row, codes in enumerate(sides):
        if codes is None:
            continue
        mask[row] = 1.0
        for code in codes:
            if code in index:
                targets[row, index[code]] = 1.0
    return targets, mask


def attribute_targets(records: list[PairRecord], names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets (2B, K) and a (2B, K) mask of the scores a record gives."""
    targets = torch.zeros(2 * len(records), len(names))
    mask = torch.zeros_like(targets)
    for side, offset in (("chosen", 0), ("rejected", len(records))):
        for i, rec in enumerate(records):
            scores = (rec.attributes or {}).get(side) or {}
            for k, name in enumerate(names):
                if name in scores:
                    targets[offset + i, k] = scores[name]
                    mask[offset + i, k] = 1.0
    return targets, mask
