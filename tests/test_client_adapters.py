"""Framework adapters, driven the way each framework drives them, against a real server on loopback.

- TRL: the reward functions go through TRL's own ``GRPOTrainer._calculate_rewards`` (installed trl;
  the method is called on a trainer shell holding just what that method reads), with prompts,
  completions and dataset columns shaped as GRPOTrainer shapes them (multimodal prompts through
  TRL's ``prepare_multimodal_messages``).
- OpenRLHF: the adapter FILE is loaded with importlib under the name ``reward_func`` and called from
  threads with one sample each, as ``SingleTurnAgentExecutor._fetch_rewards_via_func`` does.
- veRL: ``compute_score`` with the keyword arguments veRL's reward managers pass.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import pickle
from collections import defaultdict
from types import SimpleNamespace

import httpx
import pytest
from rmserve_client import RewardClient
from rmserve_client.adapters import openrlhf as openrlhf_adapter
from rmserve_client.adapters import verl as verl_adapter
from rmserve_client.adapters.trl import AsyncRMServeReward, RMServeReward, rmserve_async_reward_func, to_item

from tests.conftest import random_image
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served


@pytest.fixture(scope="module")
def server():
    with served(FakeRewardModel(), max_items_per_request=64) as s:
        yield s


# ── TRL ────────────────────────────────────────────────────────────────────────────────────────

import trl  # noqa: E402, F401  (requirements/dev.txt: `make test` must run this, never skip it)


def _trainer_shell(reward_funcs):
    """A GRPOTrainer holding only what ``_calculate_rewards`` reads, set up as ``GRPOTrainer.__init__`` does."""
    from accelerate import Accelerator
    from transformers import TrainerState
    from trl import GRPOTrainer
    from trl.trainer.utils import get_callable_name, is_async_callable, start_event_loop_in_daemon

    trainer = object.__new__(GRPOTrainer)
    trainer.accelerator = Accelerator(cpu=True)
    trainer.state = TrainerState()
    trainer.args = SimpleNamespace(report_to=[])
    trainer.environments = None
    trainer.reward_funcs = reward_funcs
    trainer.reward_func_names = [get_callable_name(f) for f in reward_funcs]
    trainer.reward_processing_classes = [None] * len(reward_funcs)
    trainer._pending_extra_logs = defaultdict(list)
    trainer._pending_metrics = defaultdict(list)
    if any(is_async_callable(f) for f in reward_funcs):
        thread, loop, ready = start_event_loop_in_daemon(name="GRPOTrainer-AsyncLoop")
        ready.wait()
        trainer.async_loop_thread, trainer.async_loop = thread, loop
    return trainer


def _grpo_batch(num_generations: int = 3):
    """Rows, prompts and completions as GRPOTrainer builds them for a conversational image dataset."""
    from trl.data_utils import prepare_multimodal_messages

    rows = [
        {"prompt": [{"role": "user", "content": "What colour is it?"}], "image": random_image(16, 16, 1),
         "solution": "red"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Shape?"}],
         "image": random_image(16, 16, 2), "solution": "circle"},
    ]
    inputs = [row for row in rows for _ in range(num_generations)]  # each prompt repeated G times
    prompts = [x["prompt"] for x in inputs]
    images = [[x.get("image")] if x.get("image") is not None else None for x in inputs]  # the "image" column
    prompts = [prepare_multimodal_messages(p, images=im) for p, im in zip(prompts, images, strict=True)]
    texts = [f"It is {c}." for c in ("red", "blue", "")] + ["A circle.", "Square", "Round"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    completion_ids = [list(t.encode()) for t in texts]
    return inputs, prompts, completions, completion_ids, texts


def _expected(server, inputs, texts) -> list[float | None]:
    with RewardClient(server.rest_url) as client:
        out = []
        for row, text in zip(inputs, texts, strict=True):
            item = {"messages": row["prompt"], "images": [row["image"]], "response": text}
            out.append(client.score(item).reward)
        return out


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_trl_grpo_calculate_rewards_sync_and_async(server, transport):
    url = server.rest_url if transport == "rest" else server.grpc_url
    funcs = [RMServeReward(url, name="rmserve"), AsyncRMServeReward(url, name="rmserve_async"),
             rmserve_async_reward_func(url, name="rmserve_fn")]
    trainer = _trainer_shell(funcs)
    assert trainer.reward_func_names == ["rmserve", "rmserve_async", "rmserve_fn"]
    inputs, prompts, completions, completion_ids, texts = _grpo_batch()
    rewards = trainer._calculate_rewards(inputs, prompts, completions, completion_ids)  # TRL's own code
    assert tuple(rewards.shape) == (len(texts), 3)
    want = _expected(server, inputs, texts)
    for column in range(3):
        for got, expected in zip(rewards[:, column].tolist(), want, strict=True):
            # an empty completion too: it is scored as the empty assistant turn, never None -> NaN
            assert math.isfinite(got) and got == pytest.approx(expected, rel=1e-6, abs=1e-5)  # TRL stores float32


def test_trl_standard_format_and_extra_columns(server):
    reward = RMServeReward(server.grpc_url)
    prompts = ["Q: 2+2?\nA:", "Q: capital of France?\nA:"]
    completions = [" 4", " Paris"]
    got = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2]], ground_truth=["4", "Paris"],
                 trainer_state=object(), log_extra=lambda *a: None, log_metric=lambda *a: None)
    with RewardClient(server.rest_url) as client:
        items = [{"prompt": p, "response": c} for p, c in zip(prompts, completions, strict=True)]
        want = [r.reward for r in client.score(items)]
    assert got == pytest.approx(want, abs=1e-9)
    clone = pickle.loads(pickle.dumps(reward))  # picklable (the client is made again on first use)
    assert clone(prompts=prompts, completions=completions) == pytest.approx(want, abs=1e-9)


def test_trl_item_conversion():
    image = random_image(8, 8)
    prompt = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]},
              {"role": "assistant", "content": [{"type": "text", "text": "It is"}]}]
    item = to_item(prompt, [{"role": "assistant", "content": " red."}], images=None)
    assert item == {"messages": [{"role": "user", "content": "What?"}], "images": [image], "response": "It is red.",
                    "truncate": True}
    item = to_item([{"role": "user", "content": "What?"}], " red.", images=[image, None])
    assert item["images"] == [image] and item["response"] == " red."


# ── OpenRLHF ───────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def text_server(tiny_models):
    with served(tiny_models("qwen2"), max_wait_ms=5.0) as s:
        yield s


def test_openrlhf_reward_file_as_openrlhf_loads_and_calls_it(text_server, tiny_models, monkeypatch):
    monkeypatch.setenv("RMSERVE_URL", text_server.rest_url)
    # exactly OpenRLHF's loading (openrlhf/utils/agent.py SingleTurnAgentExecutor.__init__)
    spec = importlib.util.spec_from_file_location("reward_func", openrlhf_adapter.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reward_func = module.reward_func

    tokenizer = tiny_models("qwen2").tokenizer
    pairs = [("What is 2+2?", "4."), ("Name a colour.", "Blue, I think."), ("Say hi.", "Hi!")]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q, _ in pairs]
    queries = [p + a + "<|im_end|>" for p, (_, a) in zip(prompts, pairs, strict=True)]

    async def like_openrlhf():  # one sample per call, from threads, all at once
        calls = [asyncio.to_thread(reward_func, [q], [p], [""]) for q, p in zip(queries, prompts, strict=True)]
        return await asyncio.gather(*calls)

    results = asyncio.run(like_openrlhf())
    assert all(set(r) == {"rewards", "scores", "extra_logs"} and len(r["rewards"]) == 1 for r in results)
    direct = httpx.post(f"{text_server.rest_url}/get_reward", json={"query": queries, "prompts": prompts}).json()
    with RewardClient(text_server.rest_url) as client:  # without prompts: split at the assistant turn
        assert client.get_reward(queries)["rewards"] == pytest.approx(direct["rewards"], abs=1e-5)
    with RewardClient(text_server.rest_url) as client:
        scored = [client.score(prompt=q, response=a).reward for q, a in pairs]
    got = [r["rewards"][0] for r in results]
    assert got == pytest.approx(direct["rewards"], abs=1e-5)
    assert got == pytest.approx(scored, abs=1e-5)
    assert [r["scores"][0] for r in results] == got


# ── veRL ───────────────────────────────────────────────────────────────────────────────────────


def _verl_custom_reward_fn(raw_fn, reward_kwargs):
    """veRL b178a3c ``verl/trainer/ppo/reward.py`` ``get_custom_reward_fn``: the loaded function wrapped with the
    config's ``reward_kwargs`` (``_call_with_kwargs`` / ``_call_with_kwargs_async``, chosen by
    ``inspect.iscoroutinefunction``), copied here because veRL itself is not installed."""
    import functools
    import inspect

    def call(fn, extra, *args, **kwargs):
        return fn(*args, **{**kwargs, **extra})

    async def call_async(fn, extra, *args, **kwargs):
        return await fn(*args, **{**kwargs, **extra})

    return functools.partial(call_async if inspect.iscoroutinefunction(raw_fn) else call, raw_fn, reward_kwargs)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_verl_compute_score_under_legacy_and_reward_loop_managers(server, transport):
    import inspect

    url = server.rest_url if transport == "rest" else server.grpc_url
    image = random_image(16, 16, 3)
    extra = {"question": "<image>What colour?", "images": [image], "index": 7}
    # what both NaiveRewardManagers pass (workers/reward_manager/naive.py, experimental/.../naive.py run_single)
    call = dict(data_source="colours", solution_str="Red.", ground_truth="red",
                extra_info={**extra, "num_turns": 1, "rollout_reward_scores": {}})
    with RewardClient(server.rest_url) as client:
        want = client.score(prompt="What colour?", images=[image], response="Red.").reward
    for raw in (verl_adapter.compute_score, verl_adapter.compute_score_async):
        fn = _verl_custom_reward_fn(raw, {"url": url})
        legacy = fn(**call)  # legacy manager: a plain synchronous call, the value used as the score
        assert legacy["score"] == pytest.approx(want, abs=1e-9) and legacy["rmserve_images"] == 1.0
        if inspect.iscoroutinefunction(fn):  # reward loop: awaited on its loop (Python >= 3.12 for the async one)
            loop_result = asyncio.run(fn(**call, reward_router_address=None, reward_model_tokenizer=None))
        else:  # reward loop: run_in_executor, i.e. called from a thread without a running loop
            async def in_executor(fn=fn):
                return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**call))
            loop_result = asyncio.run(in_executor())
        assert loop_result == legacy

    async def on_a_loop():  # the async variant called on a running loop is awaitable on any Python
        return await verl_adapter.compute_score_async(**call, url=url)
    assert asyncio.run(on_a_loop())["score"] == pytest.approx(want, abs=1e-9)
    messages = {"messages": [{"role": "user", "content": "What colour?"}], "images": [image]}
    chat = verl_adapter.compute_score(**{**call, "extra_info": messages}, url=url)
    assert chat["score"] != legacy["score"]  # a chat turn, not a bare prompt
    with pytest.raises(ValueError, match="extra_info"):
        verl_adapter.compute_score(**{**call, "extra_info": {}}, url=url)
    empty = verl_adapter.compute_score(**{**call, "solution_str": ""}, url=url)
    assert math.isfinite(empty["score"])  # an empty response is a reward, not an error
    broken = {**extra, "images": [b"not an image"]}
    assert verl_adapter.compute_score(**{**call, "extra_info": broken}, url=url, error_score=0.0)["score"] == 0.0


def test_verl_images_that_did_not_reach_the_reward_are_counted_and_warned(server, caplog):
    verl_adapter._warned_missing = False
    call = dict(data_source="d", solution_str="Red.", ground_truth="red", url=server.rest_url)
    with caplog.at_level("WARNING", logger="rmserve_client.verl"):
        first = verl_adapter.compute_score(**call, extra_info={"question": "<image>What colour?"})
        second = verl_adapter.compute_score(**call, extra_info={"prompt": "<image><image>Compare."})
    assert first["rmserve_images_missing"] == 1.0 and second["rmserve_images_missing"] == 2.0
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # once per process
    assert "extra_info['images']" in caplog.records[0].message
    with RewardClient(server.rest_url) as client:
        assert first["score"] == pytest.approx(client.score(prompt="What colour?", response="Red.").reward, abs=1e-9)


def test_trl_one_bad_item_costs_only_its_own_reward(server, caplog):
    good = random_image(16, 16, 4)
    prompts = [[{"role": "user", "content": "What?"}]] * 4
    completions = ["A.", "B.", "C.", "D."]
    images = [good, b"not an image", good, good]
    requests = []
    reward = RMServeReward(server.rest_url, upload_images=False)
    original = reward.client.score
    reward.client.score = lambda items, **kw: requests.append(len(items)) or original(items, **kw)
    with caplog.at_level("WARNING", logger="rmserve_client.trl"):
        got = reward(prompts=prompts, completions=completions, image=images)
    assert got[1] is None and all(math.isfinite(r) for k, r in enumerate(got) if k != 1)
    assert requests == [4, 3]  # one resend without the bad item, not one request per item
    assert len(caplog.records) == 1 and "item 1" in caplog.records[0].message
    assert caplog.records[0].message.count("images.0") <= 1
    with RewardClient(server.rest_url) as client:
        want = [client.score(messages=prompts[0], images=[good], response=c).reward for c in ("A.", "C.", "D.")]
    assert [got[0], got[2], got[3]] == pytest.approx(want, abs=1e-9)


def test_verl_reward_loop_manager_reads_images_from_raw_prompt(server, tiny_models):
    """Built and called as veRL's ``RewardLoopWorker`` does (reward_loop.py ``_init_reward_fn`` /
    ``compute_score``): ``cls(config, tokenizer, reward_fn, router, rm_tokenizer)``, then ``await
    run_single(data)`` with a one-sample DataProto; here a stand-in with the fields it reads."""
    import numpy as np
    import torch

    tokenizer = tiny_models("qwen2").tokenizer
    image = random_image(16, 16, 5)
    raw_prompt = np.array([{"role": "user", "content": [{"type": "image", "image": image},
                                                        {"type": "text", "text": "What colour?"}]}], dtype=object)
    response_ids = tokenizer("Red, I think.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pad = [tokenizer.pad_token_id] * 5
    prompt_len = 7
    item = SimpleNamespace(
        batch={"responses": torch.tensor(response_ids + pad),
               "attention_mask": torch.tensor([1] * prompt_len + [1] * len(response_ids) + [0] * len(pad))},
        non_tensor_batch={"raw_prompt": raw_prompt, "data_source": "d", "reward_model": {"ground_truth": "red"}},
    )
    config = {"reward_model": {"rmserve_url": server.rest_url}}
    manager = verl_adapter.RMServeRewardLoopManager(config, tokenizer, None, None, None)
    result = asyncio.run(manager.run_single([item]))
    with RewardClient(server.rest_url) as client:
        want = client.score(messages=[{"role": "user", "content": "What colour?"}], images=[image],
                            response="Red, I think.").reward
    assert result["reward_score"] == pytest.approx(want, abs=1e-9)
    assert result["reward_extra_info"] == {"rmserve_images": 1.0, "rmserve_images_missing": 0.0}
