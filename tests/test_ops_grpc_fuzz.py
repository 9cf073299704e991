"""Hypothesis fuzzing of every RewardService RPC: random field values and random bytes, never INTERNAL/UNKNOWN.

The RPCs and their request messages come from the service descriptor, and the field strategies from
each message's descriptor (strings, bytes, numbers incl. NaN/inf and out-of-range ints, unknown enum
values, repeated and nested fields, oneofs), so a new RPC or field is fuzzed without a new test.
Default suite: 40 fixed cases per RPC on the fake model and 12 on a tiny real Qwen2.5-VL (real tokenizer
and image processor). Streaming requests (ScoreStream) send lists of such messages. Raw random bytes go through an
identity serializer, so the server's own parsing is fuzzed too. Allowed outcomes: OK or any status
but INTERNAL, UNKNOWN (a bug) and DEADLINE_EXCEEDED (a hang); per-item stream errors must not be
``internal_error`` either.
"""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rmserve_client.proto import reward_pb2 as pb

from tests.conftest import png_bytes
from tests.fakes import FakeRewardModel
from tests.grpc_serving import served

SERVICE = pb.DESCRIPTOR.services_by_name["RewardService"]
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_TIMEOUT_S = 15.0
# Default: 40 fixed cases per RPC; RMSERVE_FUZZ_EXAMPLES=400 RMSERVE_FUZZ_RANDOM=1 for a longer random hunt.
EXAMPLES = int(os.environ.get("RMSERVE_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = not os.environ.get("RMSERVE_FUZZ_RANDOM")

_F = FieldDescriptor
_INTS = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "user", "assistant", "system", "reward", "safety", "exact_match", "S1",
                     "data:image/png;base64,AAAA", "ab" * 32, "\x00", "😀" * 10]),
)
_BYTES = st.one_of(st.binary(max_size=80), st.just(png_bytes((4, 4))), st.just(b"\x89PNG\r\n\x1a\n"))


def _repeated(field: FieldDescriptor) -> bool:
    is_repeated = getattr(field, "is_repeated", None)
    return bool(is_repeated) if is_repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    kind = field.type
    if kind == _F.TYPE_MESSAGE:
        return message_values(field.message_type, depth + 1)
    if kind == _F.TYPE_STRING:
        return _TEXT
    if kind == _F.TYPE_BYTES:
        return _BYTES
    if kind == _F.TYPE_BOOL:
        return st.booleans()
    if kind == _F.TYPE_ENUM:
        return st.integers(-3, max(v.number for v in field.enum_type.values) + 3)  # unknown values too
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return st.one_of(st.floats(width=32 if kind == _F.TYPE_FLOAT else 64),
                         st.sampled_from([0.0, -1.0, 1e-300, 1e300]))
    low, high = _INTS[kind]
    return st.one_of(st.integers(low, high), st.integers(-3, 300).filter(lambda v: low <= v <= high))


def message_values(descriptor, depth: int = 0) -> st.SearchStrategy[dict]:
    """A dict of some of the message's fields (nested messages as dicts, depth-limited)."""
    optional = {}
    for field in descriptor.fields:
        if field.type == _F.TYPE_MESSAGE and depth >= 3:
            continue
        value = _scalar(field, depth)
        if field.type == _F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            optional[field.name] = st.lists(value, max_size=3)
        elif _repeated(field):
            optional[field.name] = st.lists(value, max_size=4)
        else:
            optional[field.name] = value
    return st.fixed_dictionaries({}, optional=optional)


def build(message, values: dict):
    """Fill ``message`` from ``message_values`` output (the last member of a oneof wins, as on the wire)."""
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.type == _F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for entry in value:
                key, val = entry.get("key"), entry.get("value")
                if key is not None and val is not None:
                    target[key] = val
        elif _repeated(field):
            if field.type == _F.TYPE_MESSAGE:
                for item in value:
                    build(target.add(), item)
            else:
                target.extend(value)
        elif field.type == _F.TYPE_MESSAGE:
            target.SetInParent()
            build(target, value)
        else:
            setattr(message, name, value)
    return message


# Valid requests that random fields are laid over, so the success paths get fuzzed too.
_ITEM = {"prompt": "What is shown?", "response": "A red square."}
TEMPLATES = {
    "rmserve.v1.ScoreRequest": {"items": [_ITEM]},
    "rmserve.v1.ScoreItem": _ITEM,
    "rmserve.v1.CompareRequest": {"prompt": "2+2?", "response_a": "4", "response_b": "5"},
    "rmserve.v1.RankRequest": {"prompt": "2+2?", "responses": ["4", "5", "four"]},
    "rmserve.v1.CritiqueRequest": {"prompt": "2+2?", "response": "4"},
    "rmserve.v1.SafetyRequest": {"items": [_ITEM]},
    "rmserve.v1.UploadImageRequest": {"data": png_bytes((4, 4))},
}


