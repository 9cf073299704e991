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

trl = pytest.importorskip("trl", reason="install trl (with requirements/constraints.txt) for the TRL adapter test")


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
            if not text.strip():
                out.append(None)
                continue
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
            if expected is None:  # an empty completion: None -> NaN, TRL leaves it out of the baseline
                assert math.isnan(got)
            else:
                assert got == pytest.approx(expected, rel=1e-6, abs=1e-5)  # TRL stores float32


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
    assert item == {"messages": [{"role": "user", "content": "What?"}], "images": [image], "response": "It is red."}
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
    with RewardClient(text_server.rest_url) as client:
        scored = [client.score(prompt=q, response=a).reward for q, a in pairs]
    got = [r["rewards"][0] for r in results]
    assert got == pytest.approx(direct["rewards"], abs=1e-5)
    assert got == pytest.approx(scored, abs=1e-5)
    assert [r["scores"][0] for r in results] == got


# ── veRL ───────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_verl_compute_score(server, transport):
    url = server.rest_url if transport == "rest" else server.grpc_url
    image = random_image(16, 16, 3)
    extra = {"question": "What colour?", "images": [image], "index": 7}
    kwargs = dict(data_source="colours", solution_str="Red.", ground_truth="red", url=url)
    got = verl_adapter.compute_score(**kwargs, extra_info={**extra, "num_turns": 1, "rollout_reward_scores": {}})
    got_async = asyncio.run(verl_adapter.compute_score_async(**kwargs, extra_info=extra,
                                                             reward_router_address=None))
    with RewardClient(server.rest_url) as client:
        want = client.score(prompt="What colour?", images=[image], response="Red.").reward
    assert got == pytest.approx(want, abs=1e-9) and got_async == pytest.approx(want, abs=1e-9)
    messages = {"messages": [{"role": "user", "content": "What colour?"}], "images": [image]}
    assert verl_adapter.compute_score(**kwargs, extra_info=messages) != got  # a chat turn, not a bare prompt
    with pytest.raises(ValueError, match="extra_info"):
        verl_adapter.compute_score(**kwargs, extra_info={})
    bad = dict(kwargs, solution_str="  ")
    assert verl_adapter.compute_score(**bad, extra_info=extra, error_score=0.0) == 0.0
