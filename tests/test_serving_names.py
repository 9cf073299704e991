"""``--model NAME=DIR`` with one model, ``--served-model-name`` aliases, and checkpoints plain transformers loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmserve.config import ServerConfig
from rmserve.models.checkpoint import save_reward_model
from rmserve.models.tiny import build_tiny_reward_model
from rmserve.server import create_app
from tests.serving import asgi_client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "rm"
    save_reward_model(build_tiny_reward_model("qwen2_5_vl", seed=2), str(path))
    return str(path)


async def test_one_named_model_becomes_ready_under_its_name_and_aliases(checkpoint):
    config = ServerConfig(model=f"judge={checkpoint}", served_model_name="/data/verl/rm, rm-alias", max_wait_ms=1)
    async with asgi_client(create_app(config)) as client:  # waits for /readyz: the model loaded from DIR
        cards = (await client.get("/v1/models")).json()["data"]
        assert [c["id"] for c in cards] == ["judge"]
        for name in ("judge", "/data/verl/rm", "rm-alias", None):
            body = {"items": [{"prompt": "Hi", "response": "Hello."}], **({"model": name} if name else {})}
            r = await client.post("/v1/score", json=body)
            assert r.status_code == 200 and r.json()["model"] == "judge", r.text
        r = await client.post("/v1/score", json={"model": "other", "items": [{"prompt": "Hi", "response": "x"}]})
        error = r.json()["error"]
        assert r.status_code == 422 and error["code"] == "model_not_found" and error["param"] == "model"
        assert all(repr(n) in error["message"] for n in ("judge", "/data/verl/rm", "rm-alias"))


def test_served_model_name_may_not_shadow_a_model():
    with pytest.raises(ValueError, match="served_model_name"):
        ServerConfig(model="a=/m/a,b=/m/b", served_model_name="b")


def test_checkpoint_names_a_standard_processor_class(checkpoint):
    """Plain ``AutoProcessor.from_pretrained`` must not quietly return a bare tokenizer: with torchvision it
    builds transformers' own Qwen2_5_VLProcessor; without it (this machine) it fails loudly."""
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    with open(f"{checkpoint}/processor_config.json") as f:
        assert json.load(f)["processor_class"] == "Qwen2_5_VLProcessor"
    with open(f"{checkpoint}/video_preprocessor_config.json") as f:
        assert json.load(f)["video_processor_type"] == "Qwen2VLVideoProcessor"
    for directory in (checkpoint, str(Path(__file__).resolve().parents[1] / "models" / "demo")):
        try:
            processor = AutoProcessor.from_pretrained(directory)
        except ImportError as exc:
            assert "orchvision" in str(exc)
        else:
            assert not isinstance(processor, PreTrainedTokenizerBase)
            assert type(processor).__name__ == "Qwen2_5_VLProcessor"
