"""Bringing the models up: load each one (in a thread), apply the serving switches, start its engine,
build the service over all of them, and tell the state (``AppState.models_up``).

    load_model_from_config(config)     the default model factory (a checkpoint directory, or vLLM)
    run_in_passing_thread(fn, *args)   fn on a thread that ends with it (loading: see its docstring)
    bring_up(state, models, factory)   the app's startup task; a failure is kept in ``state.load_error``
                                       (/healthz 503) rather than crashing the process
    build_service(engines, config)     the ScoreService over one engine or several (an ensemble)
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from rmserve.api import EnsembleSpec, ImageCache, ImageLimits, ImageLoader, ModelSet, ScoreService, ServiceLimits
from rmserve.api.fetch import ImageFetcher
from rmserve.api.videos import VideoLimits
from rmserve.config import ServerConfig
from rmserve.engine import Engine
from rmserve.host_threads import single_threaded_torch_here
from rmserve.models.types import ModelInfo, ServedModel, ServingOptions
from rmserve.server.state import AppState

log = logging.getLogger("rmserve.server")

ModelFactory = Callable[[ServerConfig], ServedModel]
T = TypeVar("T")


def serving_options(config: ServerConfig) -> ServingOptions:
    """The serving-time model switches (prefix sharing, forward calls, caches) from the server's config."""
    return ServingOptions(
        share_prefix=config.share_prefix,
        max_forward_tokens=config.max_forward_tokens,
        vision_cache_bytes=config.vision_cache_mb * 1024 * 1024,
        prompt_cache_bytes=config.prompt_cache_mb * 1024 * 1024,
    )


def load_model_from_config(config: ServerConfig) -> ServedModel:
    """The default factory: ``config.model`` or the bundled default model, on ``config.device`` (or on vLLM)."""
    from rmserve.models import default_model_path, load_reward_model

    path = config.model or default_model_path()
    if config.backend == "vllm":
        from rmserve.models.vllm_backend import load_vllm_reward_model

        log.info("loading model from %s onto vLLM (dtype=%s)", path, config.dtype)
        return load_vllm_reward_model(path, config.vllm_settings())
    log.info("loading model from %s (device=%s, dtype=%s)", path, config.device, config.dtype)
    return load_reward_model(path, device=config.device, dtype=config.dtype)


