"""The vLLM backend in-process: same ids as the transformers backend, same rewards (fp32, 1e-5), same
greedy critiques. Runs in .venv-vllm (``make test-vllm``); skipped elsewhere."""

from __future__ import annotations

import time

import pytest
import torch

from rmserve.models.critique import generate_critique
from rmserve.models.types import ScoreItem
from tests.vllm.conftest import TOLERANCE, assert_apart, record, skip_without_vllm

skip_without_vllm()

ITEMS = [
    ScoreItem(prompt="What colour is the shape?", response="The red circle is to the left of the blue square."),
    ScoreItem(prompt="Hi", response="The answer is 42."),
    ScoreItem(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many?"}],
              response="three"),
    ScoreItem(messages=[{"role": "user", "content": "Count them."}, {"role": "assistant", "content": "Which?"},
                        {"role": "user", "content": "The triangles, step by step."}],
              response="There are three green triangles: 1, 2, 3. " * 6),
    ScoreItem(prompt="Ünïcödé? 你好", response="Ça va — très bien ✓"),
    ScoreItem(prompt="Describe the image in detail. " * 20, response="I cannot help with that request."),
]


def assert_outputs_close(got, want, name: str) -> None:
    assert_apart([w.reward for w in want], name)
    for field in ("attributes", "safety"):
        for label in getattr(want[0], field) or {}:
            assert_apart([getattr(w, field)[label] for w in want], f"{name} {field}.{label}")
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        worst = max(worst, abs(g.reward - w.reward))
        for field in ("attributes", "safety"):
            gd, wd = getattr(g, field), getattr(w, field)
            assert (gd is None) == (wd is None)
            if wd is not None:
                assert gd.keys() == wd.keys()
                worst = max([worst] + [abs(gd[k] - wd[k]) for k in wd])
    record(name, worst)
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("key", ["rm", "seq_cls"])
def test_encoding_is_the_transformers_backends(key, hf_models, vllm_models):
    hf, vm = hf_models[key], vllm_models[key]
    for item in ITEMS:
        assert vm.encode(item).input_ids == hf.encode(item).input_ids
        assert vm.encode_prompt(item)[0] == hf.encode_prompt(item)[0]
    rendered = hf.tokenizer.apply_chat_template([{"role": "user", "content": "Q?"}], add_generation_prompt=True,
                                                tokenize=False)
    assert vm.encode_rendered(rendered, "A.").input_ids == hf.encode_rendered(rendered, "A.").input_ids
    assert vm.max_length == hf.max_length and vm.turn_markers() == hf.turn_markers()


@pytest.mark.parametrize("key", ["rm", "seq_cls"])
def test_rewards_match_singly_and_batched(key, hf_models, vllm_models):
    hf, vm = hf_models[key], vllm_models[key]
    want = [hf.score([item])[0] for item in ITEMS]  # each alone
    singly = [vm.score_batch([vm.encode(item)])[0] for item in ITEMS]
    batched = vm.score_batch([vm.encode(item) for item in ITEMS])
    futures = [vm.submit_item(vm.encode(item)) for item in ITEMS]  # per-item dispatch: all in vLLM at once
    per_item = [future.result(timeout=120) for future in futures]
    assert_outputs_close(singly, want, f"{key}: rewards, one item per call")
    assert_outputs_close(batched, want, f"{key}: rewards, one batch")
    assert_outputs_close(per_item, want, f"{key}: rewards, one vLLM request per item (submit_item)")
    if key == "rm":  # the attribute and safety heads and the normalisation ran on vLLM's states
        assert set(batched[0].attributes) == {"helpfulness", "correctness"} and set(batched[0].safety) == {"S1", "S10"}
        assert hf.normalize == {"mean": 0.25, "std": 1.5}


