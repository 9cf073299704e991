"""Score with a generative judge (GenRM) in process: rmserve's own judge path, so the numbers are the server's.

``rmserve.models.judge`` ``compare_pairs`` / ``judge_cases`` run what ``/v1/compare`` and ``/v1/score`` run for a
judge (the judge prompt, the judgments, reading them, both orders of a pair; models/judge_format.py's
definitions), without a server; this module only adapts them to the scorer interface ``eval`` uses.

    scorer = LocalJudgeScorer.from_path("runs/judge")
    scorer.compare([(chosen_item, rejected_item)])   # pairwise judge: [P(chosen better)] (both orders, mean)
    scorer.score([item])                              # pointwise judge: [expected score]
"""

from __future__ import annotations

from rmserve.errors import RMServeError
from rmserve.models import ScoreItem, load_reward_model
from rmserve.models.judge import compare_pairs, judge_cases
from rmserve.models.judge_format import JudgeConfig


class LocalJudgeScorer:
    """``score`` (pointwise judges) and ``compare`` (pairwise judges); ``pairwise`` says which one measures this
    judge. Like the other scorers, an item (or pair) that cannot be judged is None, its reason in ``errors``."""

    def __init__(self, model, *, batch_size: int = 16):
        config = JudgeConfig.of(model.extra_config)
        if config is None:
            raise ValueError(f"{model.name} has no judge section: score it with LocalScorer")
        self.model = model
        self.name = model.name
        self.pairwise = config.mode == "pairwise"
        self.batch_size = batch_size
        self.errors: dict[int, str] = {}

    @classmethod
    def from_path(cls, path: str, *, device: str = "cpu", dtype: str = "float32",
                  batch_size: int = 16) -> LocalJudgeScorer:
        return cls(load_reward_model(path, device=device, dtype=dtype), batch_size=batch_size)

    def score(self, items: list[ScoreItem]) -> list[float | None]:
        """Each item's reward as ``/v1/score`` gives it (pointwise judges)."""
        cases = [(_conversation(item), (item.response,)) for item in items]
        return self._run(lambda part: judge_cases(self.model, part, batch_size=self.batch_size), cases)

    def compare(self, pairs: list[tuple[ScoreItem, ScoreItem]]) -> list[float | None]:
        """``prob_a_better`` of ``/v1/compare`` per (first, second) pair: P(first better), both orders averaged."""
        cases = [(_conversation(a), a.response, b.response) for a, b in pairs]

        def run(part):
            return [r if isinstance(r, RMServeError) else r.prob_a_better
                    for r in compare_pairs(self.model, part, batch_size=self.batch_size)]

        return self._run(run, cases)

    def _run(self, judge, cases: list) -> list[float | None]:
        """``judge`` over ``cases`` in chunks; a chunk that raises (e.g. one prompt over the length limit) is
        judged case by case, so one bad case costs only itself."""
        self.errors = {}
        out: list[float | None] = [None] * len(cases)
        step = max(1, self.batch_size)
        for start in range(0, len(cases), step):
            rows = list(range(start, min(start + step, len(cases))))
            try:
                results = list(zip(rows, judge([cases[i] for i in rows]), strict=True))
            except RMServeError:
                results = []
                for i in rows:
                    try:
                        results.append((i, judge([cases[i]])[0]))
                    except RMServeError as e:
                        results.append((i, e))
            for i, result in results:
                if isinstance(result, RMServeError):
                    self.errors[i] = result.message
                else:
                    out[i] = float(result)
        return out


def _conversation(item: ScoreItem) -> ScoreItem:
    """The item's conversation (its response is what the judge is shown, not part of it)."""
    return ScoreItem(response="", prompt=item.prompt, messages=item.messages, images=item.images,
                     videos=item.videos, truncate=item.truncate)


__all__ = ["LocalJudgeScorer"]
