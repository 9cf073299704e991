"""The models a server holds, and which of them a request means.

One engine per loaded model (each model has its own worker thread and batches). A request names a
model, the ensemble, or nothing (the default: the ensemble when one is configured, else the only
model). The ensemble scores an item with every member and combines the rewards
(``rmserve.rewards.combine_rewards``); attribute and safety outputs come from the first member
(in configuration order) that has the head, since category probabilities of different heads are
not comparable enough to average.

A name also matches a model's directory (its path, or the path's last component), because
compat clients (veRL, OpenRLHF) send the path they were configured with as the model name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rmserve.engine import Engine
from rmserve.errors import InvalidInput
from rmserve.models.types import ModelInfo
from rmserve.rewards import ENSEMBLE_METHODS, check_weights, combine_rewards


@dataclass(frozen=True)
class Member:
    name: str
    engine: Engine
    weight: float = 1.0

    @property
    def info(self) -> ModelInfo:
        return self.engine.model.info

    @property
    def model(self):
        return self.engine.model


@dataclass(frozen=True)
class Selection:
    """What a request resolved to: one model, or an ensemble of several."""

    name: str
    members: tuple[Member, ...]
    method: str = "single"  # single | mean | weighted_mean

    @property
    def is_ensemble(self) -> bool:
        return self.method != "single"

    @property
    def primary(self) -> Member:
        return self.members[0]

    def combine(self, rewards: Sequence[float]) -> float:
        if not self.is_ensemble:
            return rewards[0]
        return combine_rewards(rewards, self.method, [m.weight for m in self.members])

    def first_with(self, head: str) -> Member | None:
        return next((m for m in self.members if head in m.info.heads), None)

    @property
    def heads(self) -> list[str]:
        seen: dict[str, None] = {}
        for member in self.members:
            seen.update(dict.fromkeys(member.info.heads))
        return list(seen)

    @property
    def multimodal(self) -> bool:
        return all(m.info.multimodal for m in self.members)


@dataclass(frozen=True)
class EnsembleSpec:
    name: str = "ensemble"
    method: str = "mean"
    weights: tuple[float, ...] | None = None  # one per model, in load order; None: equal

    def __post_init__(self) -> None:
        if self.method not in ENSEMBLE_METHODS:
            raise ValueError(f"ensemble method {self.method!r} is not one of {', '.join(ENSEMBLE_METHODS)}")


class ModelSet:
    """The served models by name (load order kept), plus the optional ensemble over all of them."""

    def __init__(self, engines: Mapping[str, Engine], *, ensemble: EnsembleSpec | None = None,
                 aliases: Sequence[str] = ()):
        """``aliases``: more names for the default selection (``--served-model-name``)."""
        if not engines:
            raise ValueError("a ModelSet needs at least one model")
        self.engines = dict(engines)
        self.ensemble_spec = ensemble if ensemble is not None and len(self.engines) > 1 else None
        names = list(self.engines)
        if self.ensemble_spec is not None:
            if self.ensemble_spec.name in self.engines:
                raise ValueError(f"the ensemble name {self.ensemble_spec.name!r} is also a model's name")
            weights = self.ensemble_spec.weights or (1.0,) * len(names)
            weights = check_weights(weights, len(names))
            members = tuple(Member(n, self.engines[n], w) for n, w in zip(names, weights, strict=True))
            self.ensemble: Selection | None = Selection(self.ensemble_spec.name, members, self.ensemble_spec.method)
        else:
            self.ensemble = None
        self._singles = {n: Selection(n, (Member(n, e),)) for n, e in self.engines.items()}
        self.aliases = tuple(a for a in dict.fromkeys(aliases) if a not in self.served_names(with_aliases=False))

    @classmethod
    def single(cls, engine: Engine) -> ModelSet:
        return cls({engine.model.info.name: engine})

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    @property
    def primary(self) -> Engine:
        return next(iter(self.engines.values()))

    @property
    def default(self) -> Selection:
        return self.ensemble or next(iter(self._singles.values()))

    def served_names(self, *, with_aliases: bool = True) -> list[str]:
        names = self.names + ([self.ensemble.name] if self.ensemble else [])
        return names + list(self.aliases) if with_aliases else names

    def resolve(self, name: str | None, *, param: str = "model") -> Selection:
        """The selection a request's ``model`` field means; InvalidInput (model_not_found) if none."""
        if name is None or name == "":
            return self.default
        if self.ensemble is not None and name == self.ensemble.name:
            return self.ensemble
        if name in self._singles:
            return self._singles[name]
        if name in self.aliases:
            return self.default
        wanted = os.path.normpath(name)
        for key, selection in self._singles.items():
            path = os.path.normpath(selection.primary.info.path or ".")
            if path not in (".", "<memory>") and wanted in (path, os.path.basename(path)):
                return self._singles[key]
        raise InvalidInput(
            f"model {name!r} is not served here; this server serves {', '.join(map(repr, self.served_names()))}",
            param=param,
            code="model_not_found",
        )

    def capable(self, name: str | None, check, *, lacks: str, code: str, param: str = "model") -> Selection:
        """One model that passes ``check(member)``: the named model (InvalidInput if it fails the check),
        or, when no single model is named, the first member of the default/named ensemble that passes.
        ``lacks`` completes "model 'x' ..." in the error, e.g. "has no safety head"."""
        selection = self.resolve(name, param=param)
        for member in selection.members:
            if check(member):
                return self._singles[member.name]
        who = ", ".join(repr(m.name) for m in selection.members)
        raise InvalidInput(f"model {who} {lacks}", param=param, code=code)


__all__ = ["EnsembleSpec", "Member", "ModelSet", "Selection"]
