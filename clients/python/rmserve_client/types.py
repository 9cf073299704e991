"""Typed results (frozen dataclasses), parsed from the REST JSON shapes (gRPC answers are converted to
those shapes first, so both transports give identical objects).

Inputs are plain: an item is a dict in the REST shape, ``{"prompt" | "messages", "response",
"images"?, "group"?, "truncate"?, "id"?}``, where images may be PIL images, bytes, file paths,
``data:`` URLs or ``{"sha256": ...}`` references.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmserve_client.exceptions import RMServeError


def _floats(value: Any) -> dict[str, float] | None:
    if not value:
        return None
    return {str(k): float(v) for k, v in value.items()}


@dataclass(frozen=True)
class SafetyResult:
    """Per-category hazard probabilities and what the server's safety policy made of them. From
    ``safety()``, ``reward`` / ``raw_reward`` are the reward after and before the policy's action."""

    categories: dict[str, float]
    flagged: bool | None = None
    action: str | None = None  # none | flag | penalize | replace | reject
    flagged_categories: tuple[str, ...] = ()
    reward: float | None = None
    raw_reward: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SafetyResult:
        reward, raw = data.get("reward"), data.get("raw_reward")
        flagged = data.get("flagged")
        return cls(
            categories=_floats(data.get("categories")) or {},
            flagged=bool(flagged) if flagged is not None else None,
            action=data.get("action") or None,
            flagged_categories=tuple(data.get("flagged_categories") or ()),
            reward=float(reward) if reward is not None else None,
            raw_reward=float(raw) if raw is not None else None,
        )


@dataclass(frozen=True)
class Voting:
    """Generative judges: ``k`` sampled judgments instead of one greedy one, aggregated by ``aggregate``
    (``mean`` of the votes' rewards, or ``majority``: the most frequent answer's reward); vote j is sampled
    with the seed (``seed``, j), so the same seed gives the same judgments. A dict with these keys works too."""

    k: int
    aggregate: str = "mean"
    seed: int = 0
    temperature: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "aggregate": self.aggregate, "seed": self.seed, "temperature": self.temperature}


@dataclass(frozen=True)
class Judgment:
    """One judgment a generative judge wrote (``return_judgment=True``): its ``text`` (empty for a judge that
    answers at once), the ``answer`` read, its ``reward`` (pointwise score, or pairwise P(first shown better)),
    ``source`` (``probabilities`` or ``parsed``) and, for compare/rank, ``about``: the responses judged, in the
    order shown."""

    text: str
    answer: str
    reward: float
    source: str
    about: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Judgment:
        return cls(text=str(data.get("text") or ""), answer=str(data.get("answer") or ""),
                   reward=float(data["reward"]), source=str(data.get("source") or ""),
                   about=tuple(int(i) for i in data.get("about") or ()))


def judgments(data: Mapping[str, Any]) -> tuple[Judgment, ...]:
    return tuple(Judgment.from_json(j) for j in data.get("judgments") or ())


@dataclass(frozen=True)
class ScoreResult:
    """One item's outputs.

    ``raw_reward``: the model's own reward when a verifier or the safety policy changed ``reward``
    (else None). ``safety``: present when requested (``returns=["safety"]``) or when the policy ran.
    ``verified``: with a verifier, whether the response matched the ground truth. ``model_rewards``:
    per member model, for an ensemble. ``id`` and ``error`` are set by ``score_stream`` (a failed
    item there has ``error`` set and ``reward`` NaN, instead of raising). ``judgments``: a generative
    judge's judgments behind the reward, with ``return_judgment=True``."""

    reward: float
    raw_reward: float | None = None
    attributes: dict[str, float] | None = None
    safety: SafetyResult | None = None
    verified: bool | None = None
    model_rewards: dict[str, float] | None = None
    id: str | None = None
    error: RMServeError | None = None
    judgments: tuple[Judgment, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, id: str | None = None) -> ScoreResult:
        raw = data.get("raw_reward")
        safety = None
        if data.get("safety") or data.get("flagged") is not None or data.get("safety_action"):
            flagged = data.get("flagged")
            safety = SafetyResult(
                categories=_floats(data.get("safety")) or {},
                flagged=bool(flagged) if flagged is not None else None,
                action=data.get("safety_action") or None,
                flagged_categories=tuple(data.get("flagged_categories") or ()),
            )
        verified = data.get("verified")
        return cls(
            reward=float(data["reward"]),
            raw_reward=float(raw) if raw is not None else None,
            attributes=_floats(data.get("attributes")),
            safety=safety,
            verified=bool(verified) if verified is not None else None,
            model_rewards=_floats(data.get("model_rewards")),
            id=id,
            judgments=judgments(data),
        )


