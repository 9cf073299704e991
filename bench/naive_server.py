"""A naive reward server, the baseline rmserve is compared with (OpenRLHF ``serve_rm`` semantics).

Same model checkpoint, same preprocessing (rmserve's image decoding and ``model.encode``), same
wire shape (``POST /v1/score``, answers ``{"items": [{"reward": ...}]}``), but no engine: every
request is decoded, encoded and scored on its own (batch size 1, nothing batched across
requests, no prefix sharing, no caches) in ONE worker thread, so the event loop keeps accepting
requests while the model runs. Run it:

    python -m bench.naive_server --model DIR --port 8001 [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.models.types import ScoreItem


def _score_one(model, wire: dict) -> float:
    limits = ImageLimits()
    decoded = [decode_image_bytes(decode_base64_image(url, limits), limits) for url in wire.get("images", [])]
    item = ScoreItem(prompt=wire.get("prompt"), messages=wire.get("messages"), response=wire["response"],
                     images=[d.image for d in decoded], image_hashes=[d.sha256 for d in decoded])
    return model.score_batch([model.encode(item)])[0].reward


def create_app(model) -> FastAPI:
    app = FastAPI(title="naive reward server")
    worker = ThreadPoolExecutor(1, thread_name_prefix="naive-worker")

    @app.get("/healthz")
    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ok"}

    @app.post("/v1/score")
    async def score(request: Request):
        body = await request.json()
        loop = asyncio.get_running_loop()
        try:
            rewards = [await loop.run_in_executor(worker, _score_one, model, wire) for wire in body["items"]]
        except Exception as exc:  # a baseline: report, don't classify
            return JSONResponse({"error": {"message": f"{type(exc).__name__}: {exc}"}}, status_code=500)
        return {"items": [{"reward": r} for r in rewards], "model": model.name}

    return app


def main(argv: list[str] | None = None) -> int:
    import torch
    import uvicorn

    from rmserve.models import load_reward_model

    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="rmserve checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    torch.set_num_threads(args.threads)
    model = load_reward_model(args.model, device=args.device, dtype=args.dtype)
    model.warmup()  # loaded and warm before the port opens: listening means ready
    uvicorn.run(create_app(model), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
