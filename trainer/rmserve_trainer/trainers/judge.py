"""Generative judge (GenRM) trainer: SFT on judgment text rendered from preference data.

Each record becomes two judge rows (rmserve_trainer.data.judge): pairwise, the pair in both orders with
the chosen side as the answer; pointwise, each response with its score's choice. The loss is the LM
cross-entropy on the reply tokens only (judgment, answer prefix, answer, end of turn):

    loss = CE(reply tokens)

``acc`` is the answer accuracy read as the server reads it (rmserve.models.judge_format): the next-token
distribution at the answer position restricted to the choices. Evaluation adds the pairwise accuracy with
the server's reward definitions, teacher-forced at the answer position: pairwise judges
``pair_probability(P(A | chosen first), P(B | chosen second)) > 0.5``, pointwise judges
``reward(chosen) > reward(rejected)`` (expectation over the choices' values). For judges that answer at
once (``reasoning: false``) this is exactly what ``/v1/compare`` and ``rmserve-train eval`` compute.

The checkpoint is a plain rmserve checkpoint with no reward head and the ``judge`` section.
"""

from __future__ import annotations

import torch

from rmserve.models.judge_format import JudgeConfig, pair_probability, reward_from_probabilities

from ..data import PairBatch
from ..data.judge import JudgeCollator
from .base import PairTrainer, TrainConfig

PAIRWISE_TEMPLATE = ("Which response answers the question better?\n[Question]\n{prompt}\n[Response A]\n{response_a}\n"
                     "[Response B]\n{response_b}\nAnswer with A or B.")
POINTWISE_TEMPLATE = ("Rate the response to the question from 1 (wrong) to 5 (right).\n[Question]\n{prompt}\n"
                      "[Response]\n{response}")
DEFAULT_JUDGES = {
    "pairwise": {"mode": "pairwise", "template": PAIRWISE_TEMPLATE, "answer_prefix": "Better:",
                 "choices": ["A", "B"], "answer_pattern": r"Better:\s*([AB])"},
    "pointwise": {"mode": "pointwise", "template": POINTWISE_TEMPLATE, "answer_prefix": "Score:",
                  "choices": ["1", "2", "3", "4", "5"], "values": [1, 2, 3, 4, 5],
                  "answer_pattern": r"Score:\s*([1-5])"},
}


class JudgeTrainer(PairTrainer):
    """``fit``, ``evaluate`` (LM loss, answer and pairwise accuracy), ``save_checkpoint`` (+ the judge section)."""

    name = "judge"

    def __init__(self, model, config: TrainConfig, train, eval_records=None, *, judge: JudgeConfig, **kw):
        self.judge = judge
        super().__init__(model, config, train, eval_records, **kw)

    def make_collator(self) -> JudgeCollator:
        return JudgeCollator(self.model, self.judge, skip_bad=self.config.skip_bad)

    def checkpoint_extra(self) -> dict:
        return {"judge": self.judge.to_dict()}

    def _choice_logprobs(self, out: dict) -> torch.Tensor:
        """(2B, C) log p(choice) over the whole vocabulary at each row's answer position."""
        return torch.log_softmax(out["lm_logits_at"].float(), dim=-1)[:, list(self.collator.choice_ids)]

    def compute_loss(self, pb: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.module(pb.batch, lm_labels=pb.lm_labels, paired_images=True, heads=False, lm_at=pb.answer_at)
        loss = out["lm_loss"]
        answers = self._choice_logprobs(out).argmax(-1)
        return loss, {"lm": loss.item(), "acc": (answers == pb.answer).float().mean().item(), "loss": loss.item()}

    def rewards(self, logprobs: torch.Tensor, n_pairs: int) -> tuple[list[float], list[float]]:
        """Per pair, the served rewards of (chosen, rejected): pairwise P(chosen better) and its complement,
        pointwise each response's expected score (rmserve.models.judge_format's definitions)."""
        probs = torch.softmax(logprobs, dim=-1).tolist()  # renormalised over the choices
        first = [reward_from_probabilities(self.judge, p) for p in probs[:n_pairs]]
        second = [reward_from_probabilities(self.judge, p) for p in probs[n_pairs:]]
        if self.judge.mode == "pointwise":
            return first, second
        # Row i shows chosen first (P(A) = P(chosen)); row n + i shows it second (P(B) = 1 - P(A)).
        chosen = [pair_probability(ab, 1.0 - ba) for ab, ba in zip(first, second, strict=True)]
        return chosen, [1.0 - c for c in chosen]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Teacher-forced LM loss, answer accuracy per row, and pairwise accuracy with the served rewards."""
        if self.eval_loader is None:
            return {}
        acc = self.accelerator
        was_training = self.module.training
        self.module.eval()
        lm, answer_hits, chosen, rejected = [], [], [], []
        for pb in self.eval_loader:
            out = self.module(pb.batch, lm_labels=pb.lm_labels, paired_images=True, heads=False, lm_at=pb.answer_at)
            logprobs = self._choice_logprobs(out)
            hits = (logprobs.argmax(-1) == pb.answer).float()
            lm.append(acc.gather(out["lm_loss"].reshape(1)))
            answer_hits.append(acc.gather_for_metrics(torch.stack([pb.chosen(hits), pb.rejected(hits)], dim=1)))
            c, r = self.rewards(logprobs, pb.n_pairs)
            chosen.append(acc.gather_for_metrics(torch.tensor(c, device=acc.device)))
            rejected.append(acc.gather_for_metrics(torch.tensor(r, device=acc.device)))
        chosen, rejected = torch.cat(chosen), torch.cat(rejected)
        result = {
            "eval/lm": torch.cat(lm).mean().item(),
            "eval/answer_acc": torch.cat(answer_hits).mean().item(),
            "eval/acc": (chosen > rejected).float().mean().item(),  # strict: a tie is wrong
            "eval/reward_mean": torch.cat([chosen, rejected]).mean().item(),
            "eval/pairs": len(chosen),
        }
        if was_training:
            self.module.train()
        return result


__all__ = ["DEFAULT_JUDGES", "JudgeTrainer", "TrainConfig"]
