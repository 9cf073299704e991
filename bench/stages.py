"""Where a request's CPU goes, stage by stage, in this process (no server, no threads, no HTTP).

    python -m bench.stages [--model DIR] [--responses 256] [--group-size 8] [--batch-size 32]

Each stage runs over every request of a GRPO workload (224x224 PNG inline, one response per
request) and is timed with ``time.thread_time`` (CPU of this thread: a busy shared machine slows
the wall clock, much less this). The forward rows are the model's own cost per item at the
server's batch size, with and without prefix sharing: what no server design can remove. The
last row, "in-process ceiling", is the per-item sum of the stages rmserve must run, so
1000 / that is the most responses per second one core can give with this model.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from rmserve.api.images import ImageLimits, decode_base64_image, decode_image_bytes
from rmserve.api.protocol import ScoreItemOut, ScoreRequest, ScoreResponse, Usage
from rmserve.models.template import render
from rmserve.models.types import ScoreItem, ServingOptions

from .model import load_in_process
from .workloads import WorkloadFactory


def per_request_ms(fn, xs) -> tuple[float, list]:
    start = time.thread_time()
    out = [fn(x) for x in xs]
    return (time.thread_time() - start) * 1000 / len(xs), out


def measure(model_dir: str, responses: int, group_size: int, batch_size: int) -> list[tuple[str, float]]:
    model = load_in_process(model_dir, threads=1)
    model.configure_serving(ServingOptions(share_prefix=True, vision_cache_bytes=64 << 20,
                                           prompt_cache_bytes=64 << 20))
    bodies = [json.dumps({"items": [it]}).encode()
              for it in WorkloadFactory(model.tokenizer, group_size=group_size).build("grpo", responses).items]
    limits = ImageLimits()
    rows: list[tuple[str, float]] = []

    def stage(name: str, fn, xs):
        ms, out = per_request_ms(fn, xs)
        rows.append((name, ms))
        return out

    requests = stage("JSON parse + pydantic (ScoreRequest)", ScoreRequest.model_validate_json, bodies)
    raws = stage("base64 decode", lambda r: decode_base64_image(r.items[0].images[0], limits), requests)
    decoded = stage("image decode (PNG -> RGB, every request)", lambda b: decode_image_bytes(b, limits), raws)
    rows.append(("image decode, 1 in G (rmserve's image cache)", rows[-1][1] / group_size))
    items = [ScoreItem(prompt=r.items[0].prompt, response=r.items[0].response, images=[d.image],
                       image_hashes=[d.sha256]) for r, d in zip(requests, decoded, strict=True)]
    stage("chat template (render)", lambda it: render(model.tokenizer, it), items)
    prompts = [render(model.tokenizer, it)[0] for it in items]
    pairs = list(zip(prompts, items, strict=True))
    stage("processor + prompt tokenization (uncached)",
          lambda pair: model.family.tokenize_prompt(pair[0], pair[1].images, False), pairs)
    encoded = stage("encode, all of it (prompt cache: processor 1 in G)", model.encode, items)
    # The whole walk (get_rope_index): what a prompt's first request pays; the others extend its cached positions.
    stage("M-RoPE positions, whole walk (1 in G inside encode)",
          lambda e: model.family.item_positions(e.input_ids, dict(e.vision)), encoded)
    for share in (True, False):
        model.share_prefix = share
        start = time.thread_time()
        for i in range(0, len(encoded), batch_size):
            model.score_batch(encoded[i:i + batch_size])
        rows.append((f"forward, batch {batch_size}, {'sharing' if share else 'no sharing'}",
                     (time.thread_time() - start) * 1000 / len(encoded)))
    stage("response build + JSON", lambda _: ScoreResponse(
        items=[ScoreItemOut(reward=0.5)], model="m", usage=Usage(prompt_tokens=1, total_tokens=1, items=1),
    ).model_dump_json(exclude_none=True), requests)
    by_name = dict(rows)
    ceiling = (by_name["JSON parse + pydantic (ScoreRequest)"] + by_name["base64 decode"]
               + by_name["image decode, 1 in G (rmserve's image cache)"]
               + by_name["encode, all of it (prompt cache: processor 1 in G)"]
               + by_name[f"forward, batch {batch_size}, sharing"] + by_name["response build + JSON"])
    rows.append(("in-process ceiling (the stages above rmserve runs)", ceiling))
    return rows


def main(argv: list[str] | None = None) -> int:
    from rmserve.models import default_model_path

    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="rmserve checkpoint (default: the default model)")
    parser.add_argument("--responses", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="the server's --max-batch-size (default 32)")
    args = parser.parse_args(argv)
    model_dir = os.path.abspath(args.model or default_model_path())
    rows = measure(model_dir, args.responses, args.group_size, args.batch_size)
    print(f"model {model_dir}, GRPO G={args.group_size}, {args.responses} requests, one thread, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| stage | CPU ms per request |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
