"""The server floor: a minimal FastAPI app that does a reward server's wire work and no model work.

It parses the same JSON into the same pydantic request type as rmserve (``ScoreRequest``), decodes
every image with rmserve's own safe decoder (base64, limits, full Pillow decode to RGB; no cache, as
a minimal app would not have one), and answers ``{"items": [{"reward": 0.0}, ...]}``. There is no
model, so the reward is a placeholder the floor benchmark never reads: what it measures is how many
requests per second the HTTP + JSON + image path alone allows on this machine, the ceiling any
Python reward server on the same stack can reach. ``make bench-floor`` runs it beside rmserve.

    python -m bench.floor_server --port 8002
"""

from __future__ import annotations

import argparse
import logging

from fastapi import FastAPI

from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.api.protocol import ScoreRequest

LIMITS = ImageLimits()


def create_app() -> FastAPI:
    app = FastAPI(title="server floor (no model)")

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ok"}

    @app.post("/v1/score")
    async def score(body: ScoreRequest) -> dict:
        # On the event loop, like the simplest app would: any thread hop would be rmserve's design, not the floor's.
        for item in body.items:
            for image in item.images:
                decode_image_bytes(decode_base64_image(image, LIMITS), LIMITS)
        return {"items": [{"reward": 0.0} for _ in body.items], "model": "floor"}

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
