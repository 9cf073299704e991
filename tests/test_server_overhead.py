"""Per-request overhead rules: a lone batch is not held back, company on its way is waited for, and
``rmserve serve``'s start-up objects are frozen out of the garbage collector (and thawed at shutdown)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from rmserve.config import ServerConfig
from rmserve.server import create_app
from tests.conftest import item, running_engine
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client

pytestmark = pytest.mark.asyncio


async def test_a_lone_request_does_not_wait_for_company_that_is_not_coming():
    model = FakeRewardModel()
    with running_engine(model, max_batch_size=32, max_wait_ms=2000) as engine:
        start = time.monotonic()
        result = await engine.score_items([model.encode(item("alone"))])
        waited = time.monotonic() - start
    assert result.outputs[0].reward == model.expected(item("alone")).reward
    assert waited < 1.0  # not the 2 s max_wait: nothing else was admitted


async def test_an_item_still_preprocessing_is_waited_for_and_joins_the_batch():
    model = FakeRewardModel()
    with running_engine(model, max_batch_size=32, max_wait_ms=2000) as engine:
        later = engine.try_admit(1)  # admitted, still "preprocessing": the batch should wait for it
        first = asyncio.ensure_future(engine.score_items([model.encode(item("first"))]))
        await asyncio.sleep(0.2)
        assert not first.done()  # held for the admitted item, within max_wait
        second = await engine.score(later, [model.encode(item("second one"))])
        await first
        later.release()
    assert second.outputs[0].reward == model.expected(item("second one")).reward
    assert model.batches == [[model.encode(item("first")).num_tokens, model.encode(item("second one")).num_tokens]]


async def test_an_admitted_item_that_never_arrives_stops_holding_the_batch():
    model = FakeRewardModel()
    with running_engine(model, max_batch_size=32, max_wait_ms=5000) as engine:
        failed = engine.try_admit(1)
        first = asyncio.ensure_future(engine.score_items([model.encode(item("first"))]))
        await asyncio.sleep(0.1)
        failed.release()  # its preprocessing failed: nothing is on its way any more
        start = time.monotonic()
        await asyncio.wait_for(first, 2.0)
    assert time.monotonic() - start < 2.0


async def test_serve_freezes_start_up_objects_and_shutdown_thaws_them():
    assert gc.get_freeze_count() == 0
    app = create_app(ServerConfig(max_wait_ms=1.0), model=FakeRewardModel(), freeze_gc=True)
    async with asgi_client(app) as client:
        assert (await client.post("/v1/score", json={"items": [{"prompt": "p", "response": "r"}]})).status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_apps_do_not_freeze_unless_asked():
    app = create_app(ServerConfig(max_wait_ms=1.0), model=FakeRewardModel())
    async with asgi_client(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        assert gc.get_freeze_count() == 0


async def test_a_request_the_server_is_still_reading_counts_as_company():
    model = FakeRewardModel()
    with running_engine(model, max_batch_size=32, max_wait_ms=2000) as engine:
        engine.requests_in_progress = lambda: 2  # this request and one the transport has not parsed yet
        first = asyncio.ensure_future(engine.score_items([model.encode(item("first"))]))
        await asyncio.sleep(0.2)
        assert not first.done()  # held within max_wait for the request on its way
        engine.requests_in_progress = lambda: 1  # it turned out to be something else (a probe, say)
        await asyncio.sleep(0)
        await asyncio.wait_for(first, 5.0)