def request_strategy(method) -> st.SearchStrategy[bytes | list[bytes]]:
    """Serialized request(s) for ``method``: random messages, random fields over a valid request, the valid
    request itself, or raw random bytes; a list of those for client streams."""
    cls = message_factory.GetMessageClass(method.input_type)
    template = TEMPLATES.get(method.input_type.full_name, {})
    values = message_values(method.input_type)
    one = st.one_of(
        values.map(lambda v: build(cls(), v).SerializeToString()),
        values.map(lambda v: build(build(cls(), template), v).SerializeToString()),
        st.just(build(cls(), template).SerializeToString()),
        st.binary(max_size=120),
    )
    return st.lists(one, max_size=5) if method.client_streaming else one


@pytest.fixture(scope="module")
def fuzz_target():
    model = FakeRewardModel(heads=("reward", "attributes", "safety"))
    with served(model, max_items_per_request=8, max_image_pixels=10_000) as s:
        channel = grpc.insecure_channel(s.grpc_target)
        yield channel
        channel.close()


@pytest.fixture(scope="module")
def real_fuzz_target():
    """A tiny real Qwen2.5-VL with reward, attribute and safety heads: the real tokenizer and image processor
    meet the fuzzed text and bytes (the fake model cannot raise what they raise)."""
    from rmserve.models import HeadSpec
    from rmserve.models.tiny import build_tiny_reward_model

    heads = {"reward": HeadSpec(kind="mlp", width=16, activation="silu"),
             "attributes": HeadSpec(kind="linear", labels=["helpfulness"]),
             "safety": HeadSpec(kind="linear", labels=["S1", "S10"])}
    model = build_tiny_reward_model("qwen2_5_vl", seed=2, heads=heads)
    with served(model, max_items_per_request=8, max_image_pixels=10_000, max_wait_ms=2.0) as s:
        channel = grpc.insecure_channel(s.grpc_target)
        yield channel
        channel.close()


def _call(channel: grpc.Channel, method, payload) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method.name}"
    response_type = message_factory.GetMessageClass(method.output_type)
    kwargs = {"request_serializer": None, "response_deserializer": response_type.FromString}  # bytes as given
    kind = (method.client_streaming, method.server_streaming)
    try:
        if kind == (False, False):
            channel.unary_unary(path, **kwargs)(payload, timeout=CALL_TIMEOUT_S)
        elif kind == (False, True):
            for _ in channel.unary_stream(path, **kwargs)(payload, timeout=CALL_TIMEOUT_S):
                pass
        elif kind == (True, True):
            for result in channel.stream_stream(path, **kwargs)(iter(payload), timeout=CALL_TIMEOUT_S):
                if result.HasField("error"):
                    assert result.error.type != "internal_error", result
        else:
            channel.stream_unary(path, **kwargs)(iter(payload), timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def fuzz(channel: grpc.Channel, method, *, examples: int, derandomize: bool) -> dict[str, int]:
    seen: dict[str, int] = {}

    @given(payload=request_strategy(method))
    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    def run(payload):
        code = _call(channel, method, payload)
        seen[code.name] = seen.get(code.name, 0) + 1
        assert code not in FORBIDDEN, f"{method.name} answered {code.name} for {payload!r}"

    run()
    assert sum(seen.values()) >= examples // 2, seen
    return seen


METHODS = pytest.mark.parametrize("method", list(SERVICE.methods), ids=[m.name for m in SERVICE.methods])


@METHODS
def test_fuzzed_requests_never_get_internal_or_unknown(fuzz_target, method):
    fuzz(fuzz_target, method, examples=EXAMPLES, derandomize=DERANDOMIZE)


@METHODS
def test_fuzzed_requests_on_the_tiny_real_model(real_fuzz_target, method):
    seen = fuzz(real_fuzz_target, method, examples=12, derandomize=True)
    assert sum(seen.values()) >= 6, seen


@pytest.mark.ops
@METHODS
def test_fuzzed_requests_random_longer_run(fuzz_target, method):
    print(method.name, fuzz(fuzz_target, method, examples=300, derandomize=False))


def test_every_rpc_is_fuzzed():
    """The parametrization above comes from the descriptor: every RPC of the service is in it."""
    expected = {"Score", "ScoreStream", "Compare", "Rank", "Critique", "Safety", "UploadImage"}
    assert {m.name for m in SERVICE.methods} >= expected