def test_cancelled_items_are_aborted_in_vllm(hf_models, vllm_models):
    hf, vm = hf_models["rm"], vllm_models["rm"]
    engine = vm.pooler.engine
    aborted: list[str] = []
    abort = engine.abort

    async def recording_abort(request_id, *args, **kwargs):
        aborted.append(request_id)
        return await abort(request_id, *args, **kwargs)

    long = ScoreItem(prompt="Describe the image in detail. " * 30, response="It is a long answer. " * 40)
    encoded = [vm.encode(long) for _ in range(32)]
    engine.abort = recording_abort
    try:
        futures = [vm.submit_item(item) for item in encoded]
        deadline = time.monotonic() + 60
        while not engine.get_num_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.01)  # until vLLM holds them: a cancel before that never reaches vLLM
        cancelled = [future.cancel() for future in futures]
        while engine.get_num_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.get_num_unfinished_requests() == 0
    finally:
        del engine.abort  # the instance attribute: back to AsyncLLM.abort
    assert any(cancelled) and aborted  # cancelled futures aborted their vLLM requests (AsyncLLM.encode)
    assert len(aborted) <= sum(cancelled)
    got = vm.submit_item(vm.encode(ITEMS[1])).result(timeout=120)
    assert abs(got.reward - hf.score([ITEMS[1]])[0].reward) <= TOLERANCE  # the engine carries on


def test_pooling_engine_takes_vllms_offline_step_budget(vllm_models):
    """Unset, the step budget is the one vLLM gives its offline LLM class, not its server's (half of it on
    CPU): every pooling request is one prefill, so fuller steps are pure throughput (bench/README.md)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world_size=1)
    scheduler = vllm_models["rm"].pooler.engine.vllm_config.scheduler_config
    assert (scheduler.max_num_batched_tokens, scheduler.max_num_seqs) == (
        tokens[UsageContext.LLM_CLASS], seqs[UsageContext.LLM_CLASS])
    assert tokens[UsageContext.LLM_CLASS] > tokens[UsageContext.OPENAI_API_SERVER]  # what this test tells apart


def test_hidden_states_are_the_backbones_last_token_states(hf_models, vllm_models):
    hf, vm = hf_models["rm"], vllm_models["rm"]
    encoded = [hf.encode(item) for item in ITEMS]
    with torch.inference_mode():
        want = hf.pooled_hidden(hf.collate(encoded))
    got = vm.pooled_hidden_items([vm.encode(item) for item in ITEMS])
    assert got.shape == want.shape
    record("rm: last-token hidden states", float((got - want).abs().max()))
    assert float((got - want).abs().max()) <= TOLERANCE


def test_model_info(hf_models, vllm_models):
    for key in ("rm", "seq_cls"):
        want, got = hf_models[key].info, vllm_models[key].info
        assert (got.device, got.dtype) == ("vllm:cpu", "float32")
        for field in ("name", "family", "heads", "max_length", "multimodal", "attribute_names", "safety_categories"):
            assert getattr(got, field) == getattr(want, field), field
    assert vllm_models["rm"].can_generate() and not vllm_models["seq_cls"].can_generate()


def test_critiques_are_the_transformers_greedy_text(hf_models, vllm_models):
    hf, vm = hf_models["rm"], vllm_models["rm"]
    for item in ITEMS[:4]:
        want = generate_critique(hf, item)
        assert generate_critique(vm, item) == want


def test_critique_streams_token_by_token(hf_models, vllm_models):
    vm = vllm_models["rm"]

    class Collect:
        def __init__(self):
            self.calls = []
            self.ended = False

        def put(self, ids):
            self.calls.append(list(ids))

        def end(self):
            self.ended = True

    streamer = Collect()
    prompt_ids, _, _ = vm.encode_prompt(ITEMS[0])
    ids = vm.generate_ids(prompt_ids, [], 12, {}, streamer=streamer)
    assert streamer.calls[0] == prompt_ids and streamer.ended  # the prompt first, as HF's generate does
    assert [t for call in streamer.calls[1:] for t in call] == ids and 1 <= len(ids) <= 12
    assert len(streamer.calls) > 2  # more than one piece: streamed, not handed over at the end

    class Stop(Collect):
        def put(self, ids):
            super().put(ids)
            if len(self.calls) == 3:
                raise RuntimeError("reader gone")

    with pytest.raises(RuntimeError, match="reader gone"):
        vm.generate_ids(prompt_ids, [], 12, {}, streamer=Stop())
    assert vm.generate_ids(prompt_ids, [], 12, {}) == ids  # the aborted request left nothing behind
