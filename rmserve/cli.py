"""The ``rmserve`` command line. Wiring only: settings -> app or engine; the work lives elsewhere.

    rmserve serve [--model DIR] [--host H] [--port P] [--grpc-port G] ...   (all ServerConfig fields)
    rmserve serve --model A --model judge=B [--ensemble weighted_mean --ensemble-weights 0.7,0.3]
    rmserve serve --api-key-file keys.txt --tls-cert cert.pem --tls-key key.pem --log-format json
    rmserve score --model DIR --input items.jsonl --output scores.jsonl [--batch-size N]

``serve`` takes every ``ServerConfig`` field as a flag (also settable as ``RMSERVE_*`` env vars or
in a YAML file given by ``--config``; flags win over env over YAML). ``score`` scores a JSONL file
offline through the same engine and service the server uses: each input line is one item in the
REST shape (``{"prompt" | "messages", "images"?, "response", "truncate"?}``, images as data URLs
or file paths relative to the input file); each output line is that item's result
(``{"reward", ...}``) or ``{"error": {...}}``, in input order. Blank input lines are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from rmserve import __version__
from rmserve.config import ServerConfig, config_fields, field_type, load_config


def configure_logging(level: str, fmt: str = "text") -> None:
    from rmserve.server.logs import configure_logging as configure

    configure(level, fmt)


def retain_host_memory() -> None:
    """Forwards reuse the memory they free (rmserve/host_memory.py); said in the log."""
    from rmserve.host_memory import retain_freed_memory

    applied = retain_freed_memory()
    log = logging.getLogger("rmserve")
    log.info("host memory: freed memory kept for reuse (%s)", applied or "not glibc: unchanged")


def set_torch_threads(flag: int | None) -> None:
    """torch's intra-op threads: the flag, OMP_NUM_THREADS, or torch's default within the CPU quota."""
    from rmserve.host_threads import apply_torch_threads

    apply_torch_threads(flag)


# ── serve ──────────────────────────────────────────────────────────────────────────────────────


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    for f in config_fields():
        kind = field_type(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)})"
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif f.metadata.get("repeatable"):  # --model A --model B: joined with commas, as in env/YAML
            metavar = f.metadata.get("metavar", f.name.upper())
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text, metavar=metavar)
        else:
            parser.add_argument(
                flag, dest=f.name, type=kind, default=None, help=help_text, metavar=f.name.upper()
            )


def cmd_serve(args: argparse.Namespace) -> int:
    from rmserve.server import create_app, loading
    from rmserve.server.shutdown import serve

    overrides = {f.name: getattr(args, f.name) for f in config_fields()}
    overrides = {k: ",".join(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        config = load_config(overrides, yaml_path=args.config)
    except (ValueError, OSError) as exc:
        print(f"rmserve serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    if config.retain_host_memory:
        retain_host_memory()
    if config.backend == "transformers":  # vLLM sizes its own workers' threads
        set_torch_threads(config.torch_threads)

    # Looked up here, not bound at import: tests (tests/ops_server.py) wrap the server's one loader.
    app = create_app(config, model_factory=loading.load_model_from_config, freeze_gc=True)
    return serve(app, config)  # SIGTERM: readiness off, drain, exit 0 (server/shutdown.py)


# ── score ──────────────────────────────────────────────────────────────────────────────────────


def cmd_score(args: argparse.Namespace) -> int:
    from rmserve.server import loading

    configure_logging(args.log_level)
    retain_host_memory()
    set_torch_threads(args.torch_threads)
    returns = [r.strip() for r in args.return_.split(",") if r.strip()]
    config = ServerConfig(model=args.model, device=args.device, dtype=args.dtype)
    model = loading.run_in_passing_thread(loading.load_model_from_config, config)  # why: its docstring
    loading.warn_if_untrained(model.info)
    ok, failed = asyncio.run(
        score_file(
            model,
            args.input,
            args.output,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            returns=returns,
            progress=not args.quiet,
        )
    )
    print(f"scored {ok} items, {failed} failed -> {args.output}", file=sys.stderr)
    return 1 if failed else 0


async def score_file(
    model,
    input_path: str,
    output_path: str,
    *,
    batch_size: int = 32,
    max_batch_tokens: int = 16384,
    returns: Sequence[str] = ("reward",),
    progress: bool = True,
) -> tuple[int, int]:
    """Score every line of ``input_path`` into ``output_path`` (same order). Returns (ok, failed)."""
    from tqdm import tqdm

    from rmserve.api import ImageCache, ImageLoader, ScoreService, ServiceLimits
    from rmserve.api.videos import VideoCache, VideoLoader
    from rmserve.engine import Engine, EngineConfig
    from rmserve.host_threads import single_threaded_torch_here

    window = 4 * batch_size  # lines in flight or awaiting in-order write: bounds memory on huge files
    engine = Engine(
        model,
        EngineConfig(
            max_batch_size=batch_size,
            max_batch_tokens=max(max_batch_tokens, model.info.max_length),
            max_wait_ms=2.0,
            max_queue_items=window,
            preprocess_workers=min(4, os.cpu_count() or 1),
        ),
        preprocess_thread_setup=single_threaded_torch_here,
    )
    limits = ServiceLimits(max_items_per_request=1)
    base_dir = os.path.dirname(os.path.abspath(input_path))  # items may name image and video files beside it
    images = ImageLoader(limits.images, ImageCache(256 * 1024 * 1024), base_dir=base_dir)
    videos = VideoLoader(limits.videos, VideoCache(limits.video_cache_bytes), base_dir=base_dir)
    await asyncio.to_thread(engine.start)
    service = ScoreService(engine, limits=limits, images=images, videos=videos)
    with open(input_path, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    results: dict[int, dict] = {}
    slots = asyncio.Semaphore(window)
    counts = {"ok": 0, "failed": 0}
    try:
        with (
            open(input_path, encoding="utf-8") as src,
            open(output_path, "w", encoding="utf-8") as dst,
            tqdm(total=total, unit="item", disable=not progress, file=sys.stderr) as bar,
        ):
            next_out = 0

            def flush() -> None:
                nonlocal next_out
                while next_out in results:
                    result = results.pop(next_out)
                    counts["failed" if "error" in result else "ok"] += 1
                    dst.write(json.dumps(result) + "\n")
                    next_out += 1
                    slots.release()
                    bar.update(1)

            async def one(index: int, line: str) -> None:
                results[index] = await _score_line(service, line, returns)
                flush()

            tasks = []
            lines = (line for line in src if line.strip())
            for index, line in enumerate(lines):
                await slots.acquire()
                tasks.append(asyncio.create_task(one(index, line)))
            await asyncio.gather(*tasks)
            flush()
    finally:
        await asyncio.to_thread(engine.stop, drain=False)
    return counts["ok"], counts["failed"]


# Each line is scored as a one-item request; its errors name fields relative to the line (``images.0``).
LINE = ("items", 0)


async def _score_line(service, line: str, returns: Sequence[str]) -> dict:
    from pydantic import ValidationError

    from rmserve.api.protocol import ScoreRequest, invalid_input_from_errors
    from rmserve.errors import InvalidInput, RMServeError

    try:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line is not valid JSON: {exc}", code="invalid_json") from None
        try:
            request = ScoreRequest.model_validate({"items": [item], "return": list(returns)})
        except ValidationError as exc:
            raise invalid_input_from_errors(exc.errors()).within(LINE) from None
        result = await service.score(request)
    except RMServeError as exc:
        return {"error": exc.within(LINE).to_dict()}
    return result.response.items[0].model_dump(exclude_none=True)


# ── entry point ────────────────────────────────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmserve", description="Batched reward-model server for multimodal RLHF."
    )
    parser.add_argument("--version", action="version", version=f"rmserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the REST server")
    serve.add_argument("--config", default=None, help="YAML settings file (env: RMSERVE_CONFIG)")
    _add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)

    score = sub.add_parser("score", help="score a JSONL file offline")
    score.add_argument("--model", default=None, help="model directory (default: the bundled default model)")
    score.add_argument("--input", required=True, help="JSONL, one item per line in the REST item shape")
    score.add_argument("--output", required=True, help="JSONL written in input order")
    score.add_argument("--batch-size", type=int, default=32, help="most items per forward pass (default: 32)")
    score.add_argument("--max-batch-tokens", type=int, default=16384, help="padded-token budget per forward")
    score.add_argument(
        "--return", dest="return_", default="reward", help="comma list of reward,attributes,safety"
    )
    score.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    score.add_argument("--dtype", default="float32", help="weights dtype (default: float32)")
    score.add_argument("--log-level", default="warning", help="logging level (default: warning)")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.add_argument("--torch-threads", type=int, default=None, metavar="N",
                       help="torch intra-op threads (default: OMP_NUM_THREADS, else torch's, capped at the "
                            "cgroup CPU quota)")
    score.set_defaults(func=cmd_score)

    convert = sub.add_parser("convert", help="convert a reward-model checkpoint into rmserve's format")
    from rmserve.models import convert as convert_module

    convert_module.add_arguments(convert)
    convert.set_defaults(func=convert_module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "score" and args.batch_size < 1:
        print("rmserve score: --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.command == "score" and args.torch_threads is not None and args.torch_threads < 1:
        print("rmserve score: --torch-threads must be >= 1", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
