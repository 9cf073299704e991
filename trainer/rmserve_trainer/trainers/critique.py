"""MM-RLHF critique reward-model trainer: learn to write the critique, and to score with it.

Each response becomes the evaluator conversation ``rmserve.models.critique.scored_item`` builds:

    user:      <image> template([Question] prompt, [LMM Response] response, [Evaluation]:)
    assistant: reference critique (chosen_reason / rejected_reason), teacher-forced

    loss = lm_weight * CE(critique tokens of both responses)
         + reward_weight * (BT(r_c, r_r) + centering * mean((r_c + r_r)^2))   # reward read after the critique
         [+ safety BCE] [+ attribute MSE]

At serving time the critique is generated greedily and the same sequence is scored
(``rmserve.models.critique.critique_and_score``); the template goes into the checkpoint's
rmserve.json under ``"critique"``, which is how the server knows this is a critique model.
"""

from __future__ import annotations

from rmserve.models.critique import CritiqueConfig, critique_and_score

from ..data import DataError, PairCollator, critique_items, response_items
from ..records import PairRecord
from .base import PairTrainer, TrainConfig


def with_reasons(records: list[PairRecord], skip_bad: bool) -> tuple[list[PairRecord], int]:
    """Records that carry both reference critiques; the others are an error, or skipped and counted."""
    def has(text):
        return bool(text and text.strip())

    kept = [r for r in records if has(r.chosen_reason) and has(r.rejected_reason)]
    missing = len(records) - len(kept)
    if missing and not skip_bad:
        first = next(r for r in records if not (has(r.chosen_reason) and has(r.rejected_reason)))
        raise DataError(first.source, f"the critique trainer needs chosen_reason and rejected_reason; {missing} of "
                        f"{len(records)} records lack them (pass --skip-bad to drop them)", first.id)
    return kept, missing


class CritiqueTrainer(PairTrainer):
    """``fit``, ``evaluate`` (+ accuracy with generated critiques), ``save_checkpoint`` (+ the template)."""

    name = "critique"

    def __init__(self, model, config: TrainConfig, train: list[PairRecord], eval_records=None, *,
                 critique: CritiqueConfig | None = None, eval_generate: int = 0, **kw):
        self.critique = critique or CritiqueConfig()
        self.eval_generate = eval_generate  # eval pairs scored with generated critiques (slow: greedy decoding)
        self.missing_reasons = 0
        if isinstance(train, list):  # a stream is checked record by record in the collate
            train, self.missing_reasons = with_reasons(train, config.skip_bad)
        if eval_records:
            eval_records, missing = with_reasons(eval_records, config.skip_bad)
            self.missing_reasons += missing
        self._eval_records = eval_records or []
        super().__init__(model, config, train, eval_records, **kw)
        if self.missing_reasons:
            self.log({"data/skipped_without_reasons": self.missing_reasons})

    def make_collator(self) -> PairCollator:
        return PairCollator(self.model, to_items=critique_items(self.critique), **self._collator_kwargs())

    def checkpoint_extra(self) -> dict:
        return {"critique": self.critique.to_dict()}

    def evaluate(self) -> dict[str, float]:
        result = super().evaluate()  # teacher-forced: the reference critiques
        if self.eval_generate and self._eval_records:
            result.update(self.evaluate_generated(self._eval_records[: self.eval_generate]))
        return result

    def evaluate_generated(self, records: list[PairRecord]) -> dict[str, float]:
        """Accuracy as served: greedy critique, then the reward after it (main process; others wait)."""
        acc = self.accelerator
        result = {}
        if acc.is_main_process:
            model = self.model
            was_training = model.training
            model.eval()
            items = [item for r in records for item in response_items(r)]
            scored = critique_and_score(model, items, self.critique)
            wins = [scored[2 * i].score.reward > scored[2 * i + 1].score.reward for i in range(len(records))]
            result = {"eval/generated_acc": sum(wins) / len(wins), "eval/generated_pairs": len(wins)}
            model.train(was_training)
        acc.wait_for_everyone()
        return result


__all__ = ["CritiqueTrainer", "TrainConfig", "with_reasons"]
