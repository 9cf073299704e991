"""Which thread runs the model's torch work: the load on a thread that ends, warm-up and every forward on the
engine's worker (why: ``Engine.start`` and ``run_in_passing_thread``'s docstrings, bench/README.md "One
OpenMP team")."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rmserve.config import ServerConfig
from rmserve.engine import Engine, EngineConfig
from rmserve.server import create_app
from rmserve.server.loading import run_in_passing_thread
from tests.conftest import item
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client


class ThreadRecordingModel(FakeRewardModel):
    """Records the thread of every warm-up and forward."""

    def __init__(self, *, fail_warmup: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.fail_warmup = fail_warmup
        self.warmup_threads: list[threading.Thread] = []
        self.forward_threads: list[threading.Thread] = []

    def warmup(self) -> None:
        self.warmup_threads.append(threading.current_thread())
        if self.fail_warmup:
            raise RuntimeError("CUDA out of memory during warm-up")
        super().warmup()

    def score_batch(self, batch):
        self.forward_threads.append(threading.current_thread())
        return super().score_batch(batch)


async def test_warmup_runs_on_the_worker_that_runs_every_forward():
    model = ThreadRecordingModel()
    engine = Engine(model, EngineConfig(max_wait_ms=1))
    engine.start()
    try:
        assert model.warmed_up  # start() returned after the warm-up, not before
        results = await asyncio.gather(*(engine.score_items([model.encode(item(f"r{i}"))]) for i in range(6)))
        assert [r.outputs[0].reward for r in results] == [model.expected(item(f"r{i}")).reward for i in range(6)]
    finally:
        engine.stop(drain=False, timeout=5)
    threads = set(model.warmup_threads + model.forward_threads)
    assert len(threads) == 1 and threads != {threading.current_thread()}
    assert threads.pop().name == "rmserve-worker"


def test_a_failed_warmup_fails_start_and_leaves_nothing_running():
    model = ThreadRecordingModel(fail_warmup=True)
    engine = Engine(model, EngineConfig())
    with pytest.raises(RuntimeError, match="out of memory during warm-up"):
        engine.start()
    assert not model.warmup_threads[0].is_alive()
    assert not engine.accepting and engine.health().healthy  # not started: nothing to restart
    model.fail_warmup = False  # the failure is not sticky: a retry starts normally
    engine.start()
    try:
        assert engine.accepting and engine.health().accepting and model.warmed_up
    finally:
        engine.stop(drain=False, timeout=5)


def test_run_in_passing_thread_returns_or_raises_and_its_thread_has_ended():
    seen: list[threading.Thread] = []

    def load(x: int) -> int:
        seen.append(threading.current_thread())
        if x < 0:
            raise ValueError(f"no checkpoint at {x}")
        return x * 2

    assert run_in_passing_thread(load, 21) == 42
    with pytest.raises(ValueError, match="no checkpoint at -1"):
        run_in_passing_thread(load, -1)
    assert len(seen) == 2 and threading.current_thread() not in seen
    assert not any(t.is_alive() for t in seen)


async def test_the_server_loads_models_on_threads_that_have_ended_before_it_serves():
    loaded: list[tuple[ThreadRecordingModel, threading.Thread]] = []

    def factory(config):
        model = ThreadRecordingModel(name=f"m{len(loaded)}")
        loaded.append((model, threading.current_thread()))
        return model

    app = create_app(ServerConfig(model="/m/a,b=/m/b", max_wait_ms=1), model_factory=factory)
    async with asgi_client(app) as client:
        reply = await client.post("/v1/score", json={"items": [{"prompt": "p", "response": "r"}]})
        assert reply.status_code == 200
    assert len(loaded) == 2
    for model, load_thread in loaded:
        assert load_thread is not threading.current_thread() and not load_thread.is_alive()
        assert load_thread not in model.warmup_threads


def test_a_real_models_warmup_and_forwards_share_one_thread(tiny_models):
    """The torch model itself (not a fake): every module's forward, warm-up included, on the worker."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    model = tiny_models("qwen2_5_vl")
    threads: list[threading.Thread] = []
    hook = register_module_forward_pre_hook(lambda *_: threads.append(threading.current_thread()))
    engine = Engine(model, EngineConfig(max_wait_ms=1))
    try:
        engine.start()
        asyncio.run(engine.score_items([model.encode(item("a short answer"))]))
    finally:
        engine.stop(drain=False, timeout=5)
        hook.remove()
    assert len(threads) >= 10  # the warm-up's and the request's module calls
    assert {t.name for t in threads} == {"rmserve-worker"} and len(set(threads)) == 1


class EncodeThreadsModel(FakeRewardModel):
    """Records torch's thread count where ``encode`` runs (the preprocessing pool)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.encode_torch_threads: list[int] = []

    def encode(self, item):
        import torch

        self.encode_torch_threads.append(torch.get_num_threads())
        return super().encode(item)


async def test_preprocessing_threads_run_the_setup_and_survive_one_that_raises():
    ran: list[str] = []

    def setup() -> None:
        ran.append(threading.current_thread().name)
        raise RuntimeError("no OpenMP runtime")

    model = FakeRewardModel()
    engine = Engine(model, EngineConfig(max_wait_ms=1, preprocess_workers=2), preprocess_thread_setup=setup)
    engine.start()
    try:
        jobs = [engine.run_in_pool(lambda: threading.current_thread().name) for _ in range(8)]
        names = await asyncio.gather(*jobs)
    finally:
        engine.stop(drain=False, timeout=5)
    assert set(names) <= set(ran) and all(n.startswith("rmserve-pre") for n in names)  # every job ran after it


async def test_the_servers_preprocessing_threads_keep_torch_to_one_thread():
    """Where encode runs (video resizes are torch ops), torch uses one thread: no second OpenMP team."""
    import torch

    if torch.get_num_threads() == 1:
        pytest.skip("torch uses one thread in this process anyway")
    model = EncodeThreadsModel()
    app = create_app(ServerConfig(max_wait_ms=1), model_factory=lambda config: model)
    async with asgi_client(app) as client:
        reply = await client.post("/v1/score", json={"items": [{"prompt": "p", "response": "r"}]})
        assert reply.status_code == 200
    assert model.encode_torch_threads and set(model.encode_torch_threads) == {1}
    assert torch.get_num_threads() > 1  # this thread (and the worker) keep theirs
