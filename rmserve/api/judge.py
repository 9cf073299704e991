"""Generative judges (GenRM) behind /v1/score, /v1/compare and /v1/rank: the judge path of the pipeline.

    ScoringEndpoint.__call__: select -> validate -> the model is a judge (``judge_setup``) -> the endpoint's
    ``judge`` step: cases (a response, or an ordered pair of responses, and where its errors go)
    -> JudgeRunner.run:
         admit one permit per judgment on the model's engine (Engine.try_admit)
         preprocess in the pool: decode the conversation's images, render the judge template
           (models/judge_format.py), encode it as a user turn with the images (+ the answer prefix
           without reasoning)
         generate on the worker thread (Engine.judge): the judgments join the engine's judge queue and are
           generated in batches shared with other requests' judgments (engine/judging.py: max_batch_size,
           the token budget, max_wait_ms for company); an expired deadline fails the request; a batch that
           raises is bisected so only the failing judgment fails
         read each judgment (judge_format.read_judgment), aggregate the votes per case
    -> the endpoint builds its response from the cases' rewards (the same build as scalar models).

Votes: ``voting.k`` sampled judgments per case; vote j of every case uses the seed (seed, j), so a case's
judgments do not depend on its neighbours or its position in the request. An unreadable judgment fails the
request as any item error does (422 ``judge_unparseable`` naming the item), never a reward of 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rmserve.api.models import Member, Selection
from rmserve.api.protocol import JudgmentOut, VotingSpec
from rmserve.api.scoring import Job, Scored
from rmserve.errors import BackendError, InvalidInput, Loc, RMServeError
from rmserve.models.judge_format import JudgeConfig, Verdict, aggregate, judge_prompt, read_judgment, vote_seed
from rmserve.models.types import JudgeDecoding, JudgePrompt, Judgment, ScoreItem, ScoreOutput


@dataclass
class JudgeSetup:
    """A selected judge: its checkpoint's section, its decoding and where it runs."""

    config: JudgeConfig
    decoding: JudgeDecoding
    member: Member


def judge_setup(selection: Selection) -> JudgeSetup | None:
    """The selection's judge, or None for scalar reward models; judges are never ensemble members."""
    judges = [m for m in selection.members if m.model.judge_decoding() is not None]
    if not judges:
        return None
    if selection.is_ensemble:
        raise InvalidInput(f"ensemble {selection.name!r} includes the generative judge {judges[0].name!r}; a judge "
                           "is served on its own (name it as `model`)", param="model", code="judge_in_ensemble")
    member = judges[0]
    config = JudgeConfig.of(member.model.extra_config)
    assert config is not None  # judge_decoding() is None without a judge section
    return JudgeSetup(config, member.model.judge_decoding(), member)


@dataclass
class JudgeCase:
    """One thing to judge: ``shown`` responses (one, or a pair in the order shown) to ``job``'s conversation."""

    job: Job
    shown: tuple[str, ...]
    about: tuple[int, ...] = ()
    where: Loc = ()  # where its errors go in the request


@dataclass
class CaseResult:
    reward: float  # the votes aggregated: pointwise score, or pairwise P(first shown better)
    verdicts: list[Verdict]


@dataclass
class Judged:
    results: list[CaseResult]
    scored: Scored  # timings and tokens, for the usage block and timing headers
    choices: tuple[str, ...]
    about: list[tuple[int, ...]]

    def outputs(self) -> list[ScoreOutput]:
        return [ScoreOutput(reward=r.reward) for r in self.results]

    def judgments(self, index: int) -> list[JudgmentOut]:
        """Case ``index``'s judgments as returned with ``return_judgment``."""
        return [JudgmentOut(text=v.text, answer=self.choices[v.answer], reward=v.reward, source=v.source,
                            about=list(self.about[index]))
                for v in self.results[index].verdicts]


def check_voting(voting: VotingSpec | None, limit: int) -> None:
    if voting is not None and voting.k > limit:
        raise InvalidInput(f"voting.k is {voting.k}, over this server's limit of {limit} judgments per item "
                           "(--max-judge-votes)", param=("voting", "k"), code="too_many_votes")


