"""What the locust files send: a deterministic pool of prompt + image + responses, and the options.

Shared by locustfile_rest.py and locustfile_grpc.py (locust puts this folder on sys.path). No
locust import here, so the pool can be built and tested anywhere.

Workloads (docs: README "Load testing"):
- **GRPO**: a rollout worker takes one prompt + image, samples G responses and sends each as its
  own one-sample request, all G at once (OpenRLHF / veRL style), tagged with a shared ``group``
  id; then the next prompt. The image goes inline with every request (``--image-mode inline``)
  or is uploaded once and referenced by sha256 (``ref``, the default).
- **mixed**: single-sample score, pairwise compare and (if the model has a safety head) safety.

Options (locust flags, or LOCUST_* env vars): ``--group-size``, ``--image-mode``, ``--image-size``,
``--prompts``, ``--max-response-words``, ``--request-timeout``, ``--api-key``, ``--timings-json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import threading
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30), "green": (40, 170, 60), "blue": (40, 70, 220),
    "yellow": (235, 205, 30), "purple": (140, 50, 170), "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = (
    "What is in the image?",
    "Describe the shape in the picture.",
    "What colour and shape do you see?",
    "Tell me what this image shows.",
)
FILLER = (
    "The shape sits near the middle of a plain white background and nothing else is drawn. "
    "Its edges are sharp and the fill is a single flat colour without any gradient or texture. "
    "There is no text, no shadow and no second object anywhere in the frame."
).split()


@dataclass(frozen=True)
class Prompt:
    index: int
    question: str
    colour: str
    shape: str
    png: bytes
    sha256: str

    @property
    def data_url(self) -> str:
        import base64

        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def add_options(parser) -> None:
    """Register the workload options on locust's argument parser (``events.init_command_line_parser``)."""
    parser.add_argument("--group-size", type=int, default=8, env_var="LOCUST_GROUP_SIZE",
                        help="GRPO: responses per prompt + image (G), sent concurrently, one per request")
    parser.add_argument("--image-mode", choices=["ref", "inline"], default="ref", env_var="LOCUST_IMAGE_MODE",
                        help="ref: upload each image once, then send its sha256; inline: send the bytes every time")
    parser.add_argument("--image-size", type=int, default=112, env_var="LOCUST_IMAGE_SIZE",
                        help="image width = height in pixels")
    parser.add_argument("--prompts", type=int, default=64, env_var="LOCUST_PROMPTS",
                        help="distinct prompt + image pairs in the pool")
    parser.add_argument("--max-response-words", type=int, default=40, env_var="LOCUST_MAX_RESPONSE_WORDS",
                        help="responses are a short description plus 0..N filler words")
    parser.add_argument("--request-timeout", type=float, default=60.0, env_var="LOCUST_REQUEST_TIMEOUT",
                        help="client timeout per request in seconds (also sent as the server-side deadline)")
    parser.add_argument("--api-key", default=os.environ.get("RMSERVE_API_KEY", ""), env_var="LOCUST_API_KEY",
                        help="Bearer key for a server started with --api-key (default: $RMSERVE_API_KEY)")
    parser.add_argument("--timings-json", default="", env_var="LOCUST_TIMINGS_JSON",
                        help="write the server-reported queue/inference times (ms) per endpoint here at exit")
    parser.add_argument("--seed", type=int, default=0, env_var="LOCUST_SEED", help="workload seed")


@dataclass(frozen=True)
class Settings:
    group_size: int = 8
    image_mode: str = "ref"
    image_size: int = 112
    prompts: int = 64
    max_response_words: int = 40
    request_timeout: float = 60.0
    api_key: str = ""
    timings_json: str = ""
    seed: int = 0

    @classmethod
    def from_options(cls, options) -> Settings:
        names = cls.__dataclass_fields__
        values = {name: getattr(options, name) for name in names if getattr(options, name, None) is not None}
        settings = cls(**values)
        if settings.group_size < 1 or settings.prompts < 1 or settings.image_size < 8:
            raise ValueError("--group-size and --prompts must be >= 1 and --image-size >= 8")
        return settings


def draw(colour: str, shape: str, size: int, rng: random.Random) -> bytes:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    r = size * rng.uniform(0.22, 0.32)
    cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.4, 0.6)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def build_pool(settings: Settings) -> list[Prompt]:
    """``settings.prompts`` prompt + image pairs; prompt i depends only on the seed and i."""
    pool = []
    for i in range(settings.prompts):
        rng = random.Random(f"{settings.seed}:prompt:{i}")
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        png = draw(colour, shape, settings.image_size, rng)
        pool.append(Prompt(i, rng.choice(QUESTIONS), colour, shape, png, hashlib.sha256(png).hexdigest()))
    return pool


def responses(prompt: Prompt, n: int, rng: random.Random, max_words: int) -> list[str]:
    """``n`` sampled responses: right or wrong colour and shape, each with 0..max_words filler words."""
    out = []
    for _ in range(n):
        colour = prompt.colour if rng.random() < 0.5 else rng.choice(sorted(COLOURS))
        shape = prompt.shape if rng.random() < 0.5 else rng.choice(SHAPES)
        words = rng.randint(0, max_words)
        start = rng.randrange(len(FILLER))
        filler = " ".join(FILLER[(start + j) % len(FILLER)] for j in range(words))
        out.append(f"A {colour} {shape}. {filler}".strip())
    return out


# ── server-reported timings ────────────────────────────────────────────────────────────────────


@dataclass
class ServerTimings:
    """x-queue-time-ms / x-inference-time-ms per endpoint, as the server reported them."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, queue_ms: str | None, inference_ms: str | None) -> None:
        if queue_ms is None or inference_ms is None:
            return
        with self.lock:
            entry = self.samples.setdefault(name, {"queue_ms": [], "inference_ms": []})
            entry["queue_ms"].append(float(queue_ms))
            entry["inference_ms"].append(float(inference_ms))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, entry in self.samples.items():
            row: dict[str, float] = {"count": len(entry["queue_ms"])}
            for key, values in entry.items():
                values = sorted(values)
                for pct in (50, 95, 99):
                    row[f"{key}_p{pct}"] = values[min(len(values) - 1, int(len(values) * pct / 100))]
            out[name] = row
        return out

    def write(self, path: str) -> None:
        if path:
            with open(path, "w") as f:
                json.dump(self.summary(), f, indent=2, sort_keys=True)


def write_final(environment, timings: ServerTimings, settings: Settings) -> None:
    """At locust's ``quit`` event (every user stopped): the server timings, and the final totals as
    ``PREFIX_final_stats.csv`` / ``PREFIX_final_failures.csv``. Locust's own PREFIX_stats.csv is its
    last once-a-second snapshot, which misses the final second and the requests finished while stopping."""
    import csv

    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    timings.write(settings.timings_json)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
        with open(f"{prefix}_final_stats.csv", "w", newline="") as f:
            writer.requests_csv(csv.writer(f))
        with open(f"{prefix}_final_failures.csv", "w", newline="") as f:
            writer.failures_csv(csv.writer(f))
