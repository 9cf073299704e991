"""API keys: several keys (flag, env, file), constant-time checks, and no endpoint left open by accident.

The two walks are the point: every route in the FastAPI route table and every method of every
gRPC service the server lists (by reflection, read from the descriptors it returns) is called
without a key and with a wrong one; only /healthz, /readyz, /metrics and grpc.health.v1.Health may
answer. An endpoint or service added later is walked too.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rmserve import errors
from rmserve.config import ServerConfig, load_config
from rmserve.server import middleware
from rmserve.server.middleware import OPEN_PATHS, api_key_matches
from tests.grpc_serving import served
from tests.serving import asgi_client, make_app

KEYS_FILE = """\
# rotated 2025-01: both keys accepted until the old one is dropped
key-one-0123456789
  key-two-abcdef   # the CI runner

"""
OPEN_SERVICES = {"grpc.health.v1.Health"}


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(KEYS_FILE)
    return str(path)


def test_keys_come_from_the_flag_the_env_and_a_file(keys_file, tmp_path):
    assert ServerConfig(api_key_file=keys_file).api_keys() == ["key-one-0123456789", "key-two-abcdef"]
    assert ServerConfig(api_key="a, b", api_key_file=keys_file).api_keys()[:2] == ["a", "b"]
    config = load_config(env={"RMSERVE_API_KEY_FILE": keys_file, "RMSERVE_API_KEY": "c"})
    assert config.api_keys() == ["c", "key-one-0123456789", "key-two-abcdef"]
    assert ServerConfig().api_keys() == [] and ServerConfig(api_key=" ").api_keys() == []
    empty = tmp_path / "empty.txt"
    empty.write_text("# only comments\n\n")
    with pytest.raises(ValueError, match="holds no key"):
        ServerConfig(api_key_file=str(empty))
    with pytest.raises(ValueError, match="cannot read"):
        ServerConfig(api_key_file=str(tmp_path / "missing.txt"))


def test_key_check_compares_with_every_key_without_early_exit(monkeypatch):
    calls = []
    real = middleware.hmac.compare_digest

    def counting(a, b):
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", counting)
    keys = ["first", "second-key", "third-key-longer"]
    assert api_key_matches("Bearer first", keys)
    assert len(calls) == 3 and set(calls) == {32}  # every key, as fixed-length digests
    assert api_key_matches("third-key-longer", keys)  # the bare key (x-api-key) works too
    assert api_key_matches("bearer   second-key  ", keys)
    for wrong in (None, "", "Bearer", "Bearer firs", "Bearer firstt", "first\x00", "Basic Zmlyc3Q="):
        assert not api_key_matches(wrong, keys), wrong
    assert not api_key_matches("Bearer anything", [])


def _routes(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route: API routes, docs, included routers and mounts, anything added later."""
    out = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            out += _routes(included.routes, prefix + route.include_context.prefix)
            continue
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path is not None and methods is None and hasattr(route, "routes"):  # a Mount
            out += _routes(route.routes, prefix + path)
            continue
        assert path and methods, f"a route of an unexpected kind: {route!r}; teach this walk about it"
        out += [(method, prefix + path) for method in sorted(methods)]
    return out


async def test_every_rest_route_but_health_and_metrics_needs_a_key(keys_file):
    app = make_app(api_key_file=keys_file)
    routes = _routes(app.routes)
    assert {path for _, path in routes} >= {"/v1/score", "/get_reward", "/docs", "/openapi.json", "/healthz"}
    open_seen = set()
    async with asgi_client(app, ready=True) as client:
        for method, path in routes:
            refusals = [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"},
                        {"authorization": "key-one-0123456789x"}]
            for headers in refusals:
                r = await client.request(method, path, headers=headers)
                if path in OPEN_PATHS:
                    assert r.status_code != 401, (method, path)
                    open_seen.add(path)
                else:
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    if method != "HEAD":  # no body
                        error = r.json()["error"]
                        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
                    assert r.headers["www-authenticate"] == "Bearer" and r.headers["x-request-id"]
            for headers in ({"authorization": "Bearer key-two-abcdef"}, {"x-api-key": "key-one-0123456789"}):
                r = await client.request(method, path, headers=headers)
                assert r.status_code != 401, (method, path)
        assert (await client.get("/no/such/path")).status_code == 401  # no key: not even a 404
    assert open_seen == set(OPEN_PATHS) == {"/healthz", "/readyz", "/metrics"}


