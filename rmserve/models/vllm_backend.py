"""The vLLM backend: the backbone runs in vLLM, rmserve's heads read its last-token hidden states.

    ScoreItem --encode (the transformers backend's own encoder: same tokenizer, template, ids)--> EncodedItem
    EncodedItem --submit_item--> one AsyncLLM.encode request: prompt_token_ids (+ images) -> hidden state
                --heads in fp32 + normalisation (the same modules and code as RewardModel)--> ScoreOutput
    [EncodedItem] --score_batch--> the same requests, all submitted at once, heads over the (B, H) stack

What runs in vLLM (in-process Python API, ``AsyncLLM`` on a loop thread: models/vllm_async.py; vLLM starts
its own engine-core process):
- causal LMs and VLMs with rmserve heads: ``runner="pooling", convert="embed"`` with LAST pooling and no
  activation returns the final post-norm hidden state of the last token: what ``RewardModel`` pools;
- HF ``*ForSequenceClassification`` reward models: vLLM's classify pooling with ``use_activation=False``
  returns the raw score logit (the checkpoint's own score layer, run by vLLM);
- critique models (``"critique"`` in rmserve.json): a second vLLM engine with the generate runner makes the
  greedy critique (``SamplingParams(temperature=0)``, the transformers path's budget and settings), streamed
  token by token; the critique is then scored by the pooling engine like any item;
- generative judges (``"judge"`` in rmserve.json): one engine, the generate runner, and no pooling engine
  (a judge has no reward head): ``generate_judgments`` is models/vllm_judge.py's ``VllmJudge``, called by the
  engine's judge batches (engine/judging.py) exactly as on the transformers backend; prefix caching shares an
  item's prompt across its votes and the template's head across a pair's two orders.

Encoding never touches vLLM: the encoder is ``load_reward_model(path, weights=False)``, a RewardModel whose
backbone is a weightless skeleton, so ids, templates and the length policy are exactly the transformers
backend's. Batching is vLLM's: with the engine's per-item dispatch (the default, ``--dispatch``), each item
becomes a vLLM request as soon as it is admitted and vLLM's scheduler batches across requests continuously
(chunked prefill; prefix caching shares a group's prompt KV, the analogue of ``--share-prefix``), while
admission, deadlines and failure isolation stay the engine's (engine/dispatch.py). ``--dispatch batch``
keeps rmserve's batcher: each engine batch is submitted at once and waited for as a whole.

vLLM reads every ``*.safetensors`` of a model directory, ``heads.safetensors`` included, and refuses its
unknown keys: vLLM gets a staging directory of symlinks to the checkpoint without rmserve's own files.

``submit_item`` and ``score_batch`` are thread-safe (vLLM's loop thread does the work); ``generate_ids`` is
not (the engine's worker thread is its only caller). Import cost: vLLM is imported only by
``load_vllm_reward_model``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidInput
from .checkpoint import CONFIG_NAME, HEADS_NAME, load_reward_model
from .critique import is_critique_model
from .judge import warm_up_judge
from .reward_model import RewardModel
from .types import EncodedItem, JudgeDecoding, JudgePrompt, Judgment, ModelInfo, ScoreItem, ScoreOutput, ServingOptions
from .vllm_async import AsyncPooler
from .vllm_judge import VllmJudge

log = logging.getLogger("rmserve.models.vllm")

VLLM_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}
# HF generate() settings a critique config may carry, and their vLLM SamplingParams names. Anything else
# changes greedy decoding in ways vLLM cannot reproduce, so such a checkpoint is refused at load.
SAMPLING_NAMES = {"repetition_penalty": "repetition_penalty", "min_new_tokens": "min_tokens"}
# generation_config.json fields that change greedy output in HF, with their no-op values.
_GREEDY_NEUTRAL = {"no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "suppress_tokens": (None,),
                   "begin_suppress_tokens": (None,), "sequence_bias": (None,), "forced_bos_token_id": (None,),
                   "forced_eos_token_id": (None,), "encoder_repetition_penalty": (None, 1.0),
                   "exponential_decay_length_penalty": (None,), "min_length": (None, 0)}


@dataclass
class VllmSettings:
    """vLLM engine settings (``rmserve serve --vllm-*``; dtype from ``--dtype``)."""

    dtype: str = "float32"
    tensor_parallel_size: int = 1
    # Fraction of GPU memory vLLM may take (weights, activations, KV cache). A critique model runs two
    # engines (pooling + generation): each gets half. On CPU, set VLLM_CPU_KVCACHE_SPACE (GiB) instead.
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None: the checkpoint's max_length
    enable_prefix_caching: bool = True  # correct with LAST pooling; shares GRPO groups' prompt KV
    enforce_eager: bool = False  # skip torch.compile / CUDA graphs: faster start, slower steps
    # Tokens and sequences per engine step. None: vLLM's defaults for its offline ``LLM`` class, which
    # AsyncPooler asks for (vllm_async.py); vLLM's own server defaults to half the tokens on CPU.
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in VLLM_DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {sorted(VLLM_DTYPES)}")
        if self.tensor_parallel_size < 1:
            raise ValueError("vllm tensor_parallel_size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("vllm gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("vllm max_model_len must be >= 2 (or unset: the model's max_length)")
        for name in ("max_num_batched_tokens", "max_num_seqs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"vllm {name} must be >= 1 (or unset: vLLM's default)")

    def engine_kwargs(self, *, share: float = 1.0) -> dict[str, Any]:
        return {
            "dtype": VLLM_DTYPES[self.dtype], "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization * share,
            "enable_prefix_caching": self.enable_prefix_caching, "enforce_eager": self.enforce_eager,
            "max_model_len": self.max_model_len,
            **{name: value for name in ("max_num_batched_tokens", "max_num_seqs")
               if (value := getattr(self, name)) is not None},
        }


def sampling_settings(generation: dict, defaults: dict | None = None) -> dict[str, Any]:
    """Greedy ``SamplingParams`` keywords equal to HF ``generate(do_sample=False, **generation)`` on a model
    whose ``generation_config.json`` holds ``defaults``. ValueError for settings vLLM cannot reproduce."""
    defaults = dict(defaults or {})
    for key, neutral in _GREEDY_NEUTRAL.items():
        if key not in generation and defaults.get(key) not in neutral:
            raise ValueError(f"generation_config.json sets {key}={defaults[key]!r}, which the vLLM backend cannot "
                             "reproduce; serve this critique model with --backend transformers")
    out: dict[str, Any] = {}
    for key in ("repetition_penalty", "min_new_tokens"):
        if defaults.get(key) is not None:
            out[SAMPLING_NAMES[key]] = defaults[key]
    for key, value in generation.items():
        if key not in SAMPLING_NAMES:
            raise ValueError(f"critique generation setting {key!r} is not supported by the vLLM backend "
                             f"(supported: {', '.join(SAMPLING_NAMES)}); serve with --backend transformers")
        out[SAMPLING_NAMES[key]] = value
    return out


def stage_checkpoint(path: str) -> str:
    """A temporary directory of symlinks to ``path``'s files except rmserve's own (rmserve.json, heads)."""
    stage = tempfile.mkdtemp(prefix="rmserve-vllm-")
    for name in os.listdir(path):
        if name not in (CONFIG_NAME, HEADS_NAME):
            os.symlink(os.path.abspath(os.path.join(path, name)), os.path.join(stage, name))
    return stage


class VllmRewardModel:
    """A ``ScoringModel`` (engine/base.py) whose backbone runs in vLLM; built by ``load_vllm_reward_model``."""

    def __init__(self, encoder: RewardModel, pooler, *, mode: str, settings: VllmSettings, generator=None,
                 generation_defaults: dict | None = None, device_type: str = "cuda", cleanup=None,
                 pooling_params=None, sampling_params_cls=None, judge=None):
        """``pooler``: an ``AsyncPooler`` (models/vllm_async.py), or anything with its ``submit``; None for a
        generative judge, whose ``judge`` (a ``VllmJudge``, models/vllm_judge.py) makes all of its rewards."""
        if mode not in ("embed", "classify"):
            raise ValueError(f"mode must be embed or classify, got {mode!r}")
        if pooling_params is None or sampling_params_cls is None:
            from vllm import PoolingParams, SamplingParams

            # raw states and logits; the task is named per request (AsyncLLM.encode has no pooling_task)
            pooling_params = pooling_params or PoolingParams(task=mode, use_activation=False)
            sampling_params_cls = sampling_params_cls or SamplingParams
        self._pooling_params = pooling_params
        self._sampling_params_cls = sampling_params_cls
        self.encoder = encoder
        self.pooler = pooler
        self.generator = generator
        self.judge = judge
        self.mode = mode
        self.settings = settings
        self.device_type = device_type
        self.generation_defaults = dict(generation_defaults or {})
        self._request_ids = itertools.count()
        self._cleanup = cleanup  # weakref.finalize: shut the engines down, remove the staging directory

    # ---- what the server reads (delegated to the encoder: one source of truth) -------------------
    @property
    def name(self) -> str:
        return self.encoder.name

    @name.setter
    def name(self, value: str) -> None:
        self.encoder.name = value

    @property
    def info(self) -> ModelInfo:
        return dataclasses.replace(self.encoder.info, device=f"vllm:{self.device_type}",
                                   dtype=VLLM_DTYPES[self.settings.dtype])

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def extra_config(self) -> dict:
        return self.encoder.extra_config

    def decode_text(self, ids: list[int]) -> str:
        return self.encoder.decode_text(ids)

    def configure_serving(self, options: ServingOptions) -> None:
        """Nothing to apply: vLLM shares prompt prefixes (enable_prefix_caching) and batches on its own."""

    def cache_stats(self) -> dict[str, dict[str, float]]:
        return {}

    def turn_markers(self):
        return self.encoder.turn_markers()

    def prompt_syntax(self):
        return self.encoder.prompt_syntax()

    # ---- encoding (CPU, thread-safe: the encoder's) ----------------------------------------------
    def encode(self, item: ScoreItem) -> EncodedItem:
        if item.videos:
            # vLLM makes video pixels with its own processor from frames + metadata; that path is not wired or
            # tested here, so a video is refused rather than scored some other way than with --backend hf.
            raise InvalidInput("the vllm backend does not score videos; serve this model with --backend hf",
                               param="messages", code="videos_not_supported")
        return self._for_vllm(self.encoder.encode(item), item.images)

    def encode_rendered(self, prompt_text: str, response: str, *, images: list | None = None,
                        truncate: bool = False, image_hashes: list[str] | None = None,
                        param: str = "prompt") -> EncodedItem:
        encoded = self.encoder.encode_rendered(prompt_text, response, images=images, truncate=truncate,
                                               image_hashes=image_hashes, param=param)
        return self._for_vllm(encoded, images or [])

    def encode_prompt(self, item: ScoreItem):
        return self.encoder.encode_prompt(item)

    @staticmethod
    def _for_vllm(encoded: EncodedItem, images: list) -> EncodedItem:
        """vLLM takes the images themselves (its own processor makes the pixels, matching the placeholder
        tokens already in the ids): keep the PIL images, drop our pixel tensors and positions."""
        if not images:
            return encoded
        return dataclasses.replace(encoded, vision={"images": list(images)})

    @staticmethod
    def _prompt(item: EncodedItem) -> dict:
        prompt: dict[str, Any] = {"prompt_token_ids": list(item.input_ids)}
        if item.vision.get("images"):
            prompt["multi_modal_data"] = {"image": item.vision["images"]}
        return prompt

    # ---- scoring -----------------------------------------------------------------------------------
    def _require_pooler(self) -> None:
        if self.pooler is None:  # the transformers backend's RewardModel.score_batch says the same
            raise InvalidInput(f"model {self.name!r} has no reward head: it is a generative judge, served by "
                               "/v1/score, /v1/compare and /v1/rank", param="model", code="judge_model")

    def submit_item(self, item: EncodedItem) -> Future[ScoreOutput]:
        """One vLLM request for ``item`` now (engine/dispatch.py); the heads run as its state arrives."""
        self._require_pooler()
        return self.pooler.submit(self._prompt(item), self._pooling_params, finish=self._score_pooled)

    def _score_pooled(self, data: torch.Tensor) -> ScoreOutput:
        with torch.inference_mode():
            return self._outputs(data.float().reshape(1, -1))[0]

    def _outputs(self, pooled: torch.Tensor) -> list[ScoreOutput]:
        """Scores from (B, H) last-token states (embed) or (B, 1) score logits (classify)."""
        if self.mode == "classify":
            return self.encoder.score_outputs({"reward": self.encoder.normalize_reward(pooled[:, 0])})
        return self.encoder.score_outputs(self.encoder.apply_heads(pooled))

    def _pool(self, items: list[EncodedItem]) -> torch.Tensor:
        """(B, ·) float32 pooled outputs of ``items``, all submitted at once and waited for together."""
        self._require_pooler()
        futures = [self.pooler.submit(self._prompt(it), self._pooling_params) for it in items]
        try:
            return torch.stack([future.result().float().reshape(-1) for future in futures])
        except BaseException:
            for future in futures:  # one failed: the rest would be wasted work
                future.cancel()
            raise

    def pooled_hidden_items(self, items: list[EncodedItem]) -> torch.Tensor:
        """(B, H) float32 final hidden states at each item's last token (``/pooling`` task=embed uses it)."""
        if self.mode != "embed":
            raise InvalidInput("this sequence-classification model runs in vLLM's classify pooling, which returns "
                               "scores, not hidden states", param="task", code="unsupported_task")
        return self._pool(items)

    def score_batch(self, items: list[EncodedItem]) -> list[ScoreOutput]:
        pooled = self._pool(items)
        with torch.inference_mode():
            return self._outputs(pooled)

    def warmup(self) -> None:
        from PIL import Image

        images = [Image.new("RGB", (56, 56), (128, 64, 32))] if self.encoder.family.multimodal else []
        if self.judge is not None:  # the transformers backend's judge warm-up: one answer read
            warm_up_judge(self, images)
            return
        self.score_batch([self.encode(ScoreItem(prompt="warm up", response="ok", images=images))])
        if self.generator is not None:
            ids, _, _ = self.encoder.encode_prompt(ScoreItem(prompt="warm up", response="", images=images))
            self.generate_ids(ids, images, 1, {})

    # ---- critique generation (the engine's worker thread, via Engine.run_exclusive) -------------
    def can_generate(self) -> bool:
        return self.generator is not None

    def generate_ids(self, prompt_ids: list[int], images: list, max_new_tokens: int, generation: dict,
                     streamer=None) -> list[int]:
        """Greedy continuation of ``prompt_ids`` (at most ``max_new_tokens``, stopping at end of sequence).

        ``streamer`` is an HF-style streamer (``put``/``end``; rmserve's TokenStream): it gets the prompt
        first, then new tokens as vLLM produces them; an exception from ``put`` (reader gone, deadline)
        aborts the request and propagates.
        """
        if self.generator is None:
            raise RuntimeError("this model has no generation engine (not a critique model)")
        params = self._sampling_params_cls(temperature=0.0, max_tokens=max_new_tokens, detokenize=False,
                                **sampling_settings(generation, self.generation_defaults))
        prompt = self._prompt(EncodedItem(input_ids=list(prompt_ids), vision={"images": list(images or [])}))
        engine = self.generator.llm_engine
        request_id = f"rmserve-critique-{next(self._request_ids)}"
        engine.add_request(request_id, prompt, params)
        tokens: list[int] = []
        try:
            if streamer is not None:
                streamer.put(list(prompt_ids))  # HF streamers are handed the prompt first (and skip it)
            # One request at a time on this engine (the worker thread is its only user): every output is ours.
            while engine.has_unfinished_requests():
                for output in engine.step():
                    new = list(output.outputs[0].token_ids)
                    if streamer is not None and len(new) > len(tokens):
                        streamer.put(new[len(tokens):])
                    tokens = new
        except BaseException:
            engine.abort_request([request_id])
            raise
        if streamer is not None:
            streamer.end()
        return tokens

    # ---- generative judges (the engine's worker thread: engine/judging.py) ---------------------------
    def judge_decoding(self) -> JudgeDecoding | None:
        return self.encoder.judge_decoding() if self.judge is not None else None

    def generate_judgments(self, prompts: list[JudgePrompt], decoding: JudgeDecoding, *,
                           abandoned: Callable[[], bool] | None = None) -> list[Judgment]:
        if self.judge is None:  # judge_decoding() is None: the API never sends judgments here
            raise RuntimeError("this model is not a generative judge")
        return self.judge.generate_judgments(prompts, decoding, abandoned=abandoned)

    # ---- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the vLLM engines down and remove the staging directory (also done at interpreter exit)."""
        if self._cleanup is not None:
            self._cleanup()


