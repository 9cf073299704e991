"""Ensembles: several models, one engine each; score fans out and combines (mean / weighted mean);
requests pick one model by name or the ensemble (the default); /v1/models lists them all."""

from __future__ import annotations

import threading

import pytest

from rmserve import cli
from rmserve.api import EnsembleSpec, ModelSet, ScoreRequest, ScoreService
from rmserve.config import ServerConfig, load_config
from rmserve.errors import InvalidInput, Overloaded
from rmserve.server import create_app
from tests.conftest import item, running_engine
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client


class OffsetModel(FakeRewardModel):
    """The fake model with its rewards shifted, so ensemble members disagree."""

    def __init__(self, offset: float, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset

    def score_alone(self, item, text=None):
        out = super().score_alone(item, text)
        out.reward += self.offset
        return out


ITEMS = [{"prompt": "What is 2+2?", "response": "4"}, {"prompt": "Name a colour.", "response": "Red."}]


def _rewards(model, items=ITEMS):
    return [model.expected(item(i["response"], prompt=i["prompt"])).reward for i in items]


async def test_ensemble_mean_weighted_mean_and_single_members():
    a, b = OffsetModel(0.0, name="rm-a"), OffsetModel(3.0, name="rm-b", heads=("reward", "safety"))
    with running_engine(a, max_wait_ms=1) as ea, running_engine(b, max_wait_ms=1) as eb:
        mean = ScoreService(ModelSet({"rm-a": ea, "rm-b": eb}, ensemble=EnsembleSpec()))
        spec = EnsembleSpec("ens", "weighted_mean", (3, 1))
        weighted = ScoreService(ModelSet({"rm-a": ea, "rm-b": eb}, ensemble=spec))
        by_default = (await mean.score(ScoreRequest.model_validate({"items": ITEMS}))).response
        by_weight = (await weighted.score(ScoreRequest.model_validate({"items": ITEMS, "model": "ens"}))).response
        only_b = (await mean.score(ScoreRequest.model_validate({"items": ITEMS, "model": "rm-b"}))).response
        with_safety = (
            await mean.score(ScoreRequest.model_validate({"items": ITEMS, "return": ["reward", "safety"]}))
        ).response
    ra, rb = _rewards(a), _rewards(b)
    assert by_default.model == "ensemble"
    assert [o.reward for o in by_default.items] == pytest.approx([(x + y) / 2 for x, y in zip(ra, rb, strict=True)])
    assert by_default.items[0].model_rewards == {"rm-a": ra[0], "rm-b": rb[0]}
    assert [o.reward for o in by_weight.items] == pytest.approx([(3 * x + y) / 4 for x, y in zip(ra, rb, strict=True)])
    assert only_b.model == "rm-b" and [o.reward for o in only_b.items] == rb and only_b.items[0].model_rewards is None
    # safety comes from the member that has the head; the reward is still the ensemble's
    assert with_safety.items[0].safety == b.expected(item("4", prompt="What is 2+2?")).safety
    assert by_default.usage.prompt_tokens == only_b.usage.prompt_tokens * 2  # both members scored everything


async def test_member_errors_name_the_item_and_the_model_and_release_admission():
    short, long = OffsetModel(0.0, name="short", max_length=64), OffsetModel(1.0, name="long", max_length=512)
    gate = threading.Event()
    blocked = OffsetModel(0.0, name="blocked", forward_gate=gate)
    with (
        running_engine(short, max_wait_ms=1) as es,
        running_engine(long, max_wait_ms=1) as el,
        running_engine(blocked, max_wait_ms=0, max_queue_items=1) as eb,
    ):
        service = ScoreService(ModelSet({"short": es, "long": el}, ensemble=EnsembleSpec()))
        request = ScoreRequest.model_validate({"items": [ITEMS[0], {"prompt": "p" * 100, "response": "ok"}]})
        with pytest.raises(InvalidInput) as info:
            await service.score(request)
        assert (info.value.param, info.value.code) == ("items.1.prompt", "too_long")
        assert "'short'" in info.value.message
        assert es.snapshot().in_flight == el.snapshot().in_flight == 0

        # a full member refuses the whole request; the other member's reservation is given back
        busy = ScoreService(ModelSet({"long": el, "blocked": eb}, ensemble=EnsembleSpec()))
        holder = eb.try_admit(1)
        with pytest.raises(Overloaded):
            await busy.score(ScoreRequest.model_validate({"items": [ITEMS[0]]}))
        assert el.snapshot().in_flight == 0
        holder.release()
        gate.set()


async def test_rest_lists_models_and_ensemble_and_picks_by_name():
    a, b = OffsetModel(0.0, name="rm-a"), OffsetModel(2.0, name="rm-b")
    config = ServerConfig(max_wait_ms=1, ensemble="weighted_mean", ensemble_weights="1,3", ensemble_name="combo")
    async with asgi_client(create_app(config, models=[a, b])) as client:
        cards = (await client.get("/v1/models")).json()["data"]
        default = (await client.post("/v1/score", json={"items": ITEMS[:1]})).json()
        single = (await client.post("/v1/score", json={"items": ITEMS[:1], "model": "rm-a"})).json()
        rank = (await client.post("/v1/rank", json={"prompt": "q", "responses": ["x", "y"], "model": "combo"})).json()
        missing = await client.post("/v1/score", json={"items": ITEMS[:1], "model": "rm-c"})
        ready = (await client.get("/readyz")).json()
    assert [c["id"] for c in cards] == ["rm-a", "rm-b", "combo"]
    assert [c["default"] for c in cards] == [False, False, True]
    assert cards[2]["members"] == ["rm-a", "rm-b"] and cards[2]["weights"] == [1.0, 3.0]
    assert cards[2]["family"] == "ensemble" and cards[2]["ensemble_method"] == "weighted_mean"
    ra, rb = _rewards(a, ITEMS[:1])[0], _rewards(b, ITEMS[:1])[0]
    assert default["model"] == "combo" and default["items"][0]["reward"] == pytest.approx((ra + 3 * rb) / 4)
    assert default["items"][0]["model_rewards"] == {"rm-a": ra, "rm-b": rb}
    assert single["model"] == "rm-a" and single["items"][0] == {"reward": ra}
    assert rank["model"] == "combo"
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "model_not_found"
    assert "'combo'" in missing.json()["error"]["message"] and ready["model"] == "combo"


async def test_models_from_flags_env_and_yaml_are_loaded_once_each(tmp_path, monkeypatch):
    loaded = []

    def factory(config):
        loaded.append(config.model)
        return OffsetModel(len(loaded), name="same-name")  # both checkpoints carry the same name

    config = ServerConfig(model="/m/a,judge=/m/b", max_wait_ms=1)
    assert config.model_specs() == [(None, "/m/a"), ("judge", "/m/b")]
    async with asgi_client(create_app(config, model_factory=factory)) as client:
        cards = (await client.get("/v1/models")).json()["data"]
    assert loaded == ["/m/a", "/m/b"]
    assert [c["id"] for c in cards] == ["same-name", "judge", "ensemble"]

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: [/m/x, /m/y]\nensemble: weighted_mean\nensemble_weights: '2,1'\n")
    assert load_config(env={}, yaml_path=str(yaml_file)).model_specs() == [(None, "/m/x"), (None, "/m/y")]
    assert load_config(env={"RMSERVE_MODEL": "/m/x, /m/y"}).model_specs() == [(None, "/m/x"), (None, "/m/y")]

    captured = {}
    monkeypatch.setattr("rmserve.server.shutdown.serve", lambda app, config: captured.update(app=app) or 0)
    assert cli.main(["serve", "--model", "/m/a", "--model", "b=/m/b", "--ensemble", "mean"]) == 0
    assert captured["app"].state.rmserve.config.model == "/m/a,b=/m/b"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ensemble": "median"}, "ensemble must be one of"),
        ({"model": "/a,/b", "ensemble_weights": "1"}, "1 ensemble weights for 2 models"),
        ({"model": "/a,/b", "ensemble_weights": "1,x"}, "ensemble_weights"),
        ({"model": "x=/a,x=/b"}, "must be unique"),
        ({"model": "ensemble=/a,/b"}, "differ from --ensemble-name"),
    ],
)
def test_bad_ensemble_settings_fail_at_startup(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)
