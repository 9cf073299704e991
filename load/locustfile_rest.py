"""Locust load for rmserve's REST API: a GRPO-shaped workload and a mixed one (rm_workload.py).

    locust -f load/locustfile_rest.py --host http://127.0.0.1:8000 --headless -u 8 -r 4 -t 60s
    locust -f load/locustfile_rest.py --host https://rm.example.com --api-key "$KEY" GrpoUser   # one class
    make load                                             # a local server, REST + gRPC, and a report

Users: ``GrpoUser`` (weight 3: G concurrent one-sample /v1/score requests per prompt + image,
sharing an ``x-rmserve-group`` header) and ``MixedUser`` (weight 1: score, compare, and safety when the default
model has a safety head, by GET /v1/models). Request names: ``/v1/score [grpo]``, ``/v1/images``,
``/v1/score``, ``/v1/compare``, ``/v1/safety``. A 4xx/5xx (429 overloaded included) is a failure.
"""

from __future__ import annotations

import random
import uuid

import rm_workload as wl
from gevent.pool import Group
from locust import FastHttpUser, constant, events, task

STATE: dict = {}  # per process: settings, pool, uploaded sha256s, timings, has_safety


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    wl.add_options(parser)


@events.init.add_listener
def _init(environment, **_kw) -> None:
    settings = wl.Settings.from_options(environment.parsed_options)
    STATE.update(settings=settings, pool=wl.build_pool(settings), uploaded=set(), timings=wl.ServerTimings(),
                 has_safety=None, environment=environment)
    for user in (GrpoUser, MixedUser):
        user.network_timeout = user.connection_timeout = settings.request_timeout
        user.concurrency = max(10, settings.group_size)


@events.quit.add_listener
def _quit(**_kw) -> None:
    if STATE:
        wl.write_final(STATE["environment"], STATE["timings"], STATE["settings"])


class _RewardUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.settings: wl.Settings = STATE["settings"]
        self.rng = random.Random(f"{self.settings.seed}:{type(self).__name__}:{uuid.uuid4()}")
        self.headers = {"x-request-timeout-ms": str(int(self.settings.request_timeout * 1000))}
        if self.settings.api_key:
            self.headers["authorization"] = f"Bearer {self.settings.api_key}"

    # ── helpers ──

    def image(self, prompt: wl.Prompt) -> dict | str:
        """The image as this run sends it: a sha256 reference (uploaded once per process) or inline."""
        if self.settings.image_mode == "inline":
            return prompt.data_url
        if prompt.sha256 not in STATE["uploaded"]:
            self.upload(prompt)
        return {"sha256": prompt.sha256}

    def upload(self, prompt: wl.Prompt) -> None:
        headers = {**self.headers, "content-type": "image/png"}
        with self.client.post("/v1/images", data=prompt.png, headers=headers, name="/v1/images",
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif response.json().get("sha256") != prompt.sha256:
                response.failure("server sha256 differs from the client's")
            else:
                STATE["uploaded"].add(prompt.sha256)

    def post(self, path: str, body: dict, name: str, prompt: wl.Prompt | None = None,
             headers: dict[str, str] | None = None) -> dict | None:
        headers = {**self.headers, **(headers or {})}
        with self.client.post(path, json=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code == 200:
                STATE["timings"].add(name, response.headers.get("x-queue-time-ms"),
                                     response.headers.get("x-inference-time-ms"))
                return response.json()
            if prompt is not None and "image_not_found" in (response.text or ""):  # evicted: upload again
                STATE["uploaded"].discard(prompt.sha256)
            response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
            return None

    def score_one(self, prompt: wl.Prompt, response: str, name: str, group: str | None = None) -> None:
        item = {"prompt": prompt.question, "images": [self.image(prompt)], "response": response}
        # The group id routes (what rmserve-client sends); the server finds the shared prompt by itself.
        self.post("/v1/score", {"items": [item]}, name, prompt, headers={"x-rmserve-group": group} if group else None)


class GrpoUser(_RewardUser):
    """A GRPO rollout worker: G responses to one prompt + image, each its own request, all at once."""

    weight = 3

    @task
    def group(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        texts = wl.responses(prompt, self.settings.group_size, self.rng, self.settings.max_response_words)
        self.image(prompt)  # upload (once) before the G requests race for it
        group_id = uuid.uuid4().hex[:12]
        pool = Group()
        for text in texts:
            pool.spawn(self.score_one, prompt, text, "/v1/score [grpo]", group_id)
        pool.join()


class MixedUser(_RewardUser):
    """Single-sample scores, pairwise compares and (with a safety head) safety checks, 6 : 2 : 1."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        if STATE["has_safety"] is None:
            with self.client.get("/v1/models", headers=self.headers, name="/v1/models",
                                 catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                    STATE["has_safety"] = False
                else:
                    default = next((m for m in response.json()["data"] if m.get("default")), None)
                    STATE["has_safety"] = bool(default and "safety" in default["heads"])
        self.ops = [(self.score, 6), (self.compare, 2)] + ([(self.safety, 1)] if STATE["has_safety"] else [])

    @task
    def mixed(self) -> None:
        ops, weights = zip(*self.ops, strict=True)
        self.rng.choices(ops, weights)[0]()

    def score(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        self.score_one(prompt, wl.responses(prompt, 1, self.rng, self.settings.max_response_words)[0], "/v1/score")

    def compare(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        a, b = wl.responses(prompt, 2, self.rng, self.settings.max_response_words)
        body = {"prompt": prompt.question, "images": [self.image(prompt)], "response_a": a, "response_b": b}
        self.post("/v1/compare", body, "/v1/compare", prompt)

    def safety(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        text = wl.responses(prompt, 1, self.rng, self.settings.max_response_words)[0]
        item = {"prompt": prompt.question, "images": [self.image(prompt)], "response": text}
        self.post("/v1/safety", {"items": [item]}, "/v1/safety", prompt)