def _shutdown(engines: list, stage: str) -> None:
    for engine in engines:
        try:
            if hasattr(engine, "llm_engine"):  # LLM (the critique generator, a judge)
                engine.llm_engine.engine_core.shutdown()
            else:  # AsyncPooler
                engine.shutdown()
        except Exception:  # already gone; nothing else to free
            log.debug("vLLM engine shutdown failed", exc_info=True)
    shutil.rmtree(stage, ignore_errors=True)


def _generation_defaults(path: str) -> dict:
    if not os.path.exists(os.path.join(path, "generation_config.json")):
        return {}
    from transformers import GenerationConfig

    config = GenerationConfig.from_pretrained(path)
    keys = ("repetition_penalty", "min_new_tokens", *_GREEDY_NEUTRAL)
    return {k: getattr(config, k, None) for k in keys if getattr(config, k, None) is not None}


def _load_judge(path: str, encoder: RewardModel, settings: VllmSettings, device_type: str) -> VllmRewardModel:
    """A generative judge: one generate-runner engine (``VllmJudge``, models/vllm_judge.py), no pooling engine."""
    from vllm import LLM

    def build(stage: str, engines: list) -> VllmRewardModel:
        log.info("vLLM generation engine for the judge %s (%s)", path, settings)
        # Prefix caching (on by default) computes an item's prompt once for all its votes.
        llm = LLM(stage, runner="generate", **settings.engine_kwargs())
        engines.append(llm)
        return VllmRewardModel(encoder, None, mode="embed", settings=settings, device_type=device_type,
                               judge=VllmJudge(encoder, llm))

    return _with_engines(path, encoder, build)