@dataclass(frozen=True)
class CompareResult:
    """Pairwise preference: ``prob_a_better`` = sigmoid(reward_a - reward_b), ``margin`` = reward_a - reward_b,
    and MM-DPO's dynamic ``beta`` = beta0 * (1 + w * (1 - exp(-k * |margin|))).

    A pairwise generative judge gives no per-response rewards (``reward_a``, ``reward_b``, ``margin``, ``beta``
    are None): ``prob_a_better`` is the mean of ``prob_a_better_ab`` (a shown first) and ``prob_a_better_ba``
    (P(a better) with b shown first); ``judgments`` (``return_judgment=True``) say which order each judged."""

    reward_a: float | None
    reward_b: float | None
    prob_a_better: float
    margin: float | None
    beta: float | None = None
    model: str | None = None
    prob_a_better_ab: float | None = None
    prob_a_better_ba: float | None = None
    judgments: tuple[Judgment, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompareResult:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if value is not None else None

        a, b = number("reward_a"), number("reward_b")
        margin = number("margin")
        if margin is None and a is not None and b is not None:
            margin = a - b
        return cls(
            reward_a=a,
            reward_b=b,
            prob_a_better=float(data["prob_a_better"]),
            margin=margin,
            beta=number("beta"),
            model=data.get("model") or None,
            prob_a_better_ab=number("prob_a_better_ab"),
            prob_a_better_ba=number("prob_a_better_ba"),
            judgments=judgments(data),
        )


@dataclass(frozen=True)
class RankedResponse:
    index: int  # position in the request's responses
    reward: float


@dataclass(frozen=True)
class RankResult:
    """Responses best first, plus a DPO pair (chosen, rejected); ``rejected_index`` None if no pair met min_margin."""

    ranking: tuple[RankedResponse, ...]
    chosen_index: int | None
    rejected_index: int | None
    margin: float | None = None  # chosen reward - rejected reward
    judgments: tuple[Judgment, ...] = ()  # a generative judge's, with return_judgment=True

    @property
    def rewards(self) -> dict[int, float]:
        """Reward by response index (only the ranked ones, with top_k)."""
        return {entry.index: entry.reward for entry in self.ranking}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RankResult:
        ranking = tuple(RankedResponse(int(r["index"]), float(r["reward"])) for r in data.get("ranking") or ())

        def index(key: str) -> int | None:
            value = data.get(key)
            return None if value is None or int(value) < 0 else int(value)

        margin = data.get("margin")
        return cls(
            ranking=ranking,
            chosen_index=index("chosen_index"),
            rejected_index=index("rejected_index"),
            margin=float(margin) if margin is not None else None,
            judgments=judgments(data),
        )


@dataclass(frozen=True)
class CritiqueResult:
    critique: str
    reward: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CritiqueResult:
        return cls(critique=str(data.get("critique", "")), reward=float(data["reward"]))


@dataclass(frozen=True)
class CritiqueChunk:
    """A piece of a streamed critique (``text``); the last has ``done``, the whole ``critique`` and the ``reward``."""

    text: str
    done: bool = False
    critique: str | None = None
    reward: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CritiqueChunk:
        reward = data.get("reward")
        return cls(
            text=str(data.get("delta") or ""),
            done=bool(data.get("done", False)),
            critique=data.get("critique"),
            reward=float(reward) if reward is not None else None,
        )


@dataclass(frozen=True)
class UploadResult:
    sha256: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadResult:
        w, h, n = data.get("width"), data.get("height"), data.get("bytes")
        return cls(
            sha256=str(data["sha256"]),
            width=int(w) if w else None,
            height=int(h) if h else None,
            bytes=int(n) if n else None,
        )