def not_a_judge(selection: Selection, voting: VotingSpec | None, return_judgment: bool) -> None:
    """``voting`` / ``return_judgment`` are judge options: a scalar model refuses them rather than ignore them."""
    asked = "voting" if voting is not None else "return_judgment" if return_judgment else None
    if asked:
        raise InvalidInput(f"`{asked}` is for generative judges; model {selection.name!r} is a scalar reward model",
                           param=asked, code="not_a_judge")


class JudgeRunner:
    def __init__(self, scorer, max_votes: int):
        self.scorer = scorer  # api.scoring.Scorer: loads a job's conversation and images
        self.max_votes = max_votes

    async def run(self, setup: JudgeSetup, cases: Sequence[JudgeCase], *, voting: VotingSpec | None,
                  deadline: float | None, shared_images: Sequence = ()) -> Judged:
        start = time.monotonic()
        check_voting(voting, self.max_votes)
        engine = setup.member.engine
        votes = voting.k if voting is not None else 1
        n = len(cases) * votes
        with engine.try_admit(n) as permit:
            if shared_images:
                decoded = await self.scorer.load_images(shared_images, lambda loc: loc)
                for case in cases:
                    case.job.images = decoded
            prompts = await self._prepare(setup, cases, voting)
            preprocessed = time.monotonic()
            generated = await engine.judge(permit, prompts, setup.decoding, deadline=deadline)
        judgments = generated.outputs
        done = time.monotonic()
        results = []
        for c, case in enumerate(cases):
            verdicts = []
            for outcome in judgments[c * votes:(c + 1) * votes]:
                if isinstance(outcome, RMServeError):  # about the model itself, or about this case
                    raise outcome if outcome.loc == ("model",) else outcome.relocated((*case.where, *outcome.loc))
                try:
                    verdicts.append(read_judgment(setup.config, outcome))
                except RMServeError as exc:
                    raise exc.relocated(case.where) from None
                except ValueError as exc:  # non-finite log-probabilities
                    raise BackendError(f"the judge produced unusable answer probabilities: {exc}",
                                       param=case.where, code="non_finite_score") from None
            reward = aggregate(setup.config, verdicts, voting.aggregate if voting else "mean")
            results.append(CaseResult(reward, verdicts))
        tokens = sum(len(p.prompt_ids) for p in prompts) + sum(
            j.completion_tokens for j in judgments if isinstance(j, Judgment))
        scored = Scored(outputs=[], model_rewards=None, num_tokens=tokens, preprocess_s=preprocessed - start,
                        queue_s=generated.queue_s, inference_s=generated.inference_s, total_s=done - start)
        return Judged(results, scored, setup.config.choices, [c.about for c in cases])

    async def _prepare(self, setup: JudgeSetup, cases: Sequence[JudgeCase],
                       voting: VotingSpec | None) -> list[JudgePrompt]:
        pool = setup.member.engine
        loaded: dict[int, ScoreItem] = {}
        for case in cases:  # one decode per conversation (a compare's pairs share theirs)
            if id(case.job) not in loaded:
                loaded[id(case.job)] = await pool.run_in_pool(self.scorer.load_item, case.job)
        encoded = await asyncio.gather(*(pool.run_in_pool(_encode, setup, case, loaded[id(case.job)])
                                         for case in cases))
        if voting is None:
            return list(encoded)
        return [JudgePrompt(p.prompt_ids, p.vision, p.images, p.image_keys, seed=vote_seed(voting.seed, j),
                            temperature=voting.temperature)
                for p in encoded for j in range(voting.k)]


def _encode(setup: JudgeSetup, case: JudgeCase, item: ScoreItem) -> JudgePrompt:
    """The judge's prompt for ``case`` (pool thread), its errors at the case's place in the request."""
    try:
        return judge_prompt(setup.member.model, setup.config, setup.decoding, item, case.shown)
    except RMServeError as exc:
        raise exc.relocated((*case.where, *exc.loc)) from None


__all__ = ["CaseResult", "JudgeCase", "JudgeRunner", "JudgeSetup", "Judged", "check_voting", "judge_setup",
           "not_a_judge"]
