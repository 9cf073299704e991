"""Locust load for rmserve's gRPC API (rmserve.v1.RewardService), same workloads as the REST file.

    locust -f load/locustfile_grpc.py --host grpc://127.0.0.1:50051 --headless -u 8 -r 4 -t 60s
    locust -f load/locustfile_grpc.py --host grpcs://rm.example.com:443 --api-key "$KEY"

A custom locust ``User`` calls the generated stubs (``rmserve_client.proto``) through grpcio,
made cooperative with gevent, and reports every call as a locust request event (type ``grpc``):
``Score [grpo]``, ``UploadImage``, ``Score``, ``Compare``, ``Safety``. Any non-OK status is a
failure. Safety runs only when the server's default model has a safety head (one probe call).
"""

from __future__ import annotations

import random
import time
import uuid
from urllib.parse import urlsplit

import grpc
import grpc.experimental.gevent as grpc_gevent
import rm_workload as wl
from gevent.pool import Group
from locust import User, constant, events, task

grpc_gevent.init_gevent()  # before any channel exists: grpcio's I/O must yield to other users

from rmserve_client.proto import reward_pb2 as pb  # noqa: E402
from rmserve_client.proto import reward_pb2_grpc as pb_grpc  # noqa: E402

STATE: dict = {}  # per process: settings, pool, uploaded sha256s, timings, has_safety
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    wl.add_options(parser)


@events.init.add_listener
def _init(environment, **_kw) -> None:
    settings = wl.Settings.from_options(environment.parsed_options)
    STATE.update(settings=settings, pool=wl.build_pool(settings), uploaded=set(), timings=wl.ServerTimings(),
                 has_safety=None, environment=environment)


@events.quit.add_listener
def _quit(**_kw) -> None:
    if STATE:
        wl.write_final(STATE["environment"], STATE["timings"], STATE["settings"])


def channel_for(host: str) -> grpc.Channel:
    """``grpc://host:port`` (plaintext), ``grpcs://host:port`` (TLS) or a bare ``host:port``."""
    parts = urlsplit(host if "://" in host else f"grpc://{host}")
    if not parts.hostname:
        raise ValueError(f"no host in {host!r}; use --host grpc://HOST:PORT")
    target = f"{parts.hostname}:{parts.port or 50051}"
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    if parts.scheme == "grpcs":
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


class GrpcUser(User):
    """A locust user with a RewardService stub; ``call`` reports each RPC to locust."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.settings: wl.Settings = STATE["settings"]
        self.rng = random.Random(f"{self.settings.seed}:{type(self).__name__}:{uuid.uuid4()}")
        self.channel = channel_for(self.host or "grpc://127.0.0.1:50051")
        self.stub = pb_grpc.RewardServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {self.settings.api_key}"),) if self.settings.api_key else ()

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, method: str, request, name: str, prompt: wl.Prompt | None = None, *, report: bool = True,
             group: str | None = None):
        """Run one unary RPC; returns the response or None (the failure is reported to locust). ``group``: the
        GRPO group id, sent as x-rmserve-group metadata (what rmserve-client sends; it routes, nothing else)."""
        start = time.perf_counter()
        response, exception, size = None, None, 0
        metadata = self.metadata + ((("x-rmserve-group", group),) if group else ())
        try:
            response, call = getattr(self.stub, method).with_call(
                request, timeout=self.settings.request_timeout, metadata=metadata
            )
            size = response.ByteSize()
            trailing = dict(call.trailing_metadata() or ())
            STATE["timings"].add(name, trailing.get("x-queue-time-ms"), trailing.get("x-inference-time-ms"))
        except grpc.RpcError as error:
            exception = error
            code = dict(error.trailing_metadata() or ()).get("rmserve-error-code")
            if prompt is not None and code == "image_not_found":  # evicted: upload again next time
                STATE["uploaded"].discard(prompt.sha256)
        if report:
            self.environment.events.request.fire(
                request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000,
                response_length=size, exception=exception, context={},
            )
        return response if exception is None else (None if report else exception)

    def image(self, prompt: wl.Prompt) -> pb.Image:
        if self.settings.image_mode == "inline":
            return pb.Image(data=prompt.png)
        if prompt.sha256 not in STATE["uploaded"]:
            uploaded = self.call("UploadImage", pb.UploadImageRequest(data=prompt.png), "UploadImage")
            if uploaded is not None and uploaded.sha256 == prompt.sha256:
                STATE["uploaded"].add(prompt.sha256)
        return pb.Image(sha256=prompt.sha256)

    def score_one(self, prompt: wl.Prompt, response: str, name: str, group: str | None = None) -> None:
        item = pb.ScoreItem(prompt=prompt.question, images=[self.image(prompt)], response=response)
        self.call("Score", pb.ScoreRequest(items=[item]), name, prompt, group=group)


class GrpoUser(GrpcUser):
    """A GRPO rollout worker: G responses to one prompt + image, each its own Score call, all at once."""

    weight = 3

    @task
    def group(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        texts = wl.responses(prompt, self.settings.group_size, self.rng, self.settings.max_response_words)
        self.image(prompt)
        group_id = uuid.uuid4().hex[:12]
        pool = Group()
        for text in texts:
            pool.spawn(self.score_one, prompt, text, "Score [grpo]", group_id)
        pool.join()


class MixedUser(GrpcUser):
    """Single-sample Score, Compare and (with a safety head) Safety calls, 6 : 2 : 1."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        if STATE["has_safety"] is None:  # gRPC has no model list: one unreported probe call
            prompt = STATE["pool"][0]
            probe = pb.SafetyRequest(items=[pb.SafetyItem(prompt=prompt.question, response="probe",
                                                          images=[pb.Image(data=prompt.png)])])
            result = self.call("Safety", probe, "Safety", report=False)
            STATE["has_safety"] = isinstance(result, pb.SafetyResponse)
        self.ops = [(self.score, 6), (self.compare, 2)] + ([(self.safety, 1)] if STATE["has_safety"] else [])

    @task
    def mixed(self) -> None:
        ops, weights = zip(*self.ops, strict=True)
        self.rng.choices(ops, weights)[0]()

    def score(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        self.score_one(prompt, wl.responses(prompt, 1, self.rng, self.settings.max_response_words)[0], "Score")

    def compare(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        a, b = wl.responses(prompt, 2, self.rng, self.settings.max_response_words)
        request = pb.CompareRequest(prompt=prompt.question, images=[self.image(prompt)], response_a=a, response_b=b)
        self.call("Compare", request, "Compare", prompt)

    def safety(self) -> None:
        prompt = self.rng.choice(STATE["pool"])
        text = wl.responses(prompt, 1, self.rng, self.settings.max_response_words)[0]
        item = pb.SafetyItem(prompt=prompt.question, images=[self.image(prompt)], response=text)
        self.call("Safety", pb.SafetyRequest(items=[item]), "Safety", prompt)
