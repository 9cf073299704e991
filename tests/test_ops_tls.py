"""TLS for both servers: a self-signed certificate (made here with `cryptography`), HTTPS and gRPC over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time

import grpc
import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rmserve_client.proto import reward_pb2 as pb
from rmserve_client.proto import reward_pb2_grpc as pb_grpc

from rmserve.config import ServerConfig
from rmserve.server import create_app
from rmserve.server.shutdown import uvicorn_config
from tests.fakes import FakeRewardModel
from tests.serving import free_port


def self_signed(tmp_path) -> tuple[str, str]:
    """(cert.pem, key.pem) for localhost and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rmserve test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_tls_needs_both_files(tmp_path):
    cert, key = self_signed(tmp_path)
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        ServerConfig(tls_cert=cert)
    with pytest.raises(ValueError, match="no such file"):
        ServerConfig(tls_cert=cert, tls_key=str(tmp_path / "nope.pem"))


def test_https_and_grpc_over_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    config = ServerConfig(port=free_port(), grpc_port=free_port(), tls_cert=cert, tls_key=key, max_wait_ms=2.0,
                          api_key="s3cret")
    app = create_app(config, model=FakeRewardModel())
    server = uvicorn.Server(uvicorn_config(app, config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 20
        while not (server.started and app.state.rmserve.ready):
            assert time.monotonic() < end and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        trust = ssl.create_default_context(cafile=cert)
        base = f"https://127.0.0.1:{config.port}"
        body = {"items": [{"prompt": "What is 2+2?", "response": "4"}]}
        with httpx.Client(verify=trust, base_url=base, headers={"authorization": "Bearer s3cret"}) as client:
            assert client.get("/readyz").status_code == 200
            rest = client.post("/v1/score", json=body)
            assert rest.status_code == 200, rest.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{config.port}/readyz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused by a verifying client
            httpx.get(base + "/readyz", timeout=5)

        credentials = grpc.ssl_channel_credentials(root_certificates=open(cert, "rb").read())
        with grpc.secure_channel(f"localhost:{config.grpc_port}", credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            request = pb.ScoreRequest(items=[pb.ScoreItem(prompt="What is 2+2?", response="4")])
            reply = pb_grpc.RewardServiceStub(channel).Score(
                request, timeout=10, metadata=(("authorization", "Bearer s3cret"),)
            )
            assert reply.items[0].reward == pytest.approx(rest.json()["items"][0]["reward"])
        with grpc.insecure_channel(f"127.0.0.1:{config.grpc_port}") as plain, pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.should_exit = True
        thread.join(timeout=20)