def _reflect(channel: grpc.Channel, metadata) -> descriptor_pool.DescriptorPool:
    """The services the server lists, with their descriptors, read by reflection (with a key)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**request):
        (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]),
                                             metadata=metadata, timeout=10)
        return reply

    names = [s.name for s in ask(list_services="").list_services_response.service]
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for name in names:
        for raw in ask(file_containing_symbol=name).file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if proto.name not in added:
                pool.Add(proto)
                added.add(proto.name)
    return pool, names


def _call_empty(channel: grpc.Channel, service: str, method, metadata) -> grpc.StatusCode:
    """Call any method with an empty request (valid for every message type), read one reply at most."""
    path = f"/{service}/{method.name}"
    kwargs = {"request_serializer": None, "response_deserializer": None}
    try:
        if method.client_streaming:
            call = channel.stream_stream(path, **kwargs)(iter([b""]), metadata=metadata, timeout=5)
        elif method.server_streaming:
            call = channel.unary_stream(path, **kwargs)(b"", metadata=metadata, timeout=5)
        else:
            channel.unary_unary(path, **kwargs)(b"", metadata=metadata, timeout=5)
            return grpc.StatusCode.OK
        next(iter(call), None)
        call.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def test_every_grpc_method_but_health_needs_a_key(keys_file):
    good = (("authorization", "Bearer key-two-abcdef"),)
    with served(api_key_file=keys_file) as s, s.channel() as channel:
        pool, names = _reflect(channel, good)
        assert set(names) >= {"rmserve.v1.RewardService", "grpc.health.v1.Health",
                              "grpc.reflection.v1alpha.ServerReflection"}
        walked = []
        for name in names:
            for method in pool.FindServiceByName(name).methods:
                walked.append(f"{name}/{method.name}")
                for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "key-one"),)):
                    code = _call_empty(channel, name, method, metadata)
                    if name in OPEN_SERVICES:
                        assert code != grpc.StatusCode.UNAUTHENTICATED, (name, method.name)
                    else:
                        assert code == grpc.StatusCode.UNAUTHENTICATED, (name, method.name, metadata, code)
                assert _call_empty(channel, name, method, good) != grpc.StatusCode.UNAUTHENTICATED, method.name
        assert "rmserve.v1.RewardService/ScoreStream" in walked and "grpc.health.v1.Health/Check" in walked
        # the refusal says how to fix it, and the health check answers without a key
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/rmserve.v1.RewardService/Score")(b"", timeout=5)
        assert "authorization: Bearer" in info.value.details()
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    response_deserializer=health_pb2.HealthCheckResponse.FromString)
        assert check(b"", timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        assert httpx.get(s.rest_url + "/metrics").status_code == 200


def test_refusals_on_both_transports_come_from_the_one_error_table(keys_file, monkeypatch):
    """Both API-key checks raise rmserve.errors.Unauthenticated and the error table answers it: a change to
    that class shows in the REST 401 (body, WWW-Authenticate) and in the gRPC status alike."""
    monkeypatch.setattr(errors.Unauthenticated, "error_type", "authentication_probe")
    monkeypatch.setattr(errors.Unauthenticated, "challenge", 'Bearer realm="rmserve"')
    with served(api_key_file=keys_file) as s, s.channel() as channel:
        r = httpx.post(s.rest_url + "/v1/score", json={}, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="rmserve"'
        assert r.json()["error"] == {"message": "invalid API key; send `Authorization: Bearer <key>`",
                                     "type": "authentication_probe", "param": None, "code": "invalid_api_key"}
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/rmserve.v1.RewardService/Score")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == "missing API key; send metadata `authorization: Bearer <key>`"
        meta = dict(info.value.trailing_metadata())
        assert (meta["rmserve-error-type"], meta["rmserve-error-code"]) == ("authentication_probe", "invalid_api_key")
