"""One-off measurement for conversations (issue: images in any turn, video): on one model,

1. the cost of a video item vs the same frames sent as images (tokens, preprocessing, forward), and of
   decoding the MP4 (cold, then from the decoded-clip cache);
2. that the image and vision-feature caches hit across turns: a later step's conversation repeats an
   earlier image in its first turn and adds new ones in later turns.

    python -m bench.conversations [--preset quick] [--frames 8] [--repeats 5] [--out bench/results/conversations.json]

Single process, no server: the API's loaders (api/images.py, api/videos.py) and the model library,
the pieces a request goes through, timed one by one.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time

import numpy as np
from PIL import Image

from bench.model import MODELS, build_model


def frame(seed: int, size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([(x * 3 + seed * 29) % 256, (y * 2 + seed * 13) % 256, ((x + y) + seed * 41) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def png_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick", choices=sorted(MODELS))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join("bench", "results", "conversations.json"))
    args = parser.parse_args()

    import torch

    from rmserve.api.images import ImageCache, ImageLimits, ImageLoader
    from rmserve.api.videos import VideoCache, VideoLimits, VideoLoader
    from rmserve.models import ScoreItem
    from rmserve.models.types import VideoClip
    from rmserve.models.video import encode_mp4

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    dims = MODELS[args.preset]
    model = build_model(dims)
    size = dims.image_size
    frames = [frame(s, size) for s in range(args.frames)]
    question = [{"type": "text", "text": "What happens in the clip?"}]

    as_video = ScoreItem(response="A gradient slides left.", messages=[
        {"role": "user", "content": [{"type": "video"}, *question]}], videos=[VideoClip(frames, fps=2.0, key="v")])
    as_images = ScoreItem(response="A gradient slides left.", messages=[
        {"role": "user", "content": [*({"type": "image"} for _ in frames), *question]}], images=frames)
    results: dict = {"preset": args.preset, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                     "frames": args.frames, "frame_size": f"{size}x{size}", "torch_threads": torch.get_num_threads()}
    with torch.inference_mode():
        for name, item in (("video", as_video), ("images", as_images)):
            encode_ms, encoded = timed(lambda item=item: model.encode(item), args.repeats)
            forward_ms, _ = timed(lambda encoded=encoded: model.score_batch([encoded]), args.repeats)
            results[name] = {"tokens": encoded.num_tokens, "encode_ms": round(encode_ms, 1),
                             "forward_ms": round(forward_ms, 1)}

    # Decoding the same frames from an MP4: probe + decode cold, then the decoded-clip cache.
    mp4 = encode_mp4(frames, fps=2)
    url = "data:video/mp4;base64," + base64.b64encode(mp4).decode()
    videos = VideoLoader(VideoLimits(max_frames=args.frames), VideoCache(64 << 20))
    cold_ms, clip = timed(lambda: VideoLoader(VideoLimits(max_frames=args.frames)).decode(
        videos.probe(url, fps=2.0, max_frames=None, param="p")), args.repeats)
    videos.decode(videos.probe(url, fps=2.0, max_frames=None, param="p"))
    cached_ms, _ = timed(lambda: videos.decode(videos.probe(url, fps=2.0, max_frames=None, param="p")), args.repeats)
    results["mp4"] = {"bytes": len(mp4), "frames_kept": len(clip.frames), "probe_decode_ms": round(cold_ms, 1),
                      "probe_cached_ms": round(cached_ms, 1)}

    # Caches across turns: step 1 shows A (turn 1) and B (turn 3); step 2 repeats A in turn 1, adds C in turn 3
    # and D in turn 5. Images are decoded by the API's loader (ImageCache by sha256), the vision tower is cached.
    model.enable_vision_cache(256 << 20)
    model.enable_prompt_cache(64 << 20)
    loader = ImageLoader(ImageLimits(), ImageCache(64 << 20))
    urls = {k: png_url(frame(100 + i, size)) for i, k in enumerate("ABCD")}

    def conversation(first: str, later: list[str], response: str) -> ScoreItem:
        decoded = [loader.load(urls[k], param="p") for k in [first, *later]]
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
        for k in later:
            messages += [{"role": "assistant", "content": "Noted."},
                         {"role": "user", "content": [{"type": "text", "text": f"And {k}?"}, {"type": "image"}]}]
        return ScoreItem(response=response, messages=messages, images=[d.image for d in decoded],
                         image_hashes=[d.sha256 for d in decoded])

    with torch.inference_mode():
        step1 = [conversation("A", ["B"], f"Reply {g}") for g in range(4)]  # a GRPO group of 4
        model.share_prefix = True
        model.score_batch([model.encode(it) for it in step1])
        after1 = {"image_cache": loader.cache.stats(), "vision_cache": model.vision_cache.stats()}
        step2 = [conversation("A", ["C", "D"], f"Reply {g}") for g in range(4)]
        model.score_batch([model.encode(it) for it in step2])
    after2 = {"image_cache": loader.cache.stats(), "vision_cache": model.vision_cache.stats(),
              "prompt_cache": model.prompt_cache.stats()}
    results["caches_across_turns"] = {"after_step1": after1, "after_step2": after2}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