def run_in_passing_thread(fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` on a new thread, joined before returning (its exception re-raised here).

    Loading a model runs torch's parallel regions, and a thread that has run them keeps an OpenMP team
    (its helper threads) for as long as it lives. ``asyncio.to_thread``'s pool threads and the main thread
    live on, so their teams would outlive the load beside the worker's; with more OpenMP threads alive than
    cores, libgomp stops spinning between parallel regions and the forward's threads sleep and wake around
    every op (bench/README.md, "One OpenMP team"). A thread that ends takes its team with it."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # re-raised on the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="rmserve-load", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def warn_if_untrained(info: ModelInfo) -> None:
    if info.untrained:
        banner = "!" * 78
        log.warning(
            "\n%s\n!! The model %r has UNTRAINED weights: its rewards are deterministic noise.\n"
            "!! Fine for wiring and load tests; pass --model DIR to serve a real reward model.\n%s",
            banner,
            info.name,
            banner,
        )


def build_service(engines: Engine | Mapping[str, Engine], config: ServerConfig) -> ScoreService:
    """The service over one engine, or several (an ensemble of all of them, per ``config.ensemble``)."""
    image_limits = ImageLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_image_bytes)
    cache = ImageCache(config.image_cache_mb * 1024 * 1024) if config.image_cache_mb else None
    fetcher = None
    if config.allow_image_urls:
        fetcher = ImageFetcher(
            max_bytes=config.max_image_bytes,
            timeout_s=config.image_url_timeout_s,
            max_redirects=config.image_url_max_redirects,
        )
    limits = ServiceLimits(
        max_items_per_request=config.max_items_per_request,
        max_judge_votes=config.max_judge_votes,
        max_images_per_item=config.max_images_per_item,
        max_pixels_per_item=config.max_pixels_per_item,
        images=image_limits,
        videos=VideoLimits(max_frames=config.max_video_frames, max_bytes=config.max_video_bytes,
                           max_frame_pixels=config.max_image_pixels,
                           max_decode_pixels=config.max_video_decode_pixels),
        video_cache_bytes=config.video_cache_mb * 1024 * 1024,
    )
    if isinstance(engines, Engine):
        engines = {engines.model.info.name: engines}
    weights = config.ensemble_weight_list()
    ensemble = EnsembleSpec(config.ensemble_name, config.ensemble, tuple(weights) if weights else None)
    return ScoreService(
        ModelSet(engines, ensemble=ensemble, aliases=config.served_model_names()),
        limits=limits,
        images=ImageLoader(image_limits, cache, fetcher=fetcher),
        safety=config.build_safety_policy(),
        apply_safety=config.safety_apply,  # type: ignore[arg-type]  # validated by ServerConfig
        compat_verifier=config.compat_verifier,
    )


def _named(models: Sequence[ServedModel] | Mapping[str, ServedModel]) -> dict[str, ServedModel]:
    """Models by unique name: a mapping's keys (the models are renamed), else their own names (-2, -3 on clashes)."""
    named: dict[str, ServedModel] = {}
    items = models.items() if isinstance(models, Mapping) else [(None, m) for m in models]
    for name, model in items:
        if name is None:
            base = name = model.info.name
            suffix = 2
            while name in named:
                name, suffix = f"{base}-{suffix}", suffix + 1
        if model.info.name != name:
            _rename(model, name)
        named[name] = model
    return named


def _rename(model: ServedModel, name: str) -> None:
    model.name = name  # info (computed from the name) follows


async def _load_models(config: ServerConfig, factory: ModelFactory) -> tuple[dict[str, ServedModel], list[float]]:
    """The models by name, and each one's load time in seconds (in load order)."""
    specs = config.model_specs()
    loaded: dict[str, ServedModel] | list[ServedModel] = {} if all(name for name, _ in specs) else []
    seconds = []
    for name, path in specs:
        # the factory gets the directory alone: a single NAME=DIR is a name and a path, not a path
        cfg = dataclasses.replace(config, model=path)
        start = time.perf_counter()
        model = await asyncio.to_thread(run_in_passing_thread, factory, cfg)
        seconds.append(time.perf_counter() - start)
        if isinstance(loaded, dict):
            loaded[name] = model
        else:
            if name:
                _rename(model, name)
            loaded.append(model)
    return _named(loaded), seconds


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (the models, torch, transformers: ~400k objects) out of the
    garbage collector's reach. Each full collection walked them all, ~0.3-0.6 s with the GIL held, every
    few seconds under load (profiled: bench/README.md); they live as long as the process anyway.
    Only ``rmserve serve`` asks for it (``create_app(freeze_gc=True)``): the collect costs ~0.5 s, too much
    for every app a test suite starts; the app's shutdown unfreezes (``gc.unfreeze``)."""
    gc.collect()
    gc.freeze()


async def bring_up(
    state: AppState, models: Sequence[ServedModel] | Mapping[str, ServedModel] | None, factory: ModelFactory
) -> None:
    config = state.config
    engines: dict[str, Engine] = {}
    try:
        if models is not None:
            named, load_seconds = _named(models), []
        else:
            named, load_seconds = await _load_models(config, factory)
        for k, (name, model) in enumerate(named.items()):
            start = time.perf_counter()
            info = model.info
            warn_if_untrained(info)
            if info.max_length > config.max_batch_tokens:
                log.warning(
                    "max_batch_tokens=%d is below model %s's max_length=%d: items longer than the "
                    "budget will be refused; raise --max-batch-tokens to serve them",
                    config.max_batch_tokens,
                    name,
                    info.max_length,
                )
            model.configure_serving(serving_options(config))
            engine = Engine(model, config.engine_config(), preprocess_thread_setup=single_threaded_torch_here)
            engine.requests_in_progress = state.inflight.in_progress
            await asyncio.to_thread(engine.start, warmup=config.warmup)
            engines[name] = engine
            load = load_seconds[k] if k < len(load_seconds) else 0.0
            state.metrics.model_loaded(name, load_s=load, warmup_s=time.perf_counter() - start)
        _warn_about_policy(config, [m.info for m in named.values()])
        service = build_service(engines, config)
        if state.freeze_gc:
            freeze_startup_objects()
        state.models_up(engines, service)
        for name, engine in engines.items():
            info = engine.model.info
            log.info("ready: model %s (%s, %s on %s)", name, info.family, info.dtype, info.device)
        ens = state.service.models.ensemble if state.service is not None else None
        if ens is not None:
            log.info("ensemble %r = %s of %s (the default model)", ens.name, ens.method, [m.name for m in ens.members])
    except Exception as exc:  # keep serving /healthz (503) so the failure is visible, not a crash loop
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("model failed to load")
        for engine in engines.values():
            await asyncio.to_thread(engine.stop, drain=False, timeout=1.0)


def _warn_about_policy(config: ServerConfig, infos: list[ModelInfo]) -> None:
    categories = {c for info in infos for c in info.safety_categories}
    policy = config.build_safety_policy()
    unknown = sorted(set(policy.rules) - categories)
    if unknown and categories:
        log.warning("safety_policy names categories no served model reports: %s (models report %s)",
                    ", ".join(unknown), ", ".join(sorted(categories)))