def _with_engines(path: str, encoder: RewardModel,
                  build: Callable[[str, list], VllmRewardModel]) -> VllmRewardModel:
    """``build(staged checkpoint, engines)``: the engines it appends are shut down and the staged copy removed
    when the model is collected, or at once if ``build`` raises (no engine outlives a failed load)."""
    stage = stage_checkpoint(path)
    engines: list = []
    model = None
    try:
        model = build(stage, engines)
    finally:
        cleanup = weakref.finalize(model if model is not None else encoder, _shutdown, engines, stage)
        if model is None:
            cleanup()
    model._cleanup = cleanup
    return model


def load_vllm_reward_model(path: str, settings: VllmSettings | None = None) -> VllmRewardModel:
    """Load a checkpoint directory (rmserve format, a generative judge or a plain HF sequence classifier)
    onto vLLM."""
    settings = settings or VllmSettings()
    try:
        from vllm import LLM
        from vllm.config import PoolerConfig
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise RuntimeError(f"--backend vllm needs vLLM: pip install 'rmserve[vllm]' ({exc})") from exc
    encoder = load_reward_model(path, weights=False)
    judge = "judge" in encoder.extra_config
    if judge and encoder.judge_decoding() is None:
        raise ValueError(f"{path}: a judge section but a backbone without a language-model head: nothing to "
                         "generate judgments with")
    mode = "classify" if encoder.family_name == "seq_cls" else "embed"
    if mode == "classify" and set(encoder.head_specs) != {"reward"}:
        raise ValueError(f"{path}: a sequence classifier with extra heads ({sorted(encoder.head_specs)}) cannot run "
                         "on vLLM's classify pooling; serve it with --backend transformers")
    if settings.max_model_len is None:
        settings = dataclasses.replace(settings, max_model_len=encoder.max_length)
    # the length policy (and a judge's budgets) must match vLLM's
    encoder.max_length = min(encoder.max_length, settings.max_model_len)
    if judge:
        return _load_judge(path, encoder, settings, current_platform.device_type)
    critique = is_critique_model(encoder)
    defaults = _generation_defaults(path) if critique else {}
    if critique:
        sampling_settings((encoder.extra_config["critique"] or {}).get("generation", {}), defaults)  # fail now

    def build(stage: str, engines: list) -> VllmRewardModel:
        share = 0.5 if critique else 1.0
        pooler = PoolerConfig(seq_pooling_type="LAST", use_activation=False)
        convert = "embed" if mode == "embed" else "auto"
        log.info("vLLM %s engine for %s (%s)", mode, path, settings)
        # disable_log_stats: as LLM does (no periodic stats logging; rmserve has its own metrics).
        pooling = AsyncPooler(dict(model=stage, runner="pooling", convert=convert, pooler_config=pooler,
                                   disable_log_stats=True, **settings.engine_kwargs(share=share)))
        engines.append(pooling)
        generator = None
        if critique:
            log.info("vLLM generation engine for the critiques of %s", path)
            # Prefix caching is exact for greedy decoding too; a generation engine never pools.
            generator = LLM(stage, runner="generate", **settings.engine_kwargs(share=share))
            engines.append(generator)
        return VllmRewardModel(encoder, pooling, mode=mode, settings=settings, generator=generator,
                               generation_defaults=defaults, device_type=current_platform.device_type)

    return _with_engines(path, encoder, build)


__all__ = ["VllmRewardModel", "VllmSettings", "load_vllm_reward_model", "sampling_settings", "stage_checkpoint"]
